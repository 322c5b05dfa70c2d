"""One rule per kind of URL: libpq's parser for PostgreSQL, dbctl.urls.redis_address for Redis.

Properties over generated user names, passwords, hosts and ports: a URL built
percent-encoded always reads back exactly; one built raw (a person pasting a
password as it is) reads back exactly or is refused with one line that does not
echo the password; the masker hides exactly the password the parser reads; and
every place that takes a URL apart (forwarded_url, the rendered containers run
here, password_of, database_name) agrees with libpq.
"""

from __future__ import annotations

import subprocess
from urllib.parse import quote, unquote

import pytest
from hypothesis import example, given, settings, strategies as st
from psycopg.conninfo import conninfo_to_dict

from conftest import free_port, run_dbctl, wait_for_port
from dbctl.errors import ConfigError
from dbctl import urls
from dbctl.k8s import jobs, render
from dbctl.urls import (MASK, database_name, mask_url, password_of, postgres_params, postgres_url, redis_address,
                        require_url)

TRICKY = "#?@/:%&= '\"\\[]"
secret_text = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S")) | st.sampled_from(TRICKY),
                      min_size=1, max_size=16)
user_text = st.text(alphabet=st.characters(codec="ascii", categories=("L", "N")) | st.sampled_from("._-#?@:%"),
                    min_size=1, max_size=10)
hostname = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)
host = hostname | st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(str)
port = st.integers(1, 65535)


@pytest.fixture(autouse=True)
def forget_urls():
    """Each generated URL is remembered for masking by value; forget them between examples."""
    yield
    urls._remembered.clear()


def assert_masked_at_the_parsed_span(url: str, password: str, after: str) -> None:
    """The masker hides exactly what the parser reads as the password (and, by value, maybe more: never less)."""
    masked = mask_url(url)
    assert masked.endswith(f":{MASK}@{after}") and f":{password}@" not in masked, (url, masked)


def url_host(h: str) -> str:
    return f"[{h}]" if ":" in h else h


# ---------------------------------------------------------------- Redis

@settings(max_examples=150, deadline=None)
@given(user=st.none() | user_text, password=secret_text, h=host, p=port, db=st.integers(0, 15))
@example(user=None, password="12#ab", h="redis", p=6379, db=0)  # read as host "" port 12 before
@example(user=None, password="6380?x", h="unreachable.invalid", p=6379, db=0)
def test_redis_urls_read_back_exactly_or_are_refused(user, password, h, p, db):
    urls._remembered.clear()
    encoded = f"redis://{quote(user or '', safe='')}:{quote(password, safe='')}@{url_host(h)}:{p}/{db}"
    parsed = redis_address(encoded)
    assert (parsed.user, parsed.password, parsed.host, parsed.port, parsed.db) == (user, password, h, p, db)
    assert_masked_at_the_parsed_span(encoded, quote(password, safe=""), f"{url_host(h)}:{p}/{db}")

    if user and ":" in user:
        return  # user:password splits at the first colon (RFC 3986): a raw one in the user cannot be told apart
    raw = f"redis://{user or ''}:{password}@{url_host(h)}:{p}/{db}"
    try:
        parsed = redis_address(raw)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and f":{password}@" not in message
        if len(password) >= 4 and password not in (user or ""):  # the user name is shown; it is no secret
            assert password not in message.replace(f"{url_host(h)}:{p}", "")
        return
    # Accepted: exactly what was written (a %XX in it is an encoding, by the rule), and masked at that span.
    assert (parsed.user, parsed.password, parsed.host, parsed.port) == (unquote(user) if user else None,
                                                                        unquote(password), h, p)
    assert_masked_at_the_parsed_span(raw, password, f"{url_host(h)}:{p}/{db}")


@pytest.mark.parametrize("url", ["redis://:12#ab@redis:6379", "redis://:6380?x@redis", "redis://u:p/w@h",
                                 "redis://u@x:pw@h", "redis://[::1", "redis://h:٣", "redis://h:6379/0/1",
                                 "redis://:p%zz@h", "redis://a,b:6379"])
