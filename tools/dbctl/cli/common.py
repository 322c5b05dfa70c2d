"""What every command shares: the database options, the timeouts of a run, and printing that masks passwords."""

from __future__ import annotations

import click

from dbctl import config


def database_options(func):
    """--database-url and --migrations, shared by every command that needs them."""
    func = click.option(
        "--migrations", "migrations_dir", envvar="DBCTL_MIGRATIONS", default=config.DEFAULT_MIGRATIONS,
        show_default=True, type=click.Path(file_okay=False), help="Migrations directory [env DBCTL_MIGRATIONS].",
    )(func)
    func = click.option(
        "--database-url", envvar="DATABASE_URL", metavar="URL",
        help="postgresql://user[:password]@host:port/db [env DATABASE_URL; PGPASSWORD is honoured].",
    )(func)
    return debug_option(func)


def debug_option(func):
    return click.option("--debug", is_flag=True, hidden=True, expose_value=False, help="Show tracebacks.")(func)


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")(func)


def say(message: str) -> None:
    click.echo(redact_line(message))


def warn(message: str) -> None:
    click.echo(redact_line(message), err=True)


def redact_line(message: str) -> str:
    from dbctl.urls import mask_url

    return mask_url(message)


def load(migrations_dir: str):
    from dbctl.engine.source import load_migrations

    return load_migrations(migrations_dir)


def open_connection(database_url: str | None, wait_timeout: float = 0):
    from dbctl.engine import postgres
    from dbctl.urls import require_url

    url = require_url(database_url)
    if wait_timeout > 0:
        return url, postgres.wait_for_connection(url, wait_timeout, on_wait=warn)
    return url, postgres.connect(url)


def run_options(func):
    """Timeouts of a run that changes the schema: migrate and rollback."""
    func = click.option("--lock-wait-timeout", default=300.0, show_default=True, envvar="DBCTL_LOCK_WAIT_TIMEOUT",
                        help="Seconds to wait for another runner's migration lock.")(func)
    func = click.option("--wait-timeout", default=30.0, show_default=True, envvar="DBCTL_WAIT_TIMEOUT",
                        help="Seconds to wait for PostgreSQL to accept connections.")(func)
    return timeout_options(func)


def timeout_options(func):
    func = click.option("--statement-timeout", envvar="DBCTL_STATEMENT_TIMEOUT", metavar="DURATION",
                        help="PostgreSQL statement_timeout per migration, e.g. 5min [env DBCTL_STATEMENT_TIMEOUT].")(func)
    func = click.option("--lock-timeout", envvar="DBCTL_LOCK_TIMEOUT", metavar="DURATION",
                        help="PostgreSQL lock_timeout per migration, e.g. 5s [env DBCTL_LOCK_TIMEOUT].")(func)
    return func
