"""Database URLs: where they come from and how they are printed (never with the password).

`mask_url` is the one function every printed line goes through. It hides a
password three ways:

- by position: the password of every URL (`postgresql://`, `postgres://`,
  `redis://`, `rediss://`, any scheme, or none: `user:pw@host`) and every
  `password=` / `sslpassword=` setting, in a URL's query or a libpq
  `key=value` string, becomes `****`;
- by value: the passwords of the connection strings dbctl was given (the
  `url` argument, every URL `require_url` accepted, DATABASE_URL,
  DBCTL_SCRATCH_URL, DBCTL_REDIS_URL) and PGPASSWORD, as libpq reads them and as a person
  wrote them, raw and percent-encoded, wherever they appear: a driver error
  that echoes part of a connection string is masked too;
- for a `key=value` string, libpq's own parser (psycopg2's parse_dsn) says
  what the password is, quotes and backslashes included.

psycopg2 is imported only when a line holds a `key=value` connection string:
printing "nothing to apply" never pays for it.
"""

from __future__ import annotations

import functools
import os
import re
from typing import NamedTuple
from urllib.parse import quote, unquote

from dbctl.config import ascii_digits, tcp_port
from dbctl.errors import ConfigError
from dbctl.text import quoted

MASK = "****"
POSTGRES_SCHEMES = ("postgresql", "postgres")
# Passwords shorter than this are masked by position only: masking "pw" in every word would garble output.
MIN_VALUE_MASK = 4
_ENV_SECRETS = ("DATABASE_URL", "DBCTL_SCRATCH_URL", "DBCTL_REDIS_URL")

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# `password=` in a URL query (ends at & or #) or a libpq key=value string (quoted, or up to a space).
_KEYWORD = re.compile(r"(?<![A-Za-z0-9_])((?:ssl)?password)(\s*=\s*)", re.IGNORECASE)
# A scheme-less `user:password@host` inside a longer line.
_BARE = re.compile(r"(?<![\w:/.@%-])([\w.+-]+):([^\s@/]+)@(?=[\w\[])")
_remembered: set[str] = set()


class UrlParts(NamedTuple):
    """A URL as a person wrote it: `scheme://user:password@hosts/path?query`, nothing decoded."""

    scheme: str | None
    user: str | None
    password: str | None
    password_span: tuple[int, int] | None  # where the password is in the text
    hosts: str  # host[:port][,host[:port]...]
    path: str
    query: str


def parse_url(text: str) -> UrlParts | None:
    """`text` as a URL with or without a scheme; None when it is not one (a key=value string)."""
    match = _SCHEME.match(text)
    start = match.end() if match else 0
    if not match and ("=" in text.split("@")[0] or "@" not in text):
        return None
    span = _password_span(text, start, len(text), spaces=True)
    at = _userinfo_end(text, start, len(text), spaces=True)
    authority_start = at + 1 if at is not None else start
    userinfo = text[start:at] if at is not None else None
    end = authority_start
    while end < len(text) and text[end] not in "/?#":
        end += 1
    rest = text[end:]
    path, _, query = rest.partition("?")
    query = query.split("#", 1)[0]
    return UrlParts(
        scheme=match.group(0)[:-3].lower() if match else None,
        user=userinfo.split(":", 1)[0] if userinfo is not None else None,
        password=text[span[0]:span[1]] if span else None,
        password_span=span,
        hosts=text[authority_start:end],
        path=path.split("#", 1)[0],
        query=query,
    )