def test_ambiguous_redis_urls_are_refused_by_wait_without_echoing_them(url):
    result = run_dbctl("wait", "--no-postgres", "--timeout", "1", "--redis-url", url)
    assert result.code == 2, result.output
    errors = [line for line in result.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert "12#ab" not in result.output and "6380?x" not in result.output


def test_wait_with_a_hash_in_the_redis_password_pings_the_right_server():
    """The encoded form reaches the real server (password with # ? @); the raw form is refused, never 'ready'."""
    if not subprocess.run(["which", "redis-server"], capture_output=True).returncode == 0:
        pytest.skip("redis-server is not installed")
    password = "12#a?b@c"
    redis_port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--requirepass", password],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(redis_port)
        good = run_dbctl("wait", "--no-postgres", "--timeout", "10", "--redis-url",
                         f"redis://:{quote(password, safe='')}@127.0.0.1:{redis_port}/0")
        assert good.code == 0 and "Redis is ready" in good.out, good.output
        raw = run_dbctl("wait", "--no-postgres", "--timeout", "1", "--redis-url",
                        f"redis://:{password}@127.0.0.1:{redis_port}/0")
        assert raw.code == 2 and "ready" not in raw.out and password not in raw.output, raw.output
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------- PostgreSQL: libpq is the parser

@settings(max_examples=150, deadline=None)
@given(user=user_text, password=secret_text, h=hostname | st.ip_addresses(v=4).map(str), p=port,
       dbname=st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N")) | st.sampled_from(" #?%-_"),
                      min_size=1, max_size=12))
@example(user="kiro", password="12#ab", h="postgres", p=5432, dbname="kiro")
def test_postgres_urls_every_reader_agrees_with_libpq(user, password, h, p, dbname):
    urls._remembered.clear()
    encoded = f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{h}:{p}/{quote(dbname, safe='')}"
    require_url(encoded)
    expected = {"user": user, "password": password, "host": h, "port": str(p), "dbname": dbname}
    assert postgres_params(encoded) == conninfo_to_dict(encoded) == expected
    assert postgres_url(expected) == encoded  # the builder is the parser's inverse
    assert password_of(encoded) == password and database_name(encoded) == dbname
    forwarded = jobs.forwarded_url(encoded, 15432)
    assert conninfo_to_dict(forwarded) == {**expected, "host": "127.0.0.1", "port": "15432"}
    masked = mask_url(forwarded)
    assert f":{MASK}@127.0.0.1:15432/" in masked and f":{quote(password, safe='')}@" not in masked

    raw = f"postgresql://{user}:{password}@{h}:{p}/{quote(dbname, safe='')}"
    try:
        require_url(raw)
        libpq = conninfo_to_dict(raw)
    except ConfigError as exc:
        assert f":{password}@" not in str(exc)
        return
    except Exception:  # libpq itself refuses it (a bad %): dbctl's readers refuse it too
        with pytest.raises(ConfigError):
            postgres_params(raw)
        return
    assert postgres_params(raw) == libpq and password_of(raw) == libpq.get("password")
    assert conninfo_to_dict(jobs.forwarded_url(raw, 15432)) == {**libpq, "host": "127.0.0.1", "port": "15432"}
    if libpq.get("password"):  # by position, and by value maybe more (a user name equal to it): never less
        assert MASK in mask_url(raw) and f":{libpq['password']}@" not in mask_url(raw)


def test_the_rendered_containers_run_here_get_user_and_database_as_libpq_reads_them(tmp_path):
    url = "postgresql://kiro:12%23x%3F@127.0.0.1:5432/kiro%20dev?sslmode=disable"
    raw = "postgresql://kiro:12#x?@127.0.0.1:5432/kiro%20dev?sslmode=disable"
    for database_url in (url, raw):
        _, env = render.local_command("database-migration", "migrate", database_url=database_url, app_dir=tmp_path)
        assert env["DATABASE_URL"] == database_url
        if "PGPASSWORD" in env:
            assert env["PGPASSWORD"] == conninfo_to_dict(database_url)["password"]
