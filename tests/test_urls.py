"""Passwords never printed: every URL form we may print is masked."""

import pytest

from dbctl.errors import ConfigError
from dbctl.urls import database_name, mask_url, redact, require_url


@pytest.mark.parametrize("text, expected", [
    ("postgresql://kiro:pw@db:5432/kiro", "postgresql://kiro:****@db:5432/kiro"),
    ("postgres://kiro:p%40ss@db/kiro", "postgres://kiro:****@db/kiro"),
    ("postgresql://kiro:p@ss@db/kiro", "postgresql://kiro:****@db/kiro"),  # unencoded @ in the password
    ("postgresql://kiro@db/kiro", "postgresql://kiro@db/kiro"),
    ("redis://:r3dis@redis:6379/0", "redis://:****@redis:6379/0"),
    ("failed for postgresql://a:b@h/d and redis://:c@r", "failed for postgresql://a:****@h/d and redis://:****@r"),
    ("host=db password=secret dbname=kiro", "host=db password=**** dbname=kiro"),
    ("host=db password='se cret' dbname=kiro", "host=db password=**** dbname=kiro"),
    ("postgresql://db/kiro?password=secret&sslmode=require", "postgresql://db/kiro?password=****&sslmode=require"),
])
def test_mask_url(text, expected):
    assert mask_url(text) == expected


def test_redact_removes_the_password_wherever_it_appears():
    url = "postgresql://kiro:hunter22@db/kiro"
    assert redact("auth failed: hunter22 rejected", url) == "auth failed: **** rejected"


def test_require_url_and_database_name():
    with pytest.raises(ConfigError):
        require_url("  ")
    with pytest.raises(ConfigError, match="names no database"):
        require_url("postgresql://kiro:pw@db:5432")
    assert database_name("postgresql://kiro:pw@db:5432/kiro%20dev") == "kiro dev"
    assert database_name("host=db dbname=kiro") == "kiro"
