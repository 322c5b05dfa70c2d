"""What every command shares: the database options, the timeouts of a run, and printing that masks passwords."""

from __future__ import annotations

import errno
import math
import os
from contextlib import contextmanager

import click

from dbctl import config
from dbctl.text import quoted

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

    def convert(self, value, param, ctx):
        text = str(value).strip()
        milliseconds = config.duration_ms(text)
        if milliseconds is None:
            self.fail(f"{_shown(value)} is not a PostgreSQL duration; use a number and one of "
                      f"{', '.join(config.DURATION_UNITS_MS)} (e.g. 5s, 500ms, 15min; 0 turns it off)", param, ctx)
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


class Setting(click.Option):
    """An option that an environment variable can also set: every source is checked, whichever one wins.

    click converts only the winning value, so DBCTL_LOCK_WAIT_TIMEOUT=nan next to
    --lock-wait-timeout 5 went unseen; a variable set in a pod's spec is checked
    even when a flag typed into the pod overrides it (exit 2 naming the variable).
    Every option with `envvar=` is a Setting (tests/test_options_bad_values.py holds that).
    """

    def process_value(self, ctx, value):
        names = [self.envvar] if isinstance(self.envvar, str) else list(self.envvar or ())
        try:
            value = super().process_value(ctx, value)
        except click.BadParameter as exc:
            if ctx.get_parameter_source(self.name) != click.core.ParameterSource.ENVIRONMENT:
                raise
            given = next((n for n in names if os.environ.get(n)), names[0])
            raise click.BadParameter(exc.message, ctx, self, param_hint=given) from None
        for name in names:
            raw = os.environ.get(name)
            if not raw:  # empty is unset, as click reads it
                continue
            try:
                self.type_cast_value(ctx, self.type.split_envvar_value(raw) if self.multiple or self.nargs != 1
                                     else raw)
            except click.BadParameter as exc:  # the message shows the value as the type shows it (masked)
                given = ctx.get_parameter_source(self.name) == click.core.ParameterSource.COMMANDLINE
                also = f" (checked although {self.opts[0]} was given: fix or unset it)" if given else ""
                raise click.BadParameter(f"{exc.message}{also}", ctx, self, param_hint=name) from None
        return value


class CheckedUrl(click.ParamType):
    """A URL checked as the command will read it (without connecting), so every source of it is checked."""

    name = "url"

    def __init__(self, check: str):
        self.check = check  # "module:function" raising ConfigError, imported when used

    def convert(self, value, param, ctx):
        from dbctl.errors import ConfigError

        module, function = self.check.split(":")
        try:
            getattr(__import__(module, fromlist=[function]), function)(value)  # traced by -X importtime
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        return value


POSTGRES_URL = CheckedUrl("dbctl.urls:require_url")
REDIS_URL = CheckedUrl("dbctl.devenv.waiting:redis_address")


def _shown(value) -> str:
    return quoted(str(value), 60)


SECONDS = Seconds()
DURATION = PostgresDuration()
TABLE = TableName()


def database_options(func):
    """--database-url and --migrations, shared by every command that needs them."""
    func = migrations_option(func)
    func = click.option(
        "--database-url", envvar="DATABASE_URL", metavar="URL", type=POSTGRES_URL,
        help="postgresql://user[:password]@host:port/db [env DATABASE_URL; PGPASSWORD is honoured].", cls=Setting
    )(func)
    return debug_option(func)


def migrations_option(func):
    return click.option(
        "--migrations", "migrations_dir", envvar="DBCTL_MIGRATIONS", default=config.DEFAULT_MIGRATIONS,
        show_default=True, type=DIRECTORY, help="Migrations directory [env DBCTL_MIGRATIONS].", cls=Setting
    )(func)


class Directory(click.Path):
    """A directory option: not a file, and never empty (an empty DBCTL_MIGRATIONS= would mean the current one)."""

    def __init__(self):
        super().__init__(file_okay=False)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; give a directory, e.g. migrations", param, ctx)
        try:
            os.stat(value)
        except OSError as exc:  # a path the system cannot even look up is bad whichever source gave it
            if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL):
                self.fail(f"{_shown(value)} cannot be a directory: {exc.strerror}", param, ctx)
        except ValueError:  # a NUL byte
            self.fail(f"{_shown(value)} cannot be a directory: it holds a NUL byte", param, ctx)
        return super().convert(value, param, ctx)


DIRECTORY = Directory()


def debug_option(func):
    return click.option("--debug", is_flag=True, hidden=True, expose_value=False, help="Show tracebacks.")(func)


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")(func)


def say(message: str) -> None:
    click.echo(redact_line(message))


def say_lines(text: str) -> None:
    """Several lines (a table whose cells are escaped already): passwords masked once for the whole text
    and control characters escaped but newlines and tabs; say() on each line costs 0.1 ms a line."""
    from dbctl import urls

    click.echo(urls.printable(text))


def warn(message: str) -> None:
    click.echo(redact_line(message), err=True)


def redact_line(message: str) -> str:
    """Passwords masked, control characters escaped, one line (dbctl.urls.printable, which every printed line
    goes through): a newline in a file name or an escape sequence can never forge a line."""
    return printable(message)


def printable(text: str) -> str:
    from dbctl.urls import printable as printable_text

    return printable_text(text, one_line=True)


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
    sqlstate = getattr(exc, "pgcode", None) or ""
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


def lock_wait_option(default: float):
    """--lock-wait-timeout for commands that only read: how long a lock another session holds may hold them up."""
    return click.option("--lock-wait-timeout", default=default, show_default=True, envvar="DBCTL_LOCK_WAIT_TIMEOUT",
                        type=SECONDS, cls=Setting,
                        help="Seconds to wait for a lock another session holds on the history before giving up "
                             "and naming that session [env DBCTL_LOCK_WAIT_TIMEOUT].")


def run_options(func):
    """Timeouts of a run that changes the schema: migrate and rollback."""
    func = click.option("--lock-wait-timeout", default=300.0, show_default=True, envvar="DBCTL_LOCK_WAIT_TIMEOUT",
                        type=SECONDS, help="Seconds to wait for another runner's migration lock.", cls=Setting)(func)
    func = click.option("--wait-timeout", default=30.0, show_default=True, envvar="DBCTL_WAIT_TIMEOUT",
                        type=SECONDS, help="Seconds to wait for PostgreSQL to accept connections.", cls=Setting)(func)
    return timeout_options(func)


def timeout_options(func):
    func = click.option("--statement-timeout", envvar="DBCTL_STATEMENT_TIMEOUT", metavar="DURATION", type=DURATION,
                        help="PostgreSQL statement_timeout per migration, e.g. 5min [env DBCTL_STATEMENT_TIMEOUT].", cls=Setting)(func)
    func = click.option("--lock-timeout", envvar="DBCTL_LOCK_TIMEOUT", metavar="DURATION", type=DURATION,
                        help="PostgreSQL lock_timeout per migration, e.g. 5s [env DBCTL_LOCK_TIMEOUT].", cls=Setting)(func)
    return func
