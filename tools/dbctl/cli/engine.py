"""The engine's commands: wait, migrate, verify, status, new, rollback. Thin over dbctl.engine."""

from __future__ import annotations

import json
import sys

import click

from dbctl import config
from dbctl.cli.common import (REDIS_URL, Setting, INT64_MAX, SECONDS, TABLE, database_errors, database_options, debug_option,
                              json_option, load, lock_wait_option, migrations_option, open_connection, run_options, say, say_lines,
                              warn)
from dbctl.errors import CheckFailed, ConfigError
from dbctl.text import format_ns


@click.command("wait")
@database_options
@click.option("--timeout", default=60.0, show_default=True, type=SECONDS, help="Seconds to wait before giving up.")
@click.option("--redis-url", envvar="DBCTL_REDIS_URL", metavar="URL", type=REDIS_URL,
              help="Also wait for Redis (redis://[:password@]host:6379) [env DBCTL_REDIS_URL].", cls=Setting)
@click.option("--no-postgres", is_flag=True, help="Wait for Redis only.")
def wait_cmd(database_url, migrations_dir, timeout, redis_url, no_postgres):
    """Wait until PostgreSQL accepts connections and the database exists.

    Example: dbctl wait --timeout 120 --redis-url redis://redis:6379
    """
    import time

    from dbctl.urls import mask_url

    start = time.monotonic()
    if redis_url:  # a malformed Redis URL is a usage error now, not after waiting for PostgreSQL
        from dbctl.devenv.waiting import redis_address

        redis_address(redis_url)
    if not no_postgres:
        url, conn = open_connection(database_url, wait_timeout=timeout)
        conn.close()
        say(f"PostgreSQL is ready: {mask_url(url)} ({time.monotonic() - start:.1f}s)")
    if redis_url:
        from dbctl.devenv.waiting import wait_for_redis

        remaining = max(1.0, timeout - (time.monotonic() - start))
        wait_for_redis(redis_url, remaining, say=warn)
        say(f"Redis is ready: {mask_url(redis_url)}")
    elif no_postgres:
        raise click.UsageError("--no-postgres needs --redis-url")


@click.command("migrate")
@database_options
@click.option("--target", type=click.IntRange(-INT64_MAX - 1, INT64_MAX), metavar="VERSION", help="Apply pending migrations up to this version only.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--strict", is_flag=True, help="Refuse pending migrations older than the newest applied one.")
@run_options
def migrate_cmd(database_url, migrations_dir, target, dry_run, strict, lock_timeout, statement_timeout,
                wait_timeout, lock_wait_timeout):
    """Apply pending migrations, each in its own transaction with its history row.

    Example: dbctl migrate --lock-timeout 5s
    """
    from dbctl.urls import mask_url, require_url

    migrations = load(migrations_dir)
    url = require_url(database_url)
    production = config.environment() == "production"  # an invalid DBCTL_ENV fails even on a no-op run
    from dbctl.engine.migrator import MigrateOptions, migrate

    if production:  # never queue silently behind a long transaction; log the plan and who ran it
        lock_timeout = lock_timeout or config.PRODUCTION_LOCK_TIMEOUT
        statement_timeout = statement_timeout or config.PRODUCTION_STATEMENT_TIMEOUT
        say(f"production mode: lock_timeout {lock_timeout}, statement_timeout {statement_timeout}, "
            f"run by {config.actor_identity() or 'unknown'} on {config.runner_identity()}")
    options = MigrateOptions(
        target=target, dry_run=dry_run, strict=strict, lock_timeout=lock_timeout,
        statement_timeout=statement_timeout, wait_timeout=wait_timeout, lock_wait_timeout=lock_wait_timeout,
        actor=config.actor_identity(), announce_plan=production,
    )
    result = migrate(url, migrations, options, say=say, warn=warn)
    plan = result.plan
    if dry_run:
        todo = plan.to_apply
        say(f"dry run on {mask_url(url)}: {len(todo)} migration(s) would be applied, nothing was changed")
        for e in todo:
            mode = " (no transaction)" if e.migration.no_tx else ""
            note = f" [{e.state}]" if e.state != "pending" else ""
            say(f"  would apply {e.migration.label}{mode}{note}")
        return
    total = sum(ns for _, ns in result.applied)
    # Versions may be 0 or negative (sqlx's are i64), so "none" means no history at all, not a falsy max.
    versions = [m.version for m, _ in result.applied]
    if plan.current_version is not None:
        versions.append(plan.current_version)
    version = max(versions) if versions else "none"
    if result.applied:
        say(f"applied {len(result.applied)} migration(s) in {format_ns(total)}; database at version {version}")
    else:
        say(f"database is up to date at version {version}; nothing to apply")


