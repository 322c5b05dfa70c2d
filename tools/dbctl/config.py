"""Settings read from the environment, with their defaults in one place."""

from __future__ import annotations

import os
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


def critical_tables() -> tuple[str, ...]:
    raw = os.environ.get("DBCTL_CRITICAL_TABLES")
    if raw is None:
        return DEFAULT_CRITICAL_TABLES
    return tuple(t.strip() for t in raw.split(",") if t.strip())


def runner_identity() -> str:
    """Who is running: the pod name inside Kubernetes, else the host name."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()


# Production mode (DBCTL_ENV=production): a migration never queues silently behind a long transaction.
PRODUCTION_LOCK_TIMEOUT = "5s"
PRODUCTION_STATEMENT_TIMEOUT = "15min"


def actor_identity() -> str | None:
    """Who asked for a run: DBCTL_ACTOR (a CI job, a person), else the OS user, else None."""
    actor = os.environ.get("DBCTL_ACTOR", "").strip()
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
