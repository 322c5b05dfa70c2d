"""Settings read from the environment, with their defaults in one place."""

from __future__ import annotations

import os
import re

from dbctl.text import quoted

ENVIRONMENTS = ("development", "test", "staging", "production")  # in order of strictness

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
# Patterns are kept as text and compiled by re's cache on first use: compiling the non-ASCII ranges takes
# milliseconds, and most runs check no table name.
_IDENTIFIER = r'(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*|"(?:[^"\x00]|"")+")'
_TABLE_NAME = rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})?"
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


def check_table_name(name: str, source: str) -> str:
    """`name` if PostgreSQL can look it up as a table; ConfigError (exit 2) saying what is wrong otherwise."""
    from dbctl.errors import ConfigError

    name = name.strip()
    shown = quoted(name, 60)
    if not re.fullmatch(_TABLE_NAME, name) or not name.isprintable():  # PostgreSQL takes U+2028; a terminal breaks
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


def critical_tables(given=()) -> tuple[str, ...]:
    """`given` (--table), else DBCTL_CRITICAL_TABLES (comma-separated), else Kiro's core tables.

    The variable is checked even when --table wins: every source of a setting is validated.
    """
    from_env = table_list("DBCTL_CRITICAL_TABLES")
    if given:
        return tuple(given)
    return DEFAULT_CRITICAL_TABLES if from_env is None else from_env


def table_list(variable: str) -> tuple[str, ...] | None:
    """A comma-separated list of table names from an environment variable, each checked; None when unset."""
    raw = os.environ.get(variable)
    if raw is None:
        return None
    return tuple(check_table_name(t, variable) for t in raw.split(",") if t.strip())


def runner_identity() -> str:
    """Who is running: the pod name inside Kubernetes, else the host name."""
    name = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME")
    if name:
        return name
    import socket

    return socket.gethostname()


# PostgreSQL's time units in milliseconds (lock_timeout, statement_timeout); no unit means milliseconds.
DURATION_UNITS_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+) *(us|ms|s|min|h|d)?"  # matched with re.ASCII: no other digits


def duration_ms(text: str) -> float | None:
    """A PostgreSQL duration in milliseconds, as PostgreSQL reads it; None when it is not one."""
    match = re.fullmatch(_DURATION, str(text).strip(), re.ASCII)
    return float(match.group(1)) * DURATION_UNITS_MS[match.group(2) or "ms"] if match else None


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
    """development, test, staging or production, from --env and DBCTL_ENV: each checked, the strictest wins.

    Every source is validated even when another one is given, so an unknown name
    (DBCTL_ENV=prod) is an error however the other source reads, and a flag typed
    into a pod can only make the environment stricter, never weaker.
    """
    from dbctl.errors import ConfigError

    given = []
    for source, raw in (("--env", override), ("DBCTL_ENV", os.environ.get("DBCTL_ENV"))):
        if raw is None or (source == "DBCTL_ENV" and raw == ""):
            continue  # an empty DBCTL_ENV= is unset, as click reads every other variable
        value = raw.strip().lower()
        if value not in ENVIRONMENTS:
            raise ConfigError(f"{source} {quoted(raw, 60)} is not one of {', '.join(ENVIRONMENTS)}; a name dbctl "
                              "does not know (prod, live...) is refused, never guessed: fix DBCTL_ENV or --env")
        given.append(value)
    return max(given, key=ENVIRONMENTS.index, default="development")