def _userinfo_end(text: str, start: int, stop: int, spaces: bool) -> int | None:
    """Index of the `@` that ends the userinfo of the URL whose authority starts at `start`.

    Passwords may hold raw `@ : / # ?` (and, in a lone URL, spaces), so the
    first `@` is not always the one: take the last `@` after which a host
    follows (no further `@` before the path) and before which the user name
    has no `/ ? #` or space. When an `@` further on belongs to the path or
    query, more is masked than needed, never less.
    """
    position = stop
    while True:
        at = text.rfind("@", start, position)
        if at < 0:
            return None
        host_end = at + 1
        while host_end < stop and text[host_end] not in "/?#" and not text[host_end].isspace():
            host_end += 1
        userinfo = text[start:at]
        user = userinfo.split(":", 1)[0]
        user_ok = not any(c in "/?#" or c.isspace() for c in user)
        if "@" not in text[at + 1:host_end] and user_ok and (spaces or not any(c.isspace() for c in userinfo)):
            return at
        position = at


def _password_span(text: str, start: int, stop: int, spaces: bool) -> tuple[int, int] | None:
    at = _userinfo_end(text, start, stop, spaces)
    if at is None:
        return None
    colon = text.find(":", start, at)
    return (colon + 1, at) if colon >= 0 else None


def _keyword_value_end(text: str, start: int, in_query: bool) -> int:
    """Where a `password=` value starting at `start` ends, by libpq's rules (quotes, backslashes)."""
    if start < len(text) and text[start] == "'":
        i = start + 1
        while i < len(text) and text[i] != "'":
            i += 2 if text[i] == "\\" else 1
        return min(len(text), i + 1)
    i = start
    while i < len(text) and not text[i].isspace() and not (in_query and text[i] in "&#"):
        i += 2 if text[i] == "\\" and not in_query else 1
    return min(len(text), i)


# ---------------------------------------------------------------- secrets by value

def _libpq_passwords(conninfo: str) -> set[str]:
    """The passwords libpq itself reads from a connection string (its own parser, through psycopg2)."""
    try:
        params = _libpq_parse(conninfo)
    except (ValueError, TypeError):
        return set()
    return {str(params[k]) for k in ("password", "sslpassword") if params.get(k)}


@functools.lru_cache(maxsize=64)
def secrets_of(conninfo: str) -> frozenset[str]:
    """Every form in which `conninfo`'s passwords could be printed: as written, decoded, as libpq reads them."""
    conninfo = conninfo.strip()
    found: set[str] = set()
    parts = parse_url(conninfo)
    if parts is not None:
        if parts.password:
            found |= {parts.password, unquote(parts.password)}
        for key, value in _query_pairs(parts.query):
            if key.lower() in ("password", "sslpassword") and value:
                found |= {value, unquote(value)}
    elif "=" in conninfo:  # a libpq key=value string: libpq says what the password is
        for match in _KEYWORD.finditer(conninfo):
            end = _keyword_value_end(conninfo, match.end(), in_query=False)
            raw = conninfo[match.end():end]
            found |= {raw, raw.strip("'")}
        if found:
            found |= _libpq_passwords(conninfo)
    return frozenset(s for s in found if s)


def _query_pairs(query: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in query.split("&") if "=" in p]  # type: ignore[misc]


def _shown_form(conninfo: str) -> str:
    """The connection string as it is printed (password masked by position). A value that is visible
    there anyway (a password equal to the user name, or to `password=`) is not masked by value."""
    return _mask_positions(conninfo, lone_url=_is_lone_url(conninfo) and _url_not_keywords(conninfo))


def remember(conninfo: str | None) -> None:
    """Mask this connection string's passwords by value in everything printed from now on."""
    if conninfo and conninfo.strip():
        _remembered.add(conninfo.strip())


def _known_sources(extra: list[str]) -> list[str]:
    """The connection strings dbctl was given, longest first; not PGPASSWORD (a bare password)."""
    sources = set(_remembered) | {c.strip() for c in extra if c and c.strip()}
    sources |= {os.environ[name].strip() for name in _ENV_SECRETS if os.environ.get(name, "").strip()}
    return sorted(sources, key=len, reverse=True)


def _value_secrets(extra: list[str]) -> list[str]:
    return _secrets_of_sources(os.environ.get("PGPASSWORD", ""), tuple(_known_sources(extra)))