@click.command("verify")
@database_options
@click.option("--table", "tables", multiple=True, metavar="NAME", type=TABLE,
              help="A table that must exist (repeatable) [env DBCTL_CRITICAL_TABLES, comma-separated].")
@click.option("--wait-timeout", default=0.0, show_default=True, type=SECONDS,
              help="Seconds to wait for PostgreSQL (and Redis, with --redis-url) first.")
@lock_wait_option(30.0)
@click.option("--redis-url", metavar="URL", type=REDIS_URL,
              help="Also wait for Redis to answer PING (redis://host:6379), within --wait-timeout.")
@json_option
def verify_cmd(database_url, migrations_dir, tables, wait_timeout, lock_wait_timeout, redis_url, as_json):
    """Check every migration is applied with its checksum and the critical tables exist.

    Exit 0 when ready, 1 when not: made for init containers and health checks.
    With --wait-timeout and --redis-url it is the backend's one init container:
    wait for PostgreSQL and Redis, then verify, in one process.
    Example: dbctl verify --wait-timeout 300 --redis-url redis://redis:6379
    """
    import time

    from dbctl.engine.verify import check_schema

    start = time.monotonic()
    migrations = load(migrations_dir)
    required = list(config.critical_tables(tables))  # a bad DBCTL_CRITICAL_TABLES: exit 2, first
    if redis_url:
        from dbctl.devenv.waiting import redis_address

        redis_address(redis_url)
    _, conn = open_connection(database_url, wait_timeout)
    with conn:
        if redis_url:
            from dbctl.devenv.waiting import wait_for_redis

            wait_for_redis(redis_url, max(0.0, wait_timeout - (time.monotonic() - start)), say=warn)
            if not as_json:
                from dbctl.urls import mask_url

                say(f"Redis is ready: {mask_url(redis_url)}")
        with database_errors("cannot read the schema"):
            report = check_schema(conn, migrations, required, lock_wait=lock_wait_timeout)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    if not report.ok:
        if not as_json:
            raise CheckFailed("schema not ready: " + "; ".join(report.problems))
        sys.exit(1)
    if not as_json:
        say(f"schema verified: version {report.current_version}, "
            f"{len(migrations.ups)} migration(s) applied, critical tables present")


@click.command("status")
@database_options
@lock_wait_option(30.0)
@json_option
def status_cmd(database_url, migrations_dir, lock_wait_timeout, as_json):
    """Show each migration's state, the last attempt's error, and the database's tables.

    Example: dbctl status --json | jq '.migrations[] | select(.state != "applied")'
    """
    from dbctl.engine import status as status_mod

    migrations = load(migrations_dir)
    url, conn = open_connection(database_url)
    with conn, database_errors("cannot read the migration history"):
        status = status_mod.gather(conn, url, migrations, lock_wait_timeout)
        _add_status_sections(conn, status, lock_wait_timeout)
    # Drift needs a scratch database, so status only points to it (dev-setup / dbctl doctor runs it).
    status.sections.append("\nDrift:      dbctl drift compares this schema with what the migrations make "
                           "(dev-setup runs it)")
    if as_json:
        click.echo(json.dumps(status_mod.as_dict(status), indent=2, default=str))
    else:
        say_lines(status_mod.format_text(status))  # every cell escaped; masked once, not line by line


