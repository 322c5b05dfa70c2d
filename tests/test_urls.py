"""Passwords never printed: every URL and connection-string form we may print is masked.

Examples first, then properties (hypothesis): generated passwords of any
printable characters (`@ : / # ? %`, spaces, quotes, backslashes, unicode),
in URLs written raw and percent-encoded, in libpq key=value strings, in URL
query strings, alone and inside longer messages; then the real `dbctl` given
such URLs, in-process for many of them and as a subprocess for a few.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from conftest import free_port, run_dbctl, run_main
from dbctl import urls
from dbctl.errors import ConfigError
from dbctl.urls import MASK, database_name, mask_url, password_of, redact, require_url

# ---------------------------------------------------------------- examples


@pytest.fixture(autouse=True)
def forget_urls():
    """require_url remembers the URLs it accepted, for masking by value; each test starts afresh."""
    urls._remembered.clear()
    yield
    urls._remembered.clear()


@pytest.mark.parametrize("text, expected", [
    ("postgresql://kiro:pw@db:5432/kiro", "postgresql://kiro:****@db:5432/kiro"),
    ("postgres://kiro:p%40ss@db/kiro", "postgres://kiro:****@db/kiro"),
    ("postgresql://kiro:p@ss@db/kiro", "postgresql://kiro:****@db/kiro"),  # unencoded @ in the password
    ("postgresql://kiro:pa/ss@db/kiro", "postgresql://kiro:****@db/kiro"),  # unencoded /
    ("postgresql://kiro:a#b?c@db/kiro", "postgresql://kiro:****@db/kiro"),  # unencoded # and ?
    ("postgresql://kiro:se cret@db/kiro", "postgresql://kiro:****@db/kiro"),  # a space, the URL alone
    ("kiro:pw@db:5432/kiro", "kiro:****@db:5432/kiro"),  # no scheme
    ("postgresql://kiro@db/kiro", "postgresql://kiro@db/kiro"),
    ("redis://:r3dis@redis:6379/0", "redis://:****@redis:6379/0"),
    ("rediss://default:r3dis@redis:6380", "rediss://default:****@redis:6380"),
    ("failed for postgresql://a:b@h/d and redis://:c@r", "failed for postgresql://a:****@h/d and redis://:****@r"),
    ("connecting to kiro:hunter2@db/kiro failed", "connecting to kiro:****@db/kiro failed"),
    ("host=db password=secret dbname=kiro", "host=db password=**** dbname=kiro"),
    ("host=db password='se cret' dbname=kiro", "host=db password=**** dbname=kiro"),
    ("host=db password = 'it\\'s' dbname=kiro", "host=db password = **** dbname=kiro"),
    ("host=db password=se\\ cret dbname=kiro", "host=db password=**** dbname=kiro"),
    ("host=db sslpassword=k3y dbname=kiro", "host=db sslpassword=**** dbname=kiro"),
    ("postgresql://db/kiro?password=secret&sslmode=require", "postgresql://db/kiro?password=****&sslmode=require"),
    ("user@example.com wrote: ok", "user@example.com wrote: ok"),
    ("database is up to date at version 8; nothing to apply", "database is up to date at version 8; nothing to apply"),
])
def test_mask_url(text, expected):
    assert mask_url(text) == expected


def test_redact_removes_the_password_wherever_it_appears():
    url = "postgresql://kiro:hunter22@db/kiro"
    assert redact("auth failed: hunter22 rejected", url) == "auth failed: **** rejected"


def test_a_driver_error_echoing_part_of_a_keyword_string_is_masked_by_libpqs_reading():
    conninfo = "host=db password='se cret-99' dbname=kiro"
    assert mask_url('password authentication failed; tried "se cret-99"', conninfo) == \
        'password authentication failed; tried "****"'


def test_a_password_that_equals_the_user_name_is_masked_by_position_only():
    url = "postgresql://kiro:kiro@127.0.0.1:55432/kiro"  # `dbctl local`: every name is kiro
    assert mask_url(url) == "postgresql://kiro:****@127.0.0.1:55432/kiro"


def test_require_url_and_database_name():
    with pytest.raises(ConfigError):
        require_url("  ")
    with pytest.raises(ConfigError, match="names no database"):
        require_url("postgresql://kiro:pw@db:5432")
    assert database_name("postgresql://kiro:pw@db:5432/kiro%20dev") == "kiro dev"
    assert database_name("host=db dbname=kiro") == "kiro"
    assert database_name("host=db dbname='kiro dev'") == "kiro dev"


@pytest.mark.parametrize("url, fragment", [
    ("postgresql://kiro:p@ss-word@db/kiro", '"@" as %40'),
    ("postgresql://kiro:pa/ss-word@db/kiro", '"/" as %2F'),
    ("postgresql://kiro:se cret-word@db/kiro", '" " as %20'),
    ("postgresql://kiro:100%-word@db/kiro", "%25"),
    ("postgresql://kiro:pw@db:notaport/kiro", 'port "notaport"'),
    ("postgresql://kiro:pw@db:99999/kiro", 'port "99999"'),
    ("kiro:pass-word@db/kiro", "no scheme"),
    ("host=db password=se cret-word dbname=kiro", "quote values with spaces"),
    ("host=db password=pass-word", "no dbname="),
    ("mysql://root:pass-word@db/kiro", 'scheme "mysql"'),
    ("postgresql://kiro:pass\x00word@db/kiro", "NUL"),
])
def test_require_url_refuses_what_libpq_would_misread_without_echoing_the_password(url, fragment):
    with pytest.raises(ConfigError) as caught:
        require_url(url)
    message = str(caught.value)
    assert fragment in message
    for secret in ("p@ss-word", "pa/ss-word", "se cret-word", "100%-word", "pass-word", "pass\x00word", "ss-word",
                   "cret-word"):
        assert secret not in message


# ---------------------------------------------------------------- properties

PRINTABLE = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))
SPECIAL = st.sampled_from(list("@:/#?%&=' \\\""))
PIECES = st.lists(st.one_of(PRINTABLE, SPECIAL, st.sampled_from(["://", "%40", "password=", "@db/"])),
                  min_size=1, max_size=16)
PASSWORDS = PIECES.map("".join)
USERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,11}", fullmatch=True)
HOSTS = st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,12}(\.[a-z]{2,5})?", fullmatch=True),
                  st.sampled_from(["127.0.0.1", "[::1]", "db.kiro-dev.svc.cluster.local"]))
DATABASES = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
SCHEMES = st.sampled_from(["postgresql", "postgres", "redis", "rediss"])
# Words around a URL in a message (no URL or key=value syntax of their own).
WORDS = st.text(st.sampled_from(list("abcdefghijklmnopqrstuvwxyz ABC.,;!()-0123456789")), max_size=30)
PROPERTY = settings(max_examples=200, deadline=None, report_multiple_bugs=False,
                    suppress_health_check=[HealthCheck.too_slow])


def assert_hidden(output: str, password: str, public: str) -> None:
    """The password, raw or percent-encoded, is not in `output` (unless it is part of the public text)."""
    for form in {password, quote(password, safe=""), quote(password)}:
        if form in public or form in MASK:
            continue
        assert form not in output, (form, output)


def libpq_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@PROPERTY
@given(scheme=SCHEMES, user=USERS, password=PASSWORDS, host=HOSTS, db=DATABASES, before=WORDS, after=WORDS)
def test_a_percent_encoded_url_is_masked_exactly_alone_and_in_a_message(scheme, user, password, host, db, before,
                                                                          after):
    url = f"{scheme}://{user}:{quote(password, safe='')}@{host}:5432/{db}"
    masked = f"{scheme}://{user}:{MASK}@{host}:5432/{db}"
    assert mask_url(url) == masked
    assert mask_url(f"{before} {url} {after}") == f"{before} {masked} {after}"


@PROPERTY
@given(user=USERS, password=PASSWORDS, host=HOSTS, db=DATABASES)
@example(user="kiro", password="p@ss:w/rd#?", host="db", db="kiro")
def test_we_read_a_percent_encoded_url_as_libpq_does(user, password, host, db):
    url = f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:5432/{quote(db, safe='')}"
    libpq = conninfo_to_dict(url)
    assert password_of(url) == libpq["password"] == password
    assert database_name(url) == libpq["dbname"] == db
    assert require_url(url) == url
    urls._remembered.clear()  # require_url remembers every URL: keep examples independent


@PROPERTY
@given(scheme=SCHEMES, user=USERS, password=PASSWORDS, host=HOSTS, db=DATABASES, before=WORDS, after=WORDS)
@example(scheme="postgresql", user="kiro", password="p@ss", host="db", db="kiro", before="", after="")
@example(scheme="postgresql", user="kiro", password="a b/c@d#e?f", host="db", db="kiro", before="at", after="x")
def test_a_raw_password_is_never_printed(scheme, user, password, host, db, before, after):
    """Not percent-encoded: raw @ : / # ? % and spaces. Alone, in a message with the URL known, and
    (without spaces, which end a URL in running text) in a message by position alone."""
    assume("\n" not in password)
    url = f"{scheme}://{user}:{password}@{host}/{db}"
    public = " ".join([f"{scheme}://{user}:{MASK}@{host}/{db}", before, after])
    assert_hidden(mask_url(url), password, public)
    message = f"{before} could not connect to {url}: {after}"
    skeleton = public + " could not connect to : "  # the message's own words (a password ': ' is in them)
    assert_hidden(mask_url(message, url), password, skeleton)
    if not any(c.isspace() for c in password):
        assert_hidden(mask_url(message), password, skeleton)


@PROPERTY
@given(password=PASSWORDS, host=HOSTS, db=DATABASES, before=WORDS, after=WORDS,
       key=st.sampled_from(["password", "sslpassword"]))
def test_a_keyword_connection_string_is_masked_as_libpq_reads_it(password, host, db, before, after, key):
    conninfo = f"host={host} {key}={libpq_quoted(password)} dbname={db}"
    assert conninfo_to_dict(conninfo)[key] == password  # the string is what libpq reads as that password
    public = " ".join([f"host={host} {key}={MASK} dbname={db}", before, after, f'"{MASK}"'])
    assert_hidden(mask_url(conninfo), password, public)
    assert_hidden(mask_url(f"{before} {conninfo} {after}"), password, public)
    if len(password) >= urls.MIN_VALUE_MASK:  # a driver error that echoes the password without its key=
        assert_hidden(mask_url(f'{before} "{password}" {after}', conninfo), password, public)


@PROPERTY
@given(password=PASSWORDS, host=HOSTS, db=DATABASES, before=WORDS)
def test_a_query_string_password_is_masked(password, host, db, before):
    url = f"postgresql://{host}/{db}?sslmode=require&password={quote(password, safe='')}&connect_timeout=5"
    masked = f"postgresql://{host}/{db}?sslmode=require&password={MASK}&connect_timeout=5"
    assert mask_url(url) == masked
    assert mask_url(f"{before} {url}") == f"{before} {masked}"
    assert password_of(url) == conninfo_to_dict(url)["password"] == password


@PROPERTY
@given(password=PASSWORDS.filter(lambda p: len(p) >= urls.MIN_VALUE_MASK and p.strip() == p), before=WORDS)
def test_a_url_dbctl_was_given_is_masked_by_value_in_any_later_line(password, before):
    url = f"postgresql://kiro:{quote(password, safe='')}@db/kiro"
    urls.remember(url)
    try:
        assume(password not in before + "echo:" + mask_url(url))  # visible in the URL as printed anyway
        assert password not in mask_url(f"{before} echo: {password} {before}")
    finally:
        urls._remembered.discard(url)


# ---------------------------------------------------------------- the real dbctl


CLOSED_PORT = free_port()


@settings(max_examples=60, deadline=None, report_multiple_bugs=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(user=USERS, password=PASSWORDS.filter(lambda p: len(p) >= 3), db=DATABASES,
       encoded=st.booleans(), command=st.sampled_from(["status", "migrate", "verify", "seed"]))
def test_dbctl_never_prints_a_password_it_was_given(user, password, db, encoded, command, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    urls._remembered.clear()
    secret = quote(password, safe="") if encoded else password
    url = f"postgresql://{user}:{secret}@127.0.0.1:{CLOSED_PORT}/{db}"
    args = [command, "--database-url", url]
    if command == "migrate":
        args += ["--dry-run", "--wait-timeout", "0"]
    result = run_main(*args)
    code, output = result.code, result.output
    assert code in (1, 2), output
    assert "Traceback" not in output and "unexpected" not in output, output
    assert [line for line in output.splitlines() if line.startswith("Error:")], output
    assert_hidden(output, password, f"postgresql://{user}:{MASK}@127.0.0.1:{CLOSED_PORT}/{db} {command} Error:")


@pytest.mark.parametrize("url", [
    f"postgresql://kiro:p@ss:w/rd-1@127.0.0.1:{CLOSED_PORT}/kiro",
    f"postgres://kiro:p%40ss%3Aw%2Frd-1@127.0.0.1:{CLOSED_PORT}/kiro",
    f"postgresql://kiro:se cret-1@127.0.0.1:{CLOSED_PORT}/kiro",
    f"kiro:pass-word-1@127.0.0.1:{CLOSED_PORT}/kiro",
    f"host=127.0.0.1 port={CLOSED_PORT} password='se cret-1' dbname=kiro",
    f"host=127.0.0.1 port={CLOSED_PORT} password=se cret-1 dbname=kiro",
    f"postgresql://127.0.0.1:{CLOSED_PORT}/kiro?password=pass-word-1",
    "postgresql://kiro:pass-word-1@no-such-host.invalid/kiro",
])
@pytest.mark.parametrize("command", [["status"], ["migrate", "--dry-run", "--wait-timeout", "0"]])
def test_dbctl_subprocess_never_prints_the_password(url, command):
    result = run_dbctl(*command, env={"DATABASE_URL": url})
    assert result.code in (1, 2), result.output
    assert "Traceback" not in result.output and "unexpected" not in result.output, result.output
    for secret in ("p@ss:w/rd-1", "p%40ss%3Aw%2Frd-1", "se cret-1", "cret-1", "pass-word-1", "w/rd-1"):
        assert secret not in result.output, result.output


def test_a_redis_url_password_is_never_printed():
    result = run_dbctl("wait", "--no-postgres", "--timeout", "1",
                       "--redis-url", f"redis://:r3dis-pw@127.0.0.1:{CLOSED_PORT}/0")
    assert result.code == 1 and "r3dis-pw" not in result.output and "redis://:****@127.0.0.1" in result.err
    malformed = run_dbctl("wait", "--no-postgres", "--timeout", "1", "--redis-url", "redis://:r3dis-pw@host:port/0")
    assert malformed.code == 2 and "r3dis-pw" not in malformed.output, malformed.output
    assert "unexpected" not in malformed.output


def test_pgpassword_is_masked_by_value(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-the-env-1")
    assert mask_url("libpq said: from-the-env-1 was wrong") == "libpq said: **** was wrong"