@functools.lru_cache(maxsize=16)
def _secrets_of_sources(pgpassword: str, sources: tuple[str, ...]) -> list[str]:
    """Every printed form of these passwords, longest first; the same for every line a run prints."""
    values: set[str] = set()
    candidates = [(pgpassword, "")] if pgpassword else []
    for source in sources:
        shown = _shown_form(source)
        candidates += [(secret, shown) for secret in secrets_of(source)]
    for secret, shown in candidates:
        if len(secret) >= MIN_VALUE_MASK and secret not in shown:
            values |= {secret, quote(secret, safe=""), quote(secret), quote(secret, safe="@:/")}
    return sorted(values, key=len, reverse=True)


# ---------------------------------------------------------------- masking

def mask_url(text: str, url: str | None = None) -> str:
    """`text` with every password replaced by ****: by position in any URL or key=value string, and by
    value for `url` and every connection string dbctl was given (see the module docstring)."""
    if not text:
        return text
    text = str(text)
    lone = text.strip()
    extra = [url] if url else []
    is_lone = lone == (url or "").strip() or _is_lone_url(lone)
    if is_lone or ("=" in lone and "password" in lone.lower()):
        extra.append(lone)  # the text is itself a connection string: its password is known exactly
    else:  # a known connection string inside a message: masked as a whole, whatever its password holds
        for known in _known_sources(extra):
            if known in text:
                text = text.replace(known, mask_url(known, known))
    text = _mask_positions(text, lone_url=is_lone and _url_not_keywords(lone))
    for secret in _value_secrets(extra):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def printable(text: str, url: str | None = None, *, one_line: bool = False) -> str:
    """`text` as it may be printed anywhere (a terminal, Tilt's log pane, a pod log): passwords masked
    (mask_url) and control characters escaped, so a file name, a request line or a server's message
    cannot move the cursor, overwrite a line with a carriage return or forge a line of output.

    Newlines and tabs stay unless `one_line`. A non-UTF-8 file name (surrogate escapes) shows as \\xNN.
    """
    if not text:
        return text
    text = mask_url(str(text), url)
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that did not come from a file name
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    keep = "" if one_line else "\n\t"
    if text.isprintable() or not one_line and text.replace("\n", "").replace("\t", "").isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escaped(c) for c in text)


def print_line(text: str) -> None:
    """print() for library callers (the engine's say/warn default): the line through `printable` first,
    as one line, so a name holding a newline cannot forge another."""
    print(printable(text, one_line=True), flush=True)