def _add_status_sections(conn, status, lock_wait: float) -> None:
    """Other modules (seeds) contribute sections when they are installed."""
    try:
        seeding = __import__("dbctl.devdata.seeding", fromlist=["seeding"])  # traced by -X importtime
    except ModuleNotFoundError as exc:
        if exc.name != "dbctl.devdata.seeding":
            raise
        return
    seeding.add_status_section(conn, status, lock_wait)


@click.command("rollback")
@database_options
@click.option("--to", "to_version", type=click.IntRange(-INT64_MAX - 1, INT64_MAX), metavar="VERSION",
              help="Revert every applied migration newer than VERSION (one below the oldest: all of them).")
@click.option("--steps", type=click.IntRange(1, INT64_MAX), metavar="N", help="Revert the N newest applied migrations [default: 1].")
@click.option("--dry-run", is_flag=True, help="Show which down files would run; change nothing.")
@run_options
def rollback_cmd(database_url, migrations_dir, to_version, steps, dry_run, lock_timeout, statement_timeout,
                 wait_timeout, lock_wait_timeout):
    """Revert reversible migrations with their .down.sql files, newest first.

    Each down file runs in a transaction with the removal of its _sqlx_migrations
    row. Refuses, before touching anything, when a needed down file is missing.
    Example: dbctl rollback --steps 2 --dry-run
    """
    from dbctl.engine.rollback import RollbackOptions, rollback
    from dbctl.urls import mask_url, require_url

    migrations = load(migrations_dir)
    url = require_url(database_url)
    if config.environment() == "production":
        lock_timeout = lock_timeout or config.PRODUCTION_LOCK_TIMEOUT
        statement_timeout = statement_timeout or config.PRODUCTION_STATEMENT_TIMEOUT
    options = RollbackOptions(to_version=to_version, steps=steps, dry_run=dry_run, lock_timeout=lock_timeout,
                              statement_timeout=statement_timeout, wait_timeout=wait_timeout,
                              lock_wait_timeout=lock_wait_timeout)
    result = rollback(url, migrations, options, say=say, warn=warn)
    if dry_run:
        say(f"dry run on {mask_url(url)}: {len(result.planned)} migration(s) would be reverted, nothing was changed")
        for down in result.planned:
            mode = " (no transaction)" if down.no_tx else ""
            say(f"  would run {down.label}{mode} and delete version {down.version} from _sqlx_migrations")
        return
    if not result.planned:
        say("nothing to roll back: no migration is applied")
        return
    total = sum(ns for _, ns in result.reverted)
    say(f"reverted {len(result.reverted)} migration(s) in {format_ns(total)}; "
        f"database at version {'none' if result.current_version is None else result.current_version}")


@click.command("new")
@click.argument("description", nargs=-1, required=True)
@click.option("--reversible", "-r", is_flag=True, help="Create a .up.sql / .down.sql pair.")
@migrations_option
@debug_option
def new_cmd(description, reversible, migrations_dir):
    """Create the next migration file with the right name.

    Example: dbctl new add user avatars   ->  migrations/009_add_user_avatars.sql
    """
    from dbctl.engine.source import new_migration_paths

    migrations = load(migrations_dir)
    paths = new_migration_paths(migrations, " ".join(description), reversible)
    written = []
    try:
        for path in paths:
            kind = "Revert" if path.name.endswith(".down.sql") else "Add"
            with path.open("x", encoding="utf-8") as out:  # never overwrite a file that appeared meanwhile
                written.append(path)
                out.write(f"-- {kind} migration script here: {' '.join(description)}\n")
    except (OSError, UnicodeError) as exc:
        for path in written:  # nothing half-written: an up file without its down is a broken pair
            path.unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot create {path}: {reason}; check the --migrations directory and shorten the "
                          "description") from None
    for path in paths:
        say(f"created {path}")
    say("write the SQL, then: dbctl lint && dbctl migrate")
