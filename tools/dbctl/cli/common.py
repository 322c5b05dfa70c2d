"""What every command shares: the database options, the timeouts of a run, and printing that masks passwords."""

from __future__ import annotations

import math
import re
from contextlib import contextmanager

import click

from dbctl import config

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class Seconds(click.ParamType):
    """A finite, non-negative number of seconds (a wait, never nan, inf or negative)."""

    name = "seconds"

    def convert(self, value, param, ctx):
        if isinstance(value, float | int) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                text = str(value).strip()
                if not text.isascii() or "_" in text:  # float() also reads '٣' and '1_0'
                    raise ValueError(text)
                number = float(text)
            except ValueError:
                self.fail(f"{_shown(value)} is not a number of seconds; use e.g. 30 or 2.5", param, ctx)
        if not math.isfinite(number) or not 0 <= number <= INT32_MAX:
            self.fail(f"{_shown(value)} must be a finite number of seconds from 0 to {INT32_MAX}; use e.g. 30",
                      param, ctx)
        return number


class PostgresDuration(click.ParamType):
    """A PostgreSQL time setting (lock_timeout, statement_timeout): a number and one of PostgreSQL's units.

    Checked as PostgreSQL parses it (no unit means milliseconds; at most INT_MAX
    milliseconds; 0 turns the timeout off), so a typo is a usage error before
    connecting; PostgreSQL checks it again when it is set.
    """

    name = "duration"
    UNITS_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
    _FORM = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+) *(us|ms|s|min|h|d)?", re.ASCII)  # ASCII only, no newline

    def convert(self, value, param, ctx):
        text = str(value).strip()
        match = self._FORM.fullmatch(text)
        if not match:
            self.fail(f"{_shown(value)} is not a PostgreSQL duration; use a number and one of "
                      f"{', '.join(self.UNITS_MS)} (e.g. 5s, 500ms, 15min; 0 turns it off)", param, ctx)
        milliseconds = float(match.group(1)) * self.UNITS_MS[match.group(2) or "ms"]
        if milliseconds > INT32_MAX:
            self.fail(f"{_shown(value)} is longer than PostgreSQL allows ({INT32_MAX} ms, about 24 days)", param, ctx)
        return text


class TableName(click.ParamType):
    """A table name PostgreSQL's to_regclass reads: [schema.]name, plain or "quoted"."""

    name = "table"

    def convert(self, value, param, ctx):
        from dbctl.errors import ConfigError

        try:
            return config.check_table_name(str(value), "--table")
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


def _shown(value) -> str:
    text = str(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


SECONDS = Seconds()
DURATION = PostgresDuration()
TABLE = TableName()


def database_options(func):
    """--database-url and --migrations, shared by every command that needs them."""
    func = migrations_option(func)
    func = click.option(
        "--database-url", envvar="DATABASE_URL", metavar="URL",
        help="postgresql://user[:password]@host:port/db [env DATABASE_URL; PGPASSWORD is honoured].",
    )(func)
    return debug_option(func)


def migrations_option(func):
    return click.option(
        "--migrations", "migrations_dir", envvar="DBCTL_MIGRATIONS", default=config.DEFAULT_MIGRATIONS,
        show_default=True, type=DIRECTORY, help="Migrations directory [env DBCTL_MIGRATIONS].",
    )(func)


class Directory(click.Path):
    """A directory option: not a file, and never empty (an empty DBCTL_MIGRATIONS= would mean the current one)."""

    def __init__(self):
        super().__init__(file_okay=False)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; give a directory, e.g. migrations", param, ctx)
        return super().convert(value, param, ctx)


DIRECTORY = Directory()


def debug_option(func):
    return click.option("--debug", is_flag=True, hidden=True, expose_value=False, help="Show tracebacks.")(func)


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")(func)


def say(message: str) -> None:
    click.echo(redact_line(message))


def warn(message: str) -> None:
    click.echo(redact_line(message), err=True)


def redact_line(message: str) -> str:
    """Passwords masked, control characters escaped: dbctl.urls.printable, which every printed line goes through."""
    from dbctl.urls import printable as printable_text

    return printable_text(message)


def printable(text: str) -> str:
    from dbctl.urls import printable as printable_text

    return printable_text(text)


# SQLSTATE -> what it means for a dbctl command, and what to do about it.
_CAUSES = {
    "25006": ("the database is read-only (a hot standby, or default_transaction_read_only is on)",
              "run it against the primary, or a database that accepts writes"),
    "42501": (None, "grant the role the privilege it names (e.g. GRANT CREATE ON SCHEMA public TO <role>, "
                    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO <role>) or use the database owner's role"),
    "53300": ("PostgreSQL refused another connection (too many connections)",
              "close idle sessions, or raise max_connections / the role's CONNECTION LIMIT"),
}


def describe_database_error(exc, action: str) -> str:
    """One line for a PostgreSQL error outside a migration: the real cause, and what to do."""
    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag else None) or " ".join(str(exc).split()) or type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None) or ""
    cause, fix = _CAUSES.get(sqlstate, (None, None))
    if sqlstate.startswith("08") or sqlstate.startswith("57P"):
        cause, fix = "the connection to PostgreSQL was lost", "check the server, then run it again"
    code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
    said = f"{cause}: {message}{code}" if cause else f"{message}{code}"
    return f"{action}: {said}; {fix}" if fix else f"{action}: {said}"


@contextmanager
def database_errors(action: str):
    """PostgreSQL errors while `action` as one clear DbctlError (exit 1), never `unexpected`."""
    from dbctl.engine import postgres
    from dbctl.errors import DbctlError

    try:
        yield
    except postgres.Error as exc:
        raise DbctlError(describe_database_error(exc, action)) from None


def load(migrations_dir: str):
    from dbctl.engine.source import load_migrations
    from dbctl.errors import ConfigError

    try:
        return load_migrations(migrations_dir)
    except OSError as exc:  # a name too long, a directory we may not read: the path is what to fix
        raise ConfigError(f"cannot read the migrations directory {printable(str(migrations_dir))[:200]}: "
                          f"{exc.strerror or exc}; check --migrations / DBCTL_MIGRATIONS") from None


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
                        type=SECONDS, help="Seconds to wait for another runner's migration lock.")(func)
    func = click.option("--wait-timeout", default=30.0, show_default=True, envvar="DBCTL_WAIT_TIMEOUT",
                        type=SECONDS, help="Seconds to wait for PostgreSQL to accept connections.")(func)
    return timeout_options(func)


def timeout_options(func):
    func = click.option("--statement-timeout", envvar="DBCTL_STATEMENT_TIMEOUT", metavar="DURATION", type=DURATION,
                        help="PostgreSQL statement_timeout per migration, e.g. 5min [env DBCTL_STATEMENT_TIMEOUT].")(func)
    func = click.option("--lock-timeout", envvar="DBCTL_LOCK_TIMEOUT", metavar="DURATION", type=DURATION,
                        help="PostgreSQL lock_timeout per migration, e.g. 5s [env DBCTL_LOCK_TIMEOUT].")(func)
    return func