def _escaped(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _url_not_keywords(text: str) -> bool:
    """A URL (with a scheme, or `user:pw@host`), not libpq key=value pairs."""
    return bool(_SCHEME.match(text)) or "=" not in text.split("@")[0]


def _is_lone_url(text: str) -> bool:
    """Is `text` one URL (which may hold a raw space in its password), rather than a sentence?"""
    if not text or "\n" in text:
        return False
    scheme = _SCHEME.match(text)
    if not any(c.isspace() for c in text):
        return bool(scheme) or ("@" in text and "=" not in text.split("@")[0])
    if not scheme:
        return False
    at = _userinfo_end(text, scheme.end(), len(text), spaces=True)
    return at is not None and not any(c.isspace() for c in text[at:])


def _mask_positions(text: str, lone_url: bool) -> str:
    spans: list[tuple[int, int]] = []
    starts = [m.end() for m in _SCHEME.finditer(text)]
    if lone_url and not starts:
        starts = [len(text) - len(text.lstrip())]
    for start in starts:
        if lone_url:
            stop = len(text)
        else:
            stop = start
            while stop < len(text) and not text[stop].isspace():
                stop += 1
        span = _password_span(text, start, stop, spaces=lone_url)
        if span and span[1] > span[0]:
            spans.append(span)
    if not lone_url:
        for match in _BARE.finditer(text):
            spans.append(match.span(2))
    for match in _KEYWORD.finditer(text):
        before = text[match.start() - 1] if match.start() else ""
        in_query = before in "?&"
        end = _keyword_value_end(text, match.end(), in_query)
        if end > match.end():
            spans.append((match.end(), end))
    return _replace_spans(text, spans)


def _replace_spans(text: str, spans: list[tuple[int, int]]) -> str:
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in reversed(merged):
        text = text[:start] + MASK + text[end:]
    return text


def redact(text: str, url: str | None) -> str:
    """`mask_url(text, url)`: kept for callers that pass the URL the text is about."""
    return mask_url(text, url)


def password_of(url: str) -> str | None:
    """The password libpq would use (percent-decoded), for handing it on (PGPASSWORD in a pod)."""
    return postgres_params(url).get("password")


# ---------------------------------------------------------------- checking

_ENCODE = {"@": "%40", "/": "%2F", " ": "%20", "%": "%25"}
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def require_url(url: str | None) -> str:
    """The database URL, checked without connecting; ConfigError (exit 2) saying what to fix.

    Refuses what libpq would misread or echo back in its error: a password
    with a raw `@`, `/` or space, a stray `%`, a bad port. Everything is
    checked with plain string work, so the no-op `dbctl migrate` stays fast.
    """
    if not url or not url.strip():
        raise ConfigError("no database URL: set DATABASE_URL or pass --database-url postgresql://user@host/db")
    url = url.strip()
    remember(url)
    if "\x00" in url:
        raise ConfigError("the database URL contains a NUL character; check DATABASE_URL or --database-url")
    if not url.isprintable():  # a raw newline or escape: libpq would read it as part of a name
        raise ConfigError("the database URL contains control characters or non-ASCII blank space; "
                          "percent-encode them, and check DATABASE_URL or --database-url")
    scheme = _SCHEME.match(url)
    if scheme and scheme.group(0)[:-3].lower() not in POSTGRES_SCHEMES:
        raise ConfigError(
            f"database URL scheme {quoted(scheme.group(0)[:-3])} is not PostgreSQL; "
            "use postgresql://user:password@host:5432/db"
        )
    if not scheme:
        if parse_url(url) is not None or "=" not in url:
            raise ConfigError(
                f"database URL {refused_form(url)} has no scheme; write postgresql://user:password@host:5432/db "
                "(or libpq key=value pairs: host=... dbname=...)"
            )
        return _require_keywords(url)
    parts = parse_url(url)
    assert parts is not None
    _check_encoding(url, parts)
    _check_libpq_agrees(url, scheme.end())
    for host in parts.hosts.split(","):
        port = host.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in host.rsplit("]", 1)[-1] else ""
        if port and tcp_port(port) is None:
            raise ConfigError(f"database URL {refused_form(url)} is malformed: port {quoted(port)} is not a number "
                              "from 1 to 65535; check host and port")
    if not unquote(parts.path.strip("/")) and "dbname=" not in parts.query:
        raise ConfigError(f"database URL {refused_form(url)} names no database; add /DBNAME at the end")
    return url


def _check_encoding(url: str, parts: UrlParts) -> None:
    problems = []
    for what, value in (("user name", parts.user), ("password", parts.password)):
        if not value:
            continue
        raw = sorted({c for c in value if c in "@/" or c.isspace()})
        if raw:
            shown = ", ".join(f"{quoted(c)} as {_ENCODE.get(c, quote(c, safe=''))}" for c in raw)
            problems.append(f"the {what} has characters libpq would misread; percent-encode them ({shown})")
    if _BAD_PERCENT.search(url):
        problems.append("a '%' is not followed by two hex digits; write a literal % as %25")
    if problems:
        raise ConfigError(f"database URL {refused_form(url)} is not percent-encoded: {'; '.join(problems)}")


def refused_form(url: str) -> str:
    """A URL as shown when refusing it: masked, or where the masker cannot tell the user name from the
    password (an `@` it does not place), nothing before the last `@`."""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    if "@" not in url or _userinfo_end(url, start, len(url), spaces=True) == url.rfind("@"):
        return mask_url(url)
    return f"{url[:start]}{MASK}@{url.rsplit('@', 1)[1]}"


def _check_libpq_agrees(url: str, start: int) -> None:
    """libpq ends the user name and password at the first `@` or `/`; the masker at the last `@` before the host.
    Where they differ (a raw `?` or `#` in the user name), libpq would connect as someone the masker did not
    see, so refuse, showing nothing before the last `@`."""
    libpq_end = start
    while libpq_end < len(url) and url[libpq_end] not in "@/":
        libpq_end += 1
    libpq_at = libpq_end if libpq_end < len(url) and url[libpq_end] == "@" else None
    if libpq_at != _userinfo_end(url, start, len(url), spaces=True):
        raise ConfigError(f"database URL {refused_form(url)} is ambiguous: percent-encode ? # @ / in the user name and "
                          "password (? as %3F, # as %23, @ as %40, / as %2F)")


def _require_keywords(conninfo: str) -> str:
    try:
        params = _libpq_parse(conninfo)
    except ValueError:  # libpq's message may echo part of the password: say it in our words
        raise ConfigError(
            "the database connection string is not valid libpq key=value pairs; quote values with spaces "
            "(password='a b') or use postgresql://user:password@host:5432/db"
        ) from None
    if not params.get("dbname"):
        raise ConfigError("the database connection string has no dbname=; add one")
    return conninfo


def database_name(url: str) -> str:
    """The database a URL points at, as libpq reads it (keyword DSNs need dbname=)."""
    name = postgres_params(url).get("dbname")
    if not name:
        raise ConfigError("the database URL has no dbname=; add one")
    return str(name)


# ---------------------------------------------------------------- one parser per kind of URL

def postgres_params(url: str) -> dict[str, str]:
    """What libpq reads from a PostgreSQL URL or key=value string: its own parser (PQconninfoParse).

    Every place that needs a part of a database URL (user, database, password,
    host) asks this, so nothing reads a URL differently from the driver that
    connects with it. ConfigError (exit 2) without echoing the string.
    """
    try:
        return _libpq_parse(url.strip())
    except ValueError:  # libpq's message may quote the password: say what is wrong in our words
        raise ConfigError(f"database URL {refused_form(url)} is malformed (or percent-encodes bytes that are not UTF-8); "
                          "write postgresql://user:password@host:5432/db with @ / # ? % in the password "
                          "percent-encoded") from None


def _libpq_parse(conninfo: str) -> dict[str, str]:
    """libpq's PQconninfoParse (psycopg2's parse_dsn): ValueError when libpq refuses the string (its
    message may quote the password, so it is not passed on) or it decodes to text that is not UTF-8."""
    from psycopg2 import Error
    from psycopg2.extensions import parse_dsn

    try:
        return {key: str(value) for key, value in parse_dsn(conninfo).items()}
    except (Error, UnicodeDecodeError):
        raise ValueError("not a connection string libpq reads") from None


def postgres_url(params: dict[str, str]) -> str:
    """A postgresql:// URL that libpq reads back as exactly `params` (every part percent-encoded)."""
    params = dict(params)
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    userinfo = (f"{user}:{quote(password, safe='')}@" if password is not None else f"{user}@" if user else "")
    hosts = params.pop("host", "").split(",")
    ports = params.pop("port", "").split(",")
    ports = ports * len(hosts) if len(ports) == 1 else ports
    netloc = ",".join(_url_host(host) + (f":{port}" if port else "") for host, port in zip(hosts, ports))
    path = "/" + quote(params.pop("dbname", ""), safe="")
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
    return f"postgresql://{userinfo}{netloc}{path}" + (f"?{query}" if query else "")


def _url_host(host: str) -> str:
    if ":" in host:
        return f"[{host}]"  # an IPv6 address
    return quote(host, safe="")  # a socket directory (/run/postgresql) becomes %2Frun%2Fpostgresql


class RedisAddress(NamedTuple):
    host: str
    port: int
    user: str | None
    password: str | None
    db: int


REDIS_EXAMPLE = "e.g. redis://localhost:6379/0 or redis://:password@redis:6379"


def redis_address(url: str) -> RedisAddress:
    """A redis:// URL read by one rule, the masker's (parse_url); ConfigError (exit 2) for anything else.

    A URL that two readers could read differently is refused rather than
    guessed: a raw `# ? / @` or space in the user name or password (RFC 3986
    ends the authority at the first `/ ? #`, so redis://:12#x@redis:6379 is
    host "" port 12 to redis-py and urllib, and redis:6379 to the masker).
    Messages show the URL masked, never the password.
    """
    text = url.strip()
    remember(text)
    shown = mask_url(text)
    scheme = _SCHEME.match(text)
    if not scheme or scheme.group(0)[:-3].lower() not in ("redis", "rediss"):
        raise ConfigError(f"Redis URL {shown} must start with redis://; {REDIS_EXAMPLE}")
    if scheme.group(0)[:-3].lower() == "rediss":
        raise ConfigError("rediss:// (TLS) is not supported by dbctl wait; check the TCP port with redis://")
    if not text.isprintable() or any(c.isspace() for c in text):
        raise ConfigError(f"Redis URL {shown} contains spaces or control characters; percent-encode them in the "
                          f"password ({REDIS_EXAMPLE})")
    parts = parse_url(text)
    assert parts is not None  # it has a scheme
    at = _userinfo_end(text, scheme.end(), len(text), spaces=False)
    userinfo = text[scheme.end():at] if at is not None else ""
    # Every @ belongs to a user name or password, and a Redis URL has no fragment: anything else is ambiguous.
    stray_at = "@" in (text if at is None else text[at + 1:])
    if stray_at:  # the user info is up to the last @ by this rule: name what in it makes that ambiguous
        userinfo = text[scheme.end():text.rfind("@")]
    raw = sorted({c for c in userinfo if c in "@/?#"}
                 | ({"#"} if "#" in text else set()))
    if raw:  # shown without anything before the last @: where the password ends is the question
        shown = refused_form(text)
        encoded = ", ".join(f"{c} as {quote(c, safe='')}" for c in raw)
        raise ConfigError(f"Redis URL {shown} is ambiguous: its user name or password holds a raw {' '.join(raw)}, "
                          f"which other clients read as the end of the host; percent-encode them ({encoded})")
    if _BAD_PERCENT.search(text):
        raise ConfigError(f"Redis URL {shown} has a '%' not followed by two hex digits; write a literal % as %25")
    host, port = _host_port(parts.hosts, shown)
    db_text = parts.path.strip("/") or "0"
    if not ascii_digits(db_text) or parts.path.count("/") > 1:
        raise ConfigError(f"Redis URL {shown}: the path must be a database number such as /0; {REDIS_EXAMPLE}")
    return RedisAddress(host=host, port=port, user=unquote(parts.user) if parts.user else None,
                        password=unquote(parts.password) if parts.password is not None else None, db=int(db_text))


def _host_port(hosts: str, shown: str) -> tuple[str, int]:
    if hosts.startswith("["):  # [IPv6]:port
        host, bracket, rest = hosts[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else None if bracket and not rest else "bad"
    else:
        host, colon, port_text = hosts.partition(":")
        port_text = port_text if colon else None
    if "," in hosts or (port_text is not None and tcp_port(port_text) is None):
        raise ConfigError(f"Redis URL {shown} is malformed: give one host and a port from 1 to 65535; "
                          f"{REDIS_EXAMPLE}")
    return unquote(host) or "localhost", int(port_text) if port_text else 6379
