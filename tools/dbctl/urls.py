"""Database URLs: where they come from and how they are printed (never with the password)."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from dbctl.errors import ConfigError

MASK = "****"
# Any scheme: postgresql://, redis://, ... user:password@ becomes user:****@.
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/?#@\s]*:)([^/?#\s]*)(@)", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def mask_url(text: str) -> str:
    """`text` with every password in a URL or `password=` setting replaced by ****."""
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def password_of(url: str) -> str | None:
    if url.startswith(("postgres://", "postgresql://")):
        password = urlsplit(url).password
        return unquote(password) if password else None
    match = _KEYWORD_PASSWORD.search(url)
    return match.group(2).strip("'") if match else None


def redact(text: str, url: str | None) -> str:
    """Mask URLs in `text`, and the URL's own password wherever it appears verbatim."""
    text = mask_url(text)
    password = password_of(url) if url else None
    if password and len(password) >= 3:
        text = text.replace(password, MASK)
    return text


def require_url(url: str | None) -> str:
    if not url or not url.strip():
        raise ConfigError("no database URL: set DATABASE_URL or pass --database-url postgresql://user@host/db")
    url = url.strip()
    if "://" in url and not url.startswith(("postgres://", "postgresql://")):
        scheme = url.split("://", 1)[0]
        raise ConfigError(
            f"database URL scheme {scheme!r} is not PostgreSQL; use postgresql://user:password@host:5432/db"
        )
    if url.startswith(("postgres://", "postgresql://")):
        try:
            parts = urlsplit(url)
            parts.port  # raises ValueError on a bad port
        except ValueError as exc:
            raise ConfigError(f"database URL {mask_url(url)} is malformed ({exc}); check host and port") from None
        if not parts.path.strip("/") and "dbname=" not in (parts.query or ""):
            raise ConfigError(f"database URL {mask_url(url)} names no database; add /DBNAME at the end")
    return url


def database_name(url: str) -> str:
    """The database a URL points at (keyword DSNs need dbname=)."""
    if url.startswith(("postgres://", "postgresql://")):
        parts = urlsplit(url)
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        return unquote(query.get("dbname") or parts.path.lstrip("/"))
    match = re.search(r"\bdbname\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", url)
    if not match:
        raise ConfigError("the database URL has no dbname=; add one")
    return match.group(1).strip("'")
