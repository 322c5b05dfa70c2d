"""Settings read from the environment, with their defaults in one place."""

from __future__ import annotations

import os
import re
import socket

ENVIRONMENTS = ("development", "test", "staging", "production")

DEFAULT_MIGRATIONS = "migrations"
DEFAULT_SEEDS = "seeds"

# Tables the Kiro backend cannot run without; `dbctl verify` and /health check them.
DEFAULT_CRITICAL_TABLES = (
    "users",
    "artists",
    "user_streaming_connections",
    "dnp_lists",
    "dnp_entries",
    "rate_limit_buckets",
    "background_jobs",
    "audit_log",
    "community_lists",
    "health_checks",
    "user_sessions",
)


# What PostgreSQL's to_regclass reads without an error: [schema.]name, each part plain or "quoted".
_IDENTIFIER = r'(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*|"(?:[^"\x00]|"")+")'
_TABLE_NAME = re.compile(rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})?")
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


def check_table_name(name: str, source: str) -> str:
    """`name` if PostgreSQL can look it up as a table; ConfigError (exit 2) saying what is wrong otherwise."""
    from dbctl.errors import ConfigError

    name = name.strip()
    shown = repr(name if len(name) <= 60 else name[:57] + "...")
    if not _TABLE_NAME.fullmatch(name) or not name.isprintable():  # PostgreSQL takes U+2028; a terminal breaks
        raise ConfigError(f"{source}: {shown} is not a table name; use [schema.]name with letters, digits and "
                          'underscores, or a "quoted" name')
    parts = re.findall(_IDENTIFIER, name)
    if any(len(part.strip('"').encode("utf-8", "surrogatepass")) > MAX_IDENTIFIER_BYTES for part in parts):
        raise ConfigError(f"{source}: {shown} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte names")
    return name


def ascii_digits(text: str) -> bool:
    """Only the digits 0-9: str.isdigit() also says yes to '²' and '٣', which int() refuses or reads."""
    return isinstance(text, str) and text.isascii() and text.isdigit()


def tcp_port(text: str) -> int | None:
    """`text` as a TCP port (1-65535, ASCII digits only, nothing around them), else None."""
    return int(text) if ascii_digits(text) and 0 < int(text) <= 65535 else None


def critical_tables() -> tuple[str, ...]:
    """DBCTL_CRITICAL_TABLES (comma-separated, each checked), else Kiro's core tables."""
    raw = os.environ.get("DBCTL_CRITICAL_TABLES")
    if raw is None:
        return DEFAULT_CRITICAL_TABLES
    return tuple(check_table_name(t, "DBCTL_CRITICAL_TABLES") for t in raw.split(",") if t.strip())


def runner_identity() -> str:
    """Who is running: the pod name inside Kubernetes, else the host name."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()


# Production mode (DBCTL_ENV=production): a migration never queues silently behind a long transaction.
PRODUCTION_LOCK_TIMEOUT = "5s"
PRODUCTION_STATEMENT_TIMEOUT = "15min"


def actor_identity() -> str | None:
    """Who asked for a run: DBCTL_ACTOR (a CI job, a person), else the OS user, else None."""
    # Control characters (a NUL cannot be stored in text) are dropped: it is a label, not a key.
    actor = "".join(c for c in os.environ.get("DBCTL_ACTOR", "") if c.isprintable()).strip()
    if actor:
        return actor[:200]
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no passwd entry
        return None


def environment(override: str | None = None) -> str:
    """development, test, staging or production: --env, else DBCTL_ENV, else development."""
    from dbctl.errors import ConfigError

    value = (override or os.environ.get("DBCTL_ENV") or "development").strip().lower()
    if value not in ENVIRONMENTS:
        raise ConfigError(f"environment {value!r} is not one of {', '.join(ENVIRONMENTS)}; set DBCTL_ENV or --env")
    return value
