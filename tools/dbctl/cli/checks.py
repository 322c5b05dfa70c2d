"""`dbctl drift`, `lint` and `test`: thin commands over dbctl.checks."""

from __future__ import annotations

import json
import sys

import click

from dbctl.cli.common import INT64_MAX, database_options, json_option, load, migrations_option, say, warn
from dbctl.errors import CheckFailed


def scratch_option(func):
    return click.option(
        "--scratch-url", envvar="DBCTL_SCRATCH_URL", metavar="URL",
        help="A server (any database on it) where dbctl may CREATE DATABASE for its scratch databases "
             "[env DBCTL_SCRATCH_URL; default: the server of --database-url].",
    )(func)


@click.command("drift")
@database_options
@scratch_option
@json_option
def drift_cmd(database_url, migrations_dir, scratch_url, as_json):
    """Compare the live schema with what its migrations produce (replayed in a scratch database).

    Exit 0 when they match, 1 when they differ (or the check could not run).
    Example: dbctl drift --json | jq '.differences[] | .name'
    """
    from dbctl.checks.drift import check_drift
    from dbctl.urls import require_url

    migrations = load(migrations_dir)
    url = require_url(database_url)
    report = check_drift(url, migrations, scratch_url.strip() if scratch_url else None)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
        sys.exit(0 if report.ok else 1)
    say(report.format_text())
    if not report.ok:
        raise CheckFailed(f"schema drift: {len(report.differences)} difference(s) between {report.database} "
                          "and its migrations")


@click.command("lint")
@database_options
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, exists=True))
@click.option("--all", "everything", is_flag=True, help="Lint every file, applied or not.")
@click.option("--since", type=click.IntRange(0, INT64_MAX), metavar="VERSION", envvar="DBCTL_LINT_SINCE",
              help="Lint only versions after VERSION (a CI baseline) [env DBCTL_LINT_SINCE].")
@click.option("--busy-table", "busy_tables", multiple=True, metavar="TABLE",
              help="A table too busy to lock (repeatable) [env DBCTL_BUSY_TABLES, comma-separated].")
@click.option("--busy-rows", type=click.IntRange(0, INT64_MAX), default=1_000_000, show_default=True,
              help="With a database: tables with at least this many rows (estimated) count as busy.")
@json_option
def lint_cmd(database_url, migrations_dir, files, everything, since, busy_tables, busy_rows, as_json):
    """Find dangerous changes in migrations before they run (PostgreSQL's parser, via pglast).

    By default only files not applied to DATABASE_URL yet; all files with --all or
    when no database is configured. Exit 0 clean, 1 findings, 2 bad usage.
    Example: dbctl lint migrations/009_add_user_avatars.sql
    """
    import os

    from dbctl.checks.lint import lint_migrations, select_migrations
    from dbctl.engine.source import read_migration

    busy = {t.strip() for t in (*busy_tables, *os.environ.get("DBCTL_BUSY_TABLES", "").split(",")) if t.strip()}
    if files:
        chosen = [m for m in (read_migration(_path(f)) for f in files) if m is not None]
        selection = "the files given"
    else:
        migrations = load(migrations_dir)
        applied = None
        if not everything and since is None:
            applied = _applied_versions(database_url, busy, busy_rows)
        chosen, selection = select_migrations(migrations.ups, applied=applied, since=since, everything=everything)
    report = lint_migrations(chosen, busy, selection)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        say(report.format_text())
    sys.exit(0 if report.ok else 1)


def _path(name: str):
    from pathlib import Path

    from dbctl.errors import ConfigError

    if not name.endswith(".sql"):
        raise ConfigError(f"{name}: not a .sql migration file; pass migration files or none (all pending ones)")
    return Path(name)


def _applied_versions(database_url: str | None, busy: set[str], busy_rows: int) -> set[int] | None:
    """The applied versions, or None when no database is configured or reachable (then all files are linted)."""
    from dbctl.engine import postgres
    from dbctl.errors import ConnectError
    from dbctl.urls import require_url

    if not database_url:
        warn("note: no DATABASE_URL, so every file is linted as one run on an empty database; set it to lint "
             "only the files not applied yet")
        return None
    url = require_url(database_url)
    try:
        conn = postgres.connect(url, application_name="dbctl lint")
    except ConnectError as exc:
        warn(f"note: {exc}; linting every file instead of only the ones not applied yet")
        return None
    with conn:
        busy.update(name for schema, name, rows, _ in postgres.list_tables(conn)
                    if rows is not None and rows >= busy_rows and name not in postgres.OWN_TABLES)
        return {row.version for row in postgres.read_history(conn)}


@click.command("test")
@migrations_option
@click.option("--scratch-url", envvar="DBCTL_SCRATCH_URL", metavar="URL",
              help="A server (any database on it) where dbctl may CREATE DATABASE "
                   "[env DBCTL_SCRATCH_URL; default: DATABASE_URL's server]. Only scratch databases are touched.")
@click.option("--database-url", envvar="DATABASE_URL", metavar="URL", hidden=True)
@click.option("--lint-since", type=click.IntRange(0, INT64_MAX), metavar="VERSION", envvar="DBCTL_LINT_SINCE",
              help="Lint only versions after VERSION, the ones not released yet [env DBCTL_LINT_SINCE; "
                   "default: every file, as one run on an empty database].")
@json_option
@click.option("--debug", is_flag=True, hidden=True, expose_value=False)
def test_cmd(migrations_dir, scratch_url, database_url, lint_since, as_json):
    """For CI: lint, apply every migration to a scratch database, roll each reversible one back and
    forward again, and check the result equals a straight run (no drift). Exit 1 on any failure.

    Example: dbctl test --scratch-url postgresql://postgres@localhost/postgres --lint-since 8
    """
    from dbctl.checks.migration_test import run_tests
    from dbctl.errors import ConfigError

    migrations = load(migrations_dir)
    server = (scratch_url or database_url or "").strip()
    if not server:
        raise ConfigError("no server for the scratch databases: pass --scratch-url postgresql://user@host/postgres "
                          "or set DATABASE_URL (only new scratch databases are created there)")
    from dbctl.urls import require_url

    server = require_url(server)
    report = run_tests(server, migrations, lint_since=lint_since)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        sys.exit(0 if report.ok else 1)
    say(report.format_text())
    if not report.ok:
        raise CheckFailed(f"migration tests failed: {', '.join(s.name for s in report.failures)}")
