"""Everything that talks to PostgreSQL, through `connection` (psycopg2).

History lives in `_sqlx_migrations`, exactly as sqlx keeps it (and never with
`success = false`, which sqlx reads as a dirty database). Every attempt, the
failed ones too, goes to dbctl's own `_dbctl_migration_attempts`.
"""

from __future__ import annotations

import re
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import psycopg2.errors

from dbctl import __version__
from dbctl.errors import ConfigError, ConnectError, LockTimeout, Refused
from dbctl.engine import connection as pg
from dbctl.engine.plan import AppliedRow, Attempt
from dbctl.engine.source import (Facts, FileChanged, Migration, Scan, Sending, Statement, batches,
                                 contents, lexical_facts, line_of_character)
from dbctl.urls import mask_url, redact
from dbctl.text import escaped, quoted

HISTORY_TABLE = "_sqlx_migrations"
ATTEMPTS_TABLE = "_dbctl_migration_attempts"
SEED_RUNS_TABLE = "_dbctl_seed_runs"  # written by dbctl.devdata.seeding
REVERTS_TABLE = "_dbctl_migration_reverts"  # written by `dbctl rollback`
OWN_TABLES = (HISTORY_TABLE, ATTEMPTS_TABLE, SEED_RUNS_TABLE, REVERTS_TABLE)

# Errors worth another try: the same SQL may well succeed a moment later.
TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout)
    "57P01",  # admin_shutdown (pg_terminate_backend, server stopping)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up)
    "53300",  # too_many_connections
}

# What a SQLSTATE that is not transient means for a run, and what to do about it.
_SETUP_HINTS = {
    "25006": "the database is read-only (a hot standby, or default_transaction_read_only is on); point "
             "DATABASE_URL at the primary, or ALTER DATABASE/ROLE ... SET default_transaction_read_only = off",
    "42501": "the user lacks a privilege dbctl needs (CREATE on the schema that gets _sqlx_migrations, and "
             "access to dbctl's tables); GRANT CREATE, USAGE ON SCHEMA <schema> TO <user>, or run as its owner",
    "3F000": "the search_path names no schema that exists, so there is nowhere to create _sqlx_migrations; "
             "fix search_path (ALTER ROLE <user> SET search_path = public) or create the schema",
    "3D000": "the database does not exist; create it (dbctl reset) or fix the URL",
    "42P01": "a table dbctl needs is missing or not on the search_path; check search_path",
    "55000": "PostgreSQL is not in a state to do this (a hot standby in recovery cannot take the migration "
             "lock or write); point DATABASE_URL at the primary",
    "57014": "a statement was cancelled (statement_timeout set for the role or database, or an administrator); "
             "check ALTER ROLE/DATABASE ... SET statement_timeout",
    "25P02": "a transaction failed earlier in the same session and was left open; run dbctl again",
    "53100": "the server is out of disk space; free space, then run dbctl again",
    "53200": "the server is out of memory; run dbctl again when it has recovered",
    "54000": "a server limit was exceeded; check the server's settings",
}


def is_transient(exc: BaseException) -> bool:
    """Worth another try: the connection went away, or the server asked us to wait or try again.

    An OperationalError without a SQLSTATE is libpq losing the connection; anything
    else with a SQLSTATE outside the transient ones is an answer that will not change.
    """
    if not isinstance(exc, pg.Error):
        return False
    sqlstate = exc.pgcode
    if sqlstate is None:
        return isinstance(exc, pg.OperationalError)
    return sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith("08")


def sqlstate_name(sqlstate: str | None) -> str:
    """PostgreSQL's condition name for a SQLSTATE (read_only_sql_transaction), or ''."""
    if not sqlstate:
        return ""
    from psycopg2.errorcodes import lookup  # its table is read only for an error's message

    try:
        return lookup(sqlstate).lower()
    except KeyError:
        return ""


def setup_hint(sqlstate: str) -> str:
    return _SETUP_HINTS.get(sqlstate, "")


def describe_sql_error(exc: BaseException, conn=None) -> str:
    """One line for an error PostgreSQL gave outside a migration's own SQL: what it said and what to do."""
    if not isinstance(exc, pg.Error):
        return " ".join(str(exc).split())
    diag = exc.diag
    message = diag.message_primary or " ".join(str(exc).split()) or type(exc).__name__
    if diag.message_detail:
        message += f"; {diag.message_detail}"
    sqlstate = exc.pgcode
    if not sqlstate:
        return f"PostgreSQL closed the connection: {message}"
    name = sqlstate_name(sqlstate)
    code = f"SQLSTATE {sqlstate}{', ' + name if name else ''}"
    hint = _SETUP_HINTS.get(sqlstate) or _SETUP_HINTS.get(sqlstate[:2] + "000")
    if sqlstate in ("25006", "55000") and conn is not None and _in_recovery(conn):
        hint = "this server is a hot standby (in recovery); point DATABASE_URL at the primary"
    if hint is None:
        hint = f"hint: {diag.message_hint}" if diag.message_hint else "fix the database or its settings"
    return f"PostgreSQL refused: {message} ({code}); {hint}"


def _in_recovery(conn) -> bool:
    if conn.closed or conn.broken:
        return False
    try:
        if conn.info.transaction_status == pg.INERROR:
            conn.execute("ROLLBACK")
        return bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])
    except pg.Error:
        return False


HISTORY_DDL = f"""
CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)"""

# The attempts table's outcomes, in its DDL and in the upgrade of tables older dbctl made.
OUTCOME_CHECK = "CHECK (outcome IN ('success', 'failed', 'retried', 'interrupted', 'lost'))"

ATTEMPTS_DDL = f"""
CREATE TABLE IF NOT EXISTS {ATTEMPTS_TABLE} (
    id BIGSERIAL PRIMARY KEY,
    version BIGINT NOT NULL,
    description TEXT NOT NULL,
    checksum BYTEA NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL CONSTRAINT {ATTEMPTS_TABLE}_outcome_check {OUTCOME_CHECK},
    started_at TIMESTAMPTZ NOT NULL,
    duration_ns BIGINT NOT NULL,
    runner TEXT NOT NULL,
    dbctl_version TEXT NOT NULL,
    sqlstate TEXT,
    error_message TEXT,
    error_position INTEGER,
    error_line INTEGER,
    actor TEXT
);
CREATE INDEX IF NOT EXISTS {ATTEMPTS_TABLE}_version_idx ON {ATTEMPTS_TABLE} (version, id DESC)"""

_INSERT_APPLIED = f"""
WITH history AS (
    INSERT INTO {HISTORY_TABLE} (version, description, success, checksum, execution_time)
    VALUES (%(version)s, %(description)s, TRUE, %(checksum)s, %(duration_ns)s)
)
INSERT INTO {ATTEMPTS_TABLE}
    (version, description, checksum, attempt, outcome, started_at, duration_ns, runner, dbctl_version, actor)
VALUES (%(version)s, %(description)s, %(checksum)s, %(attempt)s, 'success', %(started_at)s,
        %(duration_ns)s, %(runner)s, %(dbctl_version)s, %(actor)s)"""

_INSERT_FAILED = f"""
INSERT INTO {ATTEMPTS_TABLE}
    (version, description, checksum, attempt, outcome, started_at, duration_ns, runner, dbctl_version,
     sqlstate, error_message, error_position, error_line, actor)
VALUES (%(version)s, %(description)s, %(checksum)s, %(attempt)s, %(outcome)s, %(started_at)s,
        %(duration_ns)s, %(runner)s, %(dbctl_version)s, %(sqlstate)s, %(error_message)s,
        %(error_position)s, %(error_line)s, %(actor)s)"""


@dataclass
class SqlFailure:
    """What PostgreSQL said about a failed migration, located in its file."""

    migration: Migration
    sqlstate: str | None
    message: str
    position: int | None  # 1-based character offset in the file
    line: int | None
    transient: bool
    connection_lost: bool
    invalid_indexes: tuple = ()  # INVALID indexes the file left (no-transaction files)
    stayed: str | None = None  # what the file left behind, when dbctl refused it after it ran

    def describe(self) -> str:
        where = f"{self.migration.path}:{self.line}" if self.line else str(self.migration.path)
        code = f" (SQLSTATE {self.sqlstate})" if self.sqlstate else ""
        return f"{where}: {self.message}{code}"


# As sqlx connects: text comes back as str whatever the database's encoding (SQL_ASCII would give bytes).
CLIENT_ENCODING = "UTF8"


def connect(url: str, *, application_name: str = "dbctl", timeout: float = 5) -> pg.Connection:
    """An autocommit connection, or ConnectError with one readable line."""
    try:
        return pg.connect(url, timeout=timeout, application_name=application_name[:63],
                          client_encoding=CLIENT_ENCODING)
    except pg.Error as exc:
        raise connect_failure(exc, url) from None


# libpq's own words for a connection string or option value it refuses, whichever server it is for
# ('invalid dsn: ...', 'connection to server at "h", port 1 failed: invalid sslmode value: "x"'); not the
# server's (those say FATAL) nor a server's malformed answer (invalid SCRAM response).
_MALFORMED = re.compile(r"(?:^|failed: )(?:invalid (?:dsn|uri|port number|connection option|[a-z_]+ value"
                        r"|require_auth method)|could not match \d+ host names|could not parse network address"
                        r"|[a-z_]+ value \S+ invalid when)")


def connect_failure(exc: Exception, url: str, suffix: str = "") -> ConnectError | ConfigError:
    """The error to raise for a failed connection, one line: ConfigError (exit 2, waiting cannot help)
    when libpq refused the URL itself, else ConnectError whose `transient` says whether waiting could."""
    text = " ".join(str(exc).split())
    if _MALFORMED.search(text.lower()):
        return ConfigError(f"database URL {mask_url(url)} is malformed: {redact(text, url)}; fix the URL "
                           "(DATABASE_URL or --database-url)" + suffix)
    message, transient = describe_connect_error(text, url)
    return ConnectError(message + suffix, transient)


def describe_connect_error(text: str, url: str) -> tuple[str, bool]:
    """(one-line message, whether waiting could help) for a connection the server side refused or never
    answered: `text` is the driver's message on one line."""
    where = mask_url(url)
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return f"PostgreSQL rejected the credentials for {where}; check the user and password (PGPASSWORD)", False
    if "role" in lowered and "does not exist" in lowered:
        return f"PostgreSQL has no such role for {where}; check the user name in the URL", False
    if "database" in lowered and "does not exist" in lowered:
        return f"database in {where} does not exist; create it (dbctl reset) or fix the URL", True
    if "too many connections for role" in lowered or "too many connections for database" in lowered:
        return (f"PostgreSQL refused a connection to {where}: {redact(text, url)}; the role's or database's "
                "CONNECTION LIMIT is reached: end other sessions or raise it (ALTER ROLE ... CONNECTION LIMIT)"), False
    if "permission denied for database" in lowered:
        return (f"PostgreSQL refused a connection to {where}: {redact(text, url)}; "
                "GRANT CONNECT ON DATABASE <name> TO <user>"), False
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        return f"unknown host in {where}; check the host name", True
    if "connection refused" in lowered or "no such file or directory" in lowered:
        return f"nothing is listening at {where}; is PostgreSQL running?", True
    if "timeout" in lowered:
        return f"connecting to {where} timed out; check the host, port and network", True
    if "starting up" in lowered or "shutting down" in lowered or "recovery" in lowered:
        return f"PostgreSQL at {where} is not accepting connections yet: {redact(text, url)}", True
    return f"cannot connect to {where}: {redact(text, url)}", True


def wait_for_connection(url: str, timeout: float, *, application_name: str = "dbctl", on_wait=None):
    """Connect, retrying while the failure is one that time can fix (server starting, db not created)."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            return pg.connect(url, timeout=min(5, int(timeout) or 1), application_name=application_name[:63],
                              client_encoding=CLIENT_ENCODING)
        except pg.Error as exc:
            error = connect_failure(exc, url)
            remaining = deadline - time.monotonic()
            transient = isinstance(error, ConnectError) and error.transient
            if not transient or remaining <= 0:
                if transient and timeout > 0:
                    error = ConnectError(f"{error} (gave up after {timeout:g}s)")
                raise error from None
            if on_wait:
                on_wait(str(error))
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 2.0)


def lock_key(database: str) -> int:
    """sqlx's advisory lock id, so dbctl and a sqlx backend exclude each other."""
    return 0x3D32AD9E * zlib.crc32(database.encode())


def current_database(conn) -> str:
    """The database the session is in: libpq's dbname for the connection, which the server connected
    to by exactly that name (no round trip)."""
    return conn.info.dbname


def try_lock(conn, key: int) -> bool:
    return conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]


def unlock(conn, key: int) -> None:
    """Release the advisory lock; a lost connection has released it already.

    A transaction still open here (a run interrupted mid-migration) is rolled
    back first: the unlock must not wait for the session to close.
    """
    if not end_transaction(conn):
        return
    try:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    except pg.Error:
        pass  # closing the session releases it anyway


def end_transaction(conn) -> bool:
    """Roll back whatever transaction the session has open; False when the session is unusable."""
    if conn.closed or conn.broken:
        return False
    try:
        if conn.info.transaction_status != pg.IDLE:
            conn.execute("ROLLBACK")
        return conn.info.transaction_status == pg.IDLE
    except pg.Error:
        return False


def is_applied(conn, version: int) -> bool:
    return bool(conn.execute(f"SELECT EXISTS (SELECT FROM {HISTORY_TABLE} WHERE version = %s)",
                             (version,)).fetchone()[0])


def lock_holder(conn, key: int) -> str | None:
    """Who holds the advisory lock: pid, application, client and since when."""
    row = conn.execute(
        """SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start, a.state
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 1
           LIMIT 1""",
        (key >> 32, key & 0xFFFFFFFF),
    ).fetchone()
    if row is None:
        return None
    pid, app, client, started, state = row
    who = app or "an unnamed client"
    source = f" from {client}" if client else ""
    since = f", connected since {started:%H:%M:%S}" if started else ""
    return f"pid {pid} ({who}{source}{since}, {state})"


@contextmanager
def bounded_waits(conn, seconds: float, what: str):
    """Every lock the session waits for in the block gives up after `seconds` (PostgreSQL's lock_timeout),
    ending in LockTimeout: one line naming the session in the way. Set for the session, so it holds for
    every statement of the block (a read behind `LOCK TABLE _sqlx_migrations` never waits forever); reset
    after, so a migration's own lock_timeout stays what the user chose."""
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (lock_timeout_value(seconds),))
    try:
        with explained_lock_timeout(conn, seconds, what):
            yield
    finally:
        if not (conn.closed or conn.broken) and conn.info.transaction_status == pg.IDLE:
            try:
                conn.execute("RESET lock_timeout")
            except pg.Error:
                pass  # the session is going away; what ended the block is the error worth reporting


def lock_timeout_value(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def read_waiting_at_most(conn, query: str, seconds: float):
    """`query` (no parameters) in one message whose lock_timeout is `seconds`, local to the message's
    implicit transaction: one round trip, and nothing to reset after. Returns the cursor."""
    return conn.execute("SELECT set_config('lock_timeout', %s, true);\n" + query.replace("%", "%%"),
                        (lock_timeout_value(seconds),))


@contextmanager
def explained_lock_timeout(conn, seconds: float, what: str):
    """A lock_timeout in the block becomes LockTimeout: one line naming the session in the way."""
    try:
        yield
    except psycopg2.errors.LockNotAvailable:
        blocker = blocking_session(conn)
        raise LockTimeout(f"gave up after {seconds:g}s waiting for a lock to {what}: {blocker}") from None


# Lock modes that block a read (ACCESS SHARE) or dbctl's own writes to its tables (ROW EXCLUSIVE).
_BLOCKING_MODES = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")


def blocking_session(conn) -> str:
    """Who holds (or queues first for) a lock in this database that blocks reads or dbctl's writes:
    pid, application, state and for how long, with what to do; dbctl's own tables first."""
    row = conn.execute(
        """SELECT a.pid, a.application_name, a.state, l.mode, l.granted, l.relation::regclass::text,
                  extract(epoch FROM now() - coalesce(a.xact_start, a.query_start, a.backend_start))::bigint
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'relation' AND l.pid <> pg_backend_pid() AND l.mode = ANY(%s)
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND (l.granted OR l.mode = 'AccessExclusiveLock')
           ORDER BY l.relation::regclass::text = ANY(%s) DESC, l.granted DESC, l.mode = 'AccessExclusiveLock' DESC,
                    a.xact_start NULLS LAST
           LIMIT 1""",
        (list(_BLOCKING_MODES), list(OWN_TABLES)),
    ).fetchone()
    if row is None:
        return "the session holding it has ended; run the command again"
    pid, app, state, mode, granted, relation, seconds = row
    holds = "holds" if granted else "waits first in line for"
    return (f"pid {pid} ({quoted(app) if app else 'an unnamed client'}, {state or 'unknown state'} for {seconds}s) "
            f"{holds} {mode} on {escaped(relation)}; wait for it to finish, or end it with "
            f"SELECT pg_terminate_backend({pid})")


def history_tables_exist(conn) -> tuple[bool, bool]:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL", (HISTORY_TABLE, ATTEMPTS_TABLE)
    ).fetchone()
    return bool(row[0]), bool(row[1])


def ensure_history_tables(conn) -> None:
    """Create the history tables if missing; call with the advisory lock held."""
    refuse_second_history_table(conn)
    if not all(history_tables_exist(conn)):
        conn.execute(f"{HISTORY_DDL};\n{ATTEMPTS_DDL}")  # one message: PostgreSQL runs it as one transaction
    _upgrade_attempts_table(conn)


def refuse_second_history_table(conn) -> None:
    """Refuse when there is, or would be, more than one `_sqlx_migrations` in the database.

    CREATE TABLE IF NOT EXISTS (sqlx's, and ours) looks only in the schema it would
    create the table in: the first schema of the search_path that exists. When a
    schema named after the role ("$user") appears later, that is no longer the
    schema holding the history, and a second, empty table would be made there
    and every migration applied again. So every schema is looked at first.
    """
    here, path, found = conn.execute(
        """SELECT current_schema(), current_setting('search_path'),
                  array(SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.relname = %s AND n.nspname !~ '^pg_(toast_)?temp_' ORDER BY 1)""",
        (HISTORY_TABLE,)).fetchone()
    if not found or found == [here]:
        return
    tables = " and ".join(f"{_quoted(schema)}.{HISTORY_TABLE}" for schema in found)
    if len(found) > 1:
        raise Refused(
            f"the database has {len(found)} history tables, {tables}; dbctl and sqlx read only the first one on "
            f"the search_path ({path}), so one of them is a history nobody reads: keep the one that matches the "
            f"schema, drop the other (DROP TABLE <schema>.{HISTORY_TABLE}), then run dbctl again; nothing was applied"
        )
    where = f"schema {_quoted(here)}" if here else "no schema (none on the search_path exists)"
    raise Refused(
        f"the history table is {tables}, but the search_path ({path}) would make dbctl (and sqlx) create a second "
        f"one in {where} and apply every migration again; put {_quoted(found[0])} first on the search_path (ALTER ROLE "
        f"<user> SET search_path = {_quoted(found[0])}, ...) or move the table there (ALTER TABLE "
        f"{_quoted(found[0])}.{HISTORY_TABLE} SET SCHEMA ...), then run dbctl again; nothing was applied"
    )


def _quoted(name: str) -> str:
    """A schema name as SQL spells it: quoted only when it must be."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


def _upgrade_attempts_table(conn) -> None:
    """Attempts tables made by older dbctl get `actor` and the `interrupted` and `lost` outcomes (we hold
    the lock)."""
    has_actor, knows_interrupted = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'actor' "
        "AND NOT attisdropped), EXISTS (SELECT FROM pg_constraint WHERE conrelid = to_regclass(%s) "
        "AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%%''lost''%%')", (ATTEMPTS_TABLE, ATTEMPTS_TABLE)
    ).fetchone()
    if not has_actor:
        conn.execute(f"ALTER TABLE {ATTEMPTS_TABLE} ADD COLUMN IF NOT EXISTS actor TEXT")
    if not knows_interrupted:
        conn.execute(f"ALTER TABLE {ATTEMPTS_TABLE} DROP CONSTRAINT IF EXISTS {ATTEMPTS_TABLE}_outcome_check, "
                     f"ADD CONSTRAINT {ATTEMPTS_TABLE}_outcome_check {OUTCOME_CHECK}")


# The columns sqlx creates (and reads): a table of another shape is not a history dbctl may read or extend.
HISTORY_COLUMNS = {"version": "bigint", "description": "text", "installed_on": "timestamp with time zone",
                   "success": "boolean", "checksum": "bytea", "execution_time": "bigint"}


_HISTORY_ATTRIBUTES = """SELECT attname, format_type(atttypid, atttypmod), attnotnull AND NOT atthasdef AND attidentity = ''
FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"""


def history_shape_problems(conn) -> list[str]:
    """How the existing history table differs from sqlx's (missing or retyped columns, a required column
    sqlx does not fill); empty when it is sqlx's shape or absent."""
    return shape_problems(conn.execute(_HISTORY_ATTRIBUTES, (HISTORY_TABLE,)).fetchall())


def shape_problems(rows) -> list[str]:
    """history_shape_problems from the table's (name, type, required) attribute rows."""
    if not rows:
        return []
    found = {name: (kind, required) for name, kind, required in rows}
    problems = [f"column {name} is missing" for name in HISTORY_COLUMNS if name not in found]
    problems += [f"column {name} is {found[name][0]}, not {kind}" for name, kind in HISTORY_COLUMNS.items()
                 if name in found and found[name][0] != kind]
    problems += [f"column {escaped(name)} is NOT NULL without a default, and sqlx does not fill it"
                 for name, (_, required) in found.items() if name not in HISTORY_COLUMNS and required]
    return problems


def check_history_shape(conn, problems: list[str] | None = None) -> None:
    """Refused (naming the columns) when the existing history table is not sqlx's shape: the table is the
    cause, so no migration file is blamed and no attempt recorded against one."""
    problems = history_shape_problems(conn) if problems is None else problems
    if problems:
        raise Refused(f"{HISTORY_TABLE} is not the history table sqlx makes: {'; '.join(problems)}; nothing was "
                      f"run. Restore sqlx's columns, or rename the table (ALTER TABLE {HISTORY_TABLE} RENAME TO ...) "
                      "if it is not a migration history")


_HISTORY_ROWS = f"""SELECT version, description, checksum, success, installed_on, execution_time
FROM {HISTORY_TABLE} ORDER BY version"""


def _applied_rows(rows) -> list[AppliedRow]:
    """The history as read by _HISTORY_ROWS."""
    return [AppliedRow(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) for r in rows]


def read_history(conn) -> list[AppliedRow]:
    if not history_tables_exist(conn)[0]:
        return []
    check_history_shape(conn)
    return _applied_rows(conn.execute(_HISTORY_ROWS).fetchall())


# The history as sqlx reads it, with whether dbctl's attempts table exists.
_QUICK_HISTORY = f"""SELECT version, description, checksum, success, to_regclass('{ATTEMPTS_TABLE}') IS NOT NULL
FROM {HISTORY_TABLE} ORDER BY version"""


def quick_history(conn, lock_wait: float) -> list[AppliedRow] | None:
    """The history in one round trip, without the migration lock; None when it cannot be read that way
    (no history or attempts table yet, a table of another shape, a lock held longer than `lock_wait`
    seconds, the connection lost): the caller then takes the careful way, which explains any of those.
    Reading without the lock is safe: a history row appears only when its migration commits."""
    try:
        rows = read_waiting_at_most(conn, _QUICK_HISTORY, lock_wait).fetchall()
    except pg.Error:
        return None
    if not rows or not rows[0][4]:
        return None
    return [AppliedRow(version, description, bytes(checksum), success)
            for version, description, checksum, success, _ in rows]


def read_last_attempts(conn) -> dict[int, Attempt]:
    """The newest attempt per version, for status and the `failed` state."""
    if not history_tables_exist(conn)[1]:
        return {}
    rows = conn.execute(
        f"""SELECT DISTINCT ON (version) version, outcome, started_at, duration_ns, runner,
                   CASE WHEN error_message IS NULL THEN NULL
                        ELSE coalesce('line ' || error_line || ': ', '') || error_message
                             || coalesce(' (SQLSTATE ' || sqlstate || ')', '') END
            FROM {ATTEMPTS_TABLE} ORDER BY version, id DESC"""
    ).fetchall()
    return {r[0]: Attempt(*r) for r in rows}


def set_timeouts(conn, lock_timeout: str | None, statement_timeout: str | None, local: bool) -> None:
    for name, value in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)):
        if value is not None:
            conn.execute("SELECT set_config(%s, %s, %s)", (name, value, local))


def check_setting(conn, name: str, value: str) -> None:
    """Let PostgreSQL validate a timeout value before any migration runs."""
    with conn.transaction():
        conn.execute("SELECT set_config(%s, %s, true)", (name, value))


def apply_migration(conn, migration: Migration, *, attempt: int, runner: str,
                    lock_timeout: str | None = None, statement_timeout: str | None = None,
                    actor: str | None = None, durable: bool = True, facts: Facts | None = None,
                    invalid_before: set[str] | None = None) -> int:
    """Run one migration and record it, the way sqlx does; returns its duration in nanoseconds.

    The file is sent as ONE simple-protocol query, as sqlx sends it. Transactional:
    inside a transaction together with the history row and the attempt row. `--
    no-transaction`: alone (PostgreSQL runs a query of several statements as one
    implicit transaction), then the rows. A file's own COMMIT or ROLLBACK does to
    dbctl's transaction what it does to sqlx's (migrator warns about it first).
    Raises MigrationError (carrying a SqlFailure that names the failing line).

    durable=False commits without waiting for the WAL flush (synchronous_commit
    off, still atomic). The caller makes the last commit of a run durable,
    which flushes every earlier one too: the WAL is flushed in order.
    `facts` is source.lexical_facts of the file, when the caller has it already.
    A no-transaction file is recorded only when it leaves no INVALID index that
    was not in `invalid_before` or that it names (an earlier failed CREATE INDEX
    CONCURRENTLY ... IF NOT EXISTS would be skipped, not rebuilt).
    """
    started_at = datetime.now(timezone.utc)
    start = time.perf_counter_ns()
    row = {
        "version": migration.version, "description": migration.description,
        "checksum": migration.checksum, "attempt": attempt, "started_at": started_at,
        "runner": runner, "dbctl_version": __version__, "actor": actor,
    }
    try:
        if migration.no_tx:
            _run_outside_transaction(conn, migration, lock_timeout, statement_timeout)
        elif len(migration.raw) <= ONE_MESSAGE_LIMIT and _one_message_fits(facts or lexical_facts(migration.raw)):
            _apply_in_one_message(conn, migration, row, lock_timeout, statement_timeout, durable)
            row["duration_ns"] = time.perf_counter_ns() - start
        else:  # large, or open at its end (our appended text would join it): one message per step, as sqlx
            _in_transaction(conn, migration, lock_timeout, statement_timeout, durable,
                            _file_sender(conn, migration, facts),
                            lambda: conn.execute(_INSERT_APPLIED, {**row, "duration_ns": time.perf_counter_ns() - start}),
                            facts)
            row["duration_ns"] = time.perf_counter_ns() - start
    except MigrationError as exc:
        raise _located(conn, migration, exc.failure, lock_timeout, statement_timeout) from exc.__cause__
    if migration.no_tx:
        left = invalid_indexes_left(conn, migration, invalid_before or set())
        if left:
            raise MigrationError(SqlFailure(
                migration, None, "the file ran, but an index it makes is INVALID, so it was not recorded as applied",
                None, None, False, False, tuple(left)))
        row["duration_ns"] = time.perf_counter_ns() - start
        _record_outside_transaction(conn, migration, _INSERT_APPLIED, row)
    return row["duration_ns"]


def invalid_indexes_left(conn, migration: Migration, before: set[str]) -> list[InvalidIndex]:
    """Invalid indexes that are new since `before` or that the file names (IF NOT EXISTS skips those)."""
    if conn.closed or conn.broken:
        return []
    text = bytes(migration.raw).lower()
    return [ix for ix in invalid_indexes(conn) if ix.name not in before or _names(text, ix)]


def left_message(left: list[InvalidIndex]) -> str:
    return "; ".join(ix.describe() for ix in left)


def _names(text: bytes, index: InvalidIndex) -> bool:
    bare = index.name.rsplit(".", 1)[-1].strip('"').lower()
    bare = re.sub(r"_cc(new|old)[0-9]*\Z", "", bare)
    return re.search(rb"(?<![\w$])" + re.escape(bare.encode()) + rb"(?![\w$])", text) is not None


# Files up to this size go to PostgreSQL in one message with BEGIN, their history rows and COMMIT
# (one round trip). Larger ones are sent alone, so the process never holds a second copy of them.
ONE_MESSAGE_LIMIT = 1 << 20

_ASYNC_COMMIT = "SET LOCAL synchronous_commit = off"

# The server's own measure of the migration: statement_timestamp() is when the message arrived.
_SERVER_DURATION_NS = "(extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1e9)::bigint"


def _one_message_fits(facts: Facts) -> bool:
    """True when the file ends outside any quote, comment, parenthesis or routine body (so our appended
    statements stay apart) and holds no COMMIT/ROLLBACK of its own (whose effect on the migration's
    transaction is checked between the file and its history row, which one message cannot do)."""
    return facts.closed and facts.transaction_control is None


def _apply_in_one_message(conn, migration: Migration, row: dict, lock_timeout, statement_timeout,
                          durable: bool = True) -> None:
    """BEGIN, the file, its history rows and COMMIT as one simple-protocol message: one round trip.

    PostgreSQL parses the whole message first and stops at the first error, so
    either all of it commits or nothing does (unless the file commits by itself,
    as it would under sqlx). Values are quoted by psycopg2 (mogrify).
    Measured with 1,000 files (bench/): this, not the server, was what separated
    dbctl from plain psql.
    """
    quote = _quoter(conn)
    prefix = _transaction_prefix(quote, lock_timeout, statement_timeout, durable)
    record = quote(_INSERT_APPLIED.replace("%(duration_ns)s", _SERVER_DURATION_NS), row)
    message = b"".join((prefix.encode(), _contents(migration), f"\n;\n{record};\nCOMMIT".encode()))
    try:
        conn.execute(message)
    except pg.Error as exc:
        failure = failure_of(exc, conn, migration, -len(prefix))
        if failure.position is not None and not 0 < failure.position <= _characters(migration.raw):
            failure = replace(failure, position=None, line=None)  # in our own statements, not the file
        _rollback_quietly(conn, failure)
        raise MigrationError(failure) from exc


def _quoter(conn):
    """`quote(query, params)`: the query with its parameters as SQL literals, as psycopg2 would send it."""
    cursor = conn.cursor()
    return lambda query, params: cursor.mogrify(query, params).decode()


def _transaction_prefix(quote, lock_timeout, statement_timeout, durable: bool) -> str:
    return "BEGIN;\n" + ("" if durable else _ASYNC_COMMIT + ";\n") + "".join(
        quote("SELECT set_config(%s, %s, true);\n", (name, value))
        for name, value in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout))
        if value is not None
    )


def _in_transaction(conn, migration: Migration, lock_timeout, statement_timeout, durable: bool, send, record,
                    facts: Facts | None = None) -> None:
    """BEGIN, the file, its history change, COMMIT, as separate messages (as sqlx sends them); ROLLBACK after
    a failure.

    Plain BEGIN/COMMIT rather than Connection.transaction(): a file may end the
    transaction itself, and what follows must then behave as it does under sqlx,
    except that the history change is refused when the server says the file
    rolled the migration's transaction back (see _refuse_undone_transaction).
    """
    conn.execute(_transaction_prefix(_quoter(conn), lock_timeout, statement_timeout, durable))
    try:
        xid = conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        send()
        _refuse_undone_transaction(conn, migration, xid, facts)
        record()
        conn.execute("COMMIT")
    except MigrationError as exc:
        _rollback_quietly(conn, exc.failure)
        raise
    except pg.Error as exc:  # our own statements (the history rows)
        failure = replace(failure_of(exc, conn, migration), position=None, line=None)
        _rollback_quietly(conn, failure)
        raise MigrationError(failure) from exc


def _refuse_undone_transaction(conn, migration: Migration, xid: str, facts: Facts | None) -> None:
    """Refuse to write the history change when the file itself rolled back the migration's transaction.

    PostgreSQL knows what became of the transaction dbctl opened (pg_xact_status of
    its id): still in progress and open in this session is the normal case; committed
    by the file's own COMMIT is recorded as sqlx records it (what ran is committed);
    rolled back (the file's ROLLBACK or ABORT), prepared (PREPARE TRANSACTION), or
    committed but followed by a ROLLBACK of the file's own, is not: its history would
    say applied (or reverted) while the schema says otherwise. sqlx records it anyway.
    """
    status = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()[0]
    open_here = conn.info.transaction_status == pg.INTRANS
    facts = facts or lexical_facts(migration.raw)
    if status == "in progress" and open_here or status == "committed" and facts.rollback is None:
        return
    line, statement = facts.rollback or facts.transaction_control or (None, "transaction control")
    where = f" at line {line}" if line else ""
    if status == "in progress":
        what = f"its own {statement}{where} left the migration's transaction prepared, neither committed nor " \
               "rolled back (COMMIT PREPARED or ROLLBACK PREPARED it by hand)"
    elif status == "committed":
        what = (f"its own COMMIT ended the migration's transaction and its {statement}{where} then rolled back "
                "what followed")
    else:
        what = f"its own {statement}{where} rolled back work of the migration's transaction"
    action = "reverted" if migration.kind == "down" else "applied"
    stayed = (f"what its {statement} undid is undone; statements after it ran outside the migration's transaction "
              "and stay: check them by hand, and remove the file's own BEGIN/COMMIT/ROLLBACK (dbctl and sqlx "
              "already run it in a transaction)")
    raise MigrationError(SqlFailure(
        migration, None, f"{what}, so dbctl did not record it as {action} (sqlx would, and the history would "
        "then contradict the schema)", None, None, False, False, stayed=stayed))


def _file_sender(conn, migration: Migration, facts: Facts | None):
    """How a transactional file goes to PostgreSQL inside the transaction the caller opened.

    A large file of several statements with no transaction control of its own goes
    as whole statements, about ONE_MESSAGE_LIMIT bytes a message: inside an explicit
    transaction that is the same as one query (a syntax error PostgreSQL finds
    before running a message rolls back the same transaction), and neither this
    process nor libpq ever holds the whole file. Anything else goes as one query.
    """
    if len(migration.raw) > ONE_MESSAGE_LIMIT:
        facts = facts or lexical_facts(migration.raw)
        if facts.closed and not facts.transaction_control and facts.statements > 1:
            return lambda: _run_in_batches(conn, migration)
    return lambda: _execute(conn, migration, _contents(migration))


def _run_in_batches(conn, migration: Migration, limit: int = ONE_MESSAGE_LIMIT) -> None:
    """Whole statements, about `limit` bytes a message, covering every byte of the file in order (the
    comments between statements, and the text after the last one, go too): what runs is the file.

    Each message's bytes are read once (Sending): scanned before they are sent, and the
    checksum of all of them compared with the one taken at load before the last
    message is sent, so a file changed in between is refused before anything commits.
    """
    sending = Sending(migration.path, migration.raw, migration.checksum)
    try:
        for batch in batches(migration.raw, limit):
            last = batch.end == len(migration.raw)
            query = sending.finish() if last else sending.take(batch.end)
            try:
                _execute(conn, migration, query, batch)
            except MigrationError:
                if not last:  # the error may come from bytes changed on disk: then that is what to report
                    sending.finish()
                raise
    except FileChanged as exc:
        raise _changed(migration, exc) from None


def _contents(migration: Migration) -> bytes:
    """The whole file for one query, checked against its checksum (MigrationError when it changed)."""
    try:
        return contents(migration.path, migration.raw, migration.checksum)
    except FileChanged as exc:
        raise _changed(migration, exc) from None


def _changed(migration: Migration, exc: FileChanged) -> MigrationError:
    return MigrationError(SqlFailure(
        migration, None, f"{exc}; save it again, or wait until it is written, then run dbctl again", None, None,
        False, False, stayed=f"nothing of {migration.label} was applied"))


def _rollback_quietly(conn, failure: SqlFailure) -> None:
    if not failure.connection_lost and conn.info.transaction_status != pg.IDLE:
        try:
            conn.execute("ROLLBACK")
        except pg.Error:
            pass


class MigrationError(Exception):
    def __init__(self, failure: SqlFailure):
        super().__init__(failure.describe())
        self.failure = failure


def _run_outside_transaction(conn, migration: Migration, lock_timeout, statement_timeout) -> None:
    """A `-- no-transaction` file as one query, as sqlx sends it: session timeouts, reset afterwards."""
    set_timeouts(conn, lock_timeout, statement_timeout, local=False)
    try:
        _execute(conn, migration, _contents(migration))
    except MigrationError as exc:
        # The file's own BEGIN left its transaction open and failed: end it, or nothing after it can run
        # (the history of the attempt, the re-run that finds the line).
        _rollback_quietly(conn, exc.failure)
        raise
    finally:
        if not (conn.closed or conn.broken):
            try:
                conn.execute("RESET lock_timeout; RESET statement_timeout")
            except pg.Error:
                pass


def _record_outside_transaction(conn, migration: Migration, query: str, row: dict) -> None:
    """The history row of a no-transaction file that ran: a failure to write it is that file's failure
    (the file may have changed the session: SET ROLE, default_transaction_read_only), not a lost setup."""
    try:
        conn.execute(query, row)
    except pg.Error as exc:
        failure = replace(failure_of(exc, conn, migration), position=None, line=None)
        failure = replace(failure, message=f"the file ran, but its history row could not be written: "
                                           f"{failure.message}")
        _rollback_quietly(conn, failure)
        raise MigrationError(failure) from exc


def _located(conn, migration: Migration, failure: SqlFailure, lock_timeout, statement_timeout) -> MigrationError:
    """The failure with the failing statement's line, also when PostgreSQL gave no position.

    A file runs as one query (one round trip: with 1,000 files this is what
    keeps dbctl at or below plain psql, see bench/). When the error has no
    position and the file holds several statements, its statements are run again
    one by one in a transaction that is always rolled back, to name the line
    (the file's own BEGIN/COMMIT/ROLLBACK are left out of that re-run, so it
    commits nothing). Not after a statement timeout, a lost connection or other
    transient errors; a lock timeout is re-run (it is short by design, and which
    statement waited is what people need to know).
    """
    if failure.position or failure.stayed:  # located already, or dbctl's own refusal
        return MigrationError(failure)
    statements_ = iter(Scan(migration.raw))
    first, second = next(statements_, None), next(statements_, None)
    if first is None:
        return MigrationError(replace(failure, line=None))
    if second is None:  # one statement: that is the line
        return MigrationError(replace(failure, line=first.line))
    unlocatable = failure.connection_lost or failure.sqlstate == "57014" or (
        failure.transient and failure.sqlstate != "55P03")
    if unlocatable:  # the statement's line is unknown: name none rather than the first one
        return MigrationError(replace(failure, line=None))
    try:
        with conn.transaction():
            set_timeouts(conn, lock_timeout, statement_timeout, local=True)
            for statement in Scan(migration.raw):
                query = migration.raw[statement.start:statement.end]  # read again: scanned again below
                again = list(Scan(query))
                if len(again) != 1 or again[0].transaction_control or again[0].head[:1] in ((b"BEGIN",), (b"START",)):
                    continue
                _execute(conn, migration, query, statement)
            raise pg.Rollback()
    except MigrationError as exc:
        if exc.failure.sqlstate == failure.sqlstate:
            return MigrationError(replace(failure, line=exc.failure.line, position=exc.failure.position))
    except pg.Error:
        pass
    return MigrationError(replace(failure, line=None))


def _execute(conn, migration: Migration, query: bytes, statement: Statement | None = None) -> None:
    """Run `query` (the whole file, or one of its statements) and locate a failure in the file."""
    try:
        conn.execute(query)
    except pg.Error as exc:
        raise MigrationError(failure_of(exc, conn, migration, statement=statement, query=query)) from exc


def _characters(raw, chunk: int = 1 << 20) -> int:
    """Characters in UTF-8 bytes: every byte but the continuation bytes (0x80-0xBF) starts one."""
    total = 0
    for at in range(0, len(raw), chunk):
        piece = raw[at:at + chunk]
        total += len(piece) - sum(piece.count(bytes((b,))) for b in range(0x80, 0xC0))
    return total


def failure_of(exc: pg.Error, conn, migration: Migration, offset: int = 0, *,
               statement: Statement | None = None, query: bytes | None = None) -> SqlFailure:
    """What went wrong, located in the file.

    PostgreSQL's position counts characters of the query it received: the
    whole file shifted by `offset` (the one-message form), or one `statement`
    of it (the re-run that locates a position-less error).
    """
    diag = exc.diag
    sqlstate = exc.pgcode
    reported = int(diag.statement_position) if diag.statement_position else None
    position = line = None
    if statement is not None:
        line = statement.line
        if reported:
            text = query.decode("utf-8", "replace")
            line += text.count("\n", 0, reported - 1)
            position = _characters(migration.raw[:statement.start]) + reported
    elif reported:
        position = reported + offset
        line = line_of_character(migration.raw, position - 1) if position > 0 else None
    message = diag.message_primary or " ".join(str(exc).split()) or type(exc).__name__
    if diag.message_detail:
        message += f"; {diag.message_detail}"
    if diag.message_hint:
        message += f"; hint: {diag.message_hint}"
    if diag.context and not diag.statement_position:
        message += f"; context: {' '.join(diag.context.split())}"
    lost = conn.closed or conn.broken
    transient = lost or is_transient(exc)
    return SqlFailure(migration, sqlstate, message, position, line, transient, lost)


def record_failure(conn, failure: SqlFailure, *, attempt: int, runner: str, started_at: datetime,
                   duration_ns: int, outcome: str, actor: str | None = None) -> None:
    m = failure.migration
    conn.execute(_INSERT_FAILED, {
        "version": m.version, "description": m.description, "checksum": m.checksum,
        "attempt": attempt, "outcome": outcome, "started_at": started_at, "duration_ns": duration_ns,
        "runner": runner, "dbctl_version": __version__, "sqlstate": failure.sqlstate,
        "error_message": failure.message, "error_position": failure.position, "error_line": failure.line,
        "actor": actor,
    })


@dataclass(frozen=True)
class InvalidIndex:
    """An index PostgreSQL will not use (indisvalid false) or not even keep up to date (indisready false)."""

    name: str  # schema-qualified and quoted as PostgreSQL prints it: public.users_email_idx
    table: str
    ready: bool
    building: bool  # a CREATE INDEX / REINDEX CONCURRENTLY is still working on it

    @property
    def drop(self) -> str:
        return f"DROP INDEX CONCURRENTLY {self.name};"

    def describe(self) -> str:
        bare = self.name.rsplit(".", 1)[-1].strip('"')
        why = ("left by an interrupted REINDEX CONCURRENTLY" if re.search(r"_cc(new|old)[0-9]*\Z", bare)
               else "left by a CREATE INDEX CONCURRENTLY that failed or was interrupted")
        return f"INVALID index {self.name} on {self.table} ({why}): run {self.drop}"


# Partitioned indexes (relkind I) are invalid until every partition's index is attached: a normal
# state between migrations, so only plain indexes count. Temporary schemas are a session's own.
_INVALID_INDEXES = """
SELECT format('%I.%I', n.nspname, c.relname), format('%I.%I', tn.nspname, t.relname), i.indisready,
       EXISTS (SELECT FROM pg_stat_progress_create_index p WHERE p.index_relid = c.oid)
       OR EXISTS (SELECT FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                  WHERE l.locktype = 'relation' AND l.relation = i.indrelid AND l.granted
                    AND l.mode = 'ShareUpdateExclusiveLock' AND a.backend_type = 'client backend'
                    AND l.pid <> pg_backend_pid())
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE NOT (i.indisvalid AND i.indisready) AND c.relkind = 'i'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast_)?temp_'
ORDER BY 1"""


def invalid_indexes(conn) -> list[InvalidIndex]:
    """Every invalid index of the database's schemas, with whether a concurrent build is still on it."""
    return [InvalidIndex(*row) for row in conn.execute(_INVALID_INDEXES).fetchall()]


def drop_index_concurrently(conn, index: InvalidIndex, lock_timeout: str | None) -> None:
    """Drop an invalid index (the name is already quoted by PostgreSQL's format('%I'))."""
    set_timeouts(conn, lock_timeout, None, local=False)
    try:
        conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index.name}".encode())
    finally:
        if not (conn.closed or conn.broken):
            conn.execute("RESET lock_timeout")


# The user's tables: (schema, table, live rows, bytes), both the statistics' estimates (pg_class.relpages of
# the table, its TOAST table and its indexes, as of the last VACUUM, ANALYZE or CREATE INDEX): exact sizes
# (pg_total_relation_size) stat every file of every relation, 80 ms with 1,000 tables in a new session.
_TABLES = """
SELECT n.nspname, c.relname, pg_stat_get_live_tuples(c.oid),
       (c.relpages::bigint + coalesce(t.relpages, 0)
        + coalesce((SELECT sum(i.relpages) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                    WHERE x.indrelid = c.oid), 0))::bigint * current_setting('block_size')::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY n.nspname, c.relname"""


def list_tables(conn) -> list[tuple[str, str, int | None, int]]:
    """(schema, table, live rows estimate, bytes estimate) for the user's tables."""
    return conn.execute(_TABLES).fetchall()


@dataclass
class StatusRead:
    """What `dbctl status` reads, in two round trips (status_read)."""

    history: list[AppliedRow]
    attempts: dict[int, Attempt]
    tables: list[tuple[str, str, int | None, int]]
    invalid_indexes: list[InvalidIndex]
    own_tables: set[str]  # which of dbctl's and sqlx's tables exist


# The catalog facts status and verify read first, each one column of one statement (lists as JSON): which
# of the history tables exist, the history table's shape, the invalid indexes. No relation is locked.
_OWN_TABLES_COLUMN = f"""array(SELECT name FROM unnest(ARRAY{list(OWN_TABLES)}::text[]) AS name
                             WHERE to_regclass(name) IS NOT NULL)"""
_HISTORY_SHAPE_COLUMN = f"""(SELECT json_agg(json_build_array(a.name, a.kind, a.required))
        FROM ({_HISTORY_ATTRIBUTES.replace("%s", f"'{HISTORY_TABLE}'")}) AS a(name, kind, required))"""
_INVALID_INDEXES_COLUMN = f"""(SELECT json_agg(json_build_array(i.name, i.tbl, i.ready, i.building))
        FROM ({_INVALID_INDEXES}) AS i(name, tbl, ready, building))"""

# ... with the user's tables, for status.
_STATUS_CATALOG = f"""
SELECT {_OWN_TABLES_COLUMN}, {_HISTORY_SHAPE_COLUMN},
       (SELECT json_agg(json_build_array(t.nspname, t.relname, t.live, t.bytes))
        FROM ({_TABLES}) AS t(nspname, relname, live, bytes)),
       {_INVALID_INDEXES_COLUMN}"""

# ... with which of the given tables exist, for verify and /health. The fixed columns' own % (format's
# %I) are doubled, since this statement takes a parameter: the table names.
_SCHEMA_CATALOG = (
    f"SELECT {_OWN_TABLES_COLUMN}, {_HISTORY_SHAPE_COLUMN}, {_INVALID_INDEXES_COLUMN},".replace("%", "%%")
    + "\n       array(SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NOT NULL)"
)


@dataclass
class SchemaRead:
    """What verify and /health read from the database (schema_read)."""

    history: list[AppliedRow]
    invalid_indexes: list[InvalidIndex]
    present_tables: set[str]  # which of the tables asked about exist


def schema_read(conn, tables, lock_wait: float) -> SchemaRead:
    """The history, the invalid indexes and which of `tables` exist, in two round trips (one with no
    history table). Refused when the history table is not sqlx's shape; LockTimeout (naming the session)
    when a lock holds the history longer than `lock_wait` seconds."""
    own, attributes, invalid, present = conn.execute(_SCHEMA_CATALOG, (list(tables),)).fetchone()
    history: list[AppliedRow] = []
    if HISTORY_TABLE in own:
        check_history_shape(conn, shape_problems(attributes or []))
        with explained_lock_timeout(conn, lock_wait, "read the migration history"):
            history = _applied_rows(read_waiting_at_most(conn, _HISTORY_ROWS, lock_wait).fetchall())
    return SchemaRead(history, [InvalidIndex(*ix) for ix in invalid or []], set(present))


# The history beside each version's newest attempt.
_STATUS_HISTORY = f"""SELECT coalesce(h.version, a.version), h.description, h.checksum, h.success, h.installed_on, h.execution_time,
       a.outcome, a.started_at, a.duration_ns, a.runner, a.error
FROM {{history}} h FULL JOIN (
    SELECT DISTINCT ON (version) version, outcome, started_at, duration_ns, runner,
           CASE WHEN error_message IS NULL THEN NULL
                ELSE coalesce('line ' || error_line || ': ', '') || error_message
                     || coalesce(' (SQLSTATE ' || sqlstate || ')', '') END AS error
    FROM {{attempts}} ORDER BY version, id DESC) a ON a.version = h.version
ORDER BY 1"""
# Stand-ins with no rows for a table that does not exist yet.
_NO_HISTORY = "(SELECT NULL::bigint AS version, NULL::text AS description, NULL::bytea AS checksum, " \
              "NULL::boolean AS success, NULL::timestamptz AS installed_on, NULL::bigint AS execution_time " \
              "WHERE false)"
_NO_ATTEMPTS = "(SELECT NULL::bigint AS version, NULL::text AS outcome, NULL::timestamptz AS started_at, " \
               "NULL::bigint AS duration_ns, NULL::text AS runner, NULL::text AS error_message, " \
               "NULL::integer AS error_line, NULL::text AS sqlstate, NULL::bigint AS id WHERE false)"


def status_read(conn, lock_wait: float) -> StatusRead:
    """Everything `dbctl status` shows from the database, in two round trips. Refused when the history
    table is not sqlx's shape; LockTimeout (naming the session) when a lock holds the history longer than
    `lock_wait` seconds."""
    own, attributes, tables, invalid = conn.execute(_STATUS_CATALOG).fetchone()
    own = set(own)
    if HISTORY_TABLE in own:
        check_history_shape(conn, shape_problems(attributes or []))
    history: list[AppliedRow] = []
    attempts: dict[int, Attempt] = {}
    if own & {HISTORY_TABLE, ATTEMPTS_TABLE}:
        query = _STATUS_HISTORY.format(history=HISTORY_TABLE if HISTORY_TABLE in own else _NO_HISTORY,
                                       attempts=ATTEMPTS_TABLE if ATTEMPTS_TABLE in own else _NO_ATTEMPTS)
        with explained_lock_timeout(conn, lock_wait, "read the migration history"):
            rows = read_waiting_at_most(conn, query, lock_wait).fetchall()
        for version, description, checksum, success, installed_on, duration, *attempt in rows:
            if description is not None:
                history.append(AppliedRow(version, description, bytes(checksum), success, installed_on, duration))
            if attempt[0] is not None:
                attempts[version] = Attempt(version, *attempt)
    return StatusRead(history, attempts, [tuple(t) for t in tables or []],
                      [InvalidIndex(*ix) for ix in invalid or []], own)


def server_version(conn) -> str:
    return conn.info.parameter_status("server_version") or "?"


Error = pg.Error


def create_database_sql(name: str):
    """CREATE DATABASE with the name quoted as an identifier (quotes and spaces are safe)."""
    from psycopg2 import sql

    return sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))


def drop_database_sql(name: str, *, force: bool = True):
    """DROP DATABASE IF EXISTS, name quoted; WITH (FORCE) (PostgreSQL 13+) ends other sessions first."""
    from psycopg2 import sql

    text = "DROP DATABASE IF EXISTS {} WITH (FORCE)" if force else "DROP DATABASE IF EXISTS {}"
    return sql.SQL(text).format(sql.Identifier(name))


def create_database_owned_sql(name: str, owner: str | None):
    """CREATE DATABASE ... OWNER ..., both names quoted as identifiers."""
    from psycopg2 import sql

    if owner is None:
        return create_database_sql(name)
    return sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner))


# ---------------------------------------------------------------- a database's own attributes (dbctl reset)

# Settings whose value is a list PostgreSQL stores quoted element by element (guc.c's GUC_LIST_QUOTE):
# each element is given separately, or the list would come back as one quoted string.
_LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries", "shared_preload_libraries",
                  "local_preload_libraries", "unix_socket_directories"}


@dataclass(frozen=True)
class DatabaseAttributes:
    """What DROP DATABASE loses besides the contents, read from the catalogs; re-created by create_database_like."""

    encoding: str
    collate: str
    ctype: str
    locale_provider: str  # libc, icu or builtin (PostgreSQL 15+; libc before)
    locale: str | None  # the ICU or builtin locale
    icu_rules: str | None
    tablespace: str
    connection_limit: int
    is_template: bool
    allow_connections: bool
    grants: frozenset  # (grantee, privilege, grantable); None grantee = PUBLIC; empty + default_acl: the default
    default_acl: bool  # datacl is NULL: the default privileges (CONNECT and TEMPORARY to PUBLIC)
    settings: frozenset  # (role or None for every role, "name=value")
    comment: str | None

    def differences(self, other: DatabaseAttributes) -> list[str]:
        """What differs in `other`, as "what: other's (instead of self's)"; grants compared as privileges."""
        found = []
        for name in ("encoding", "collate", "ctype", "locale_provider", "locale", "icu_rules", "tablespace",
                     "connection_limit", "comment"):
            if getattr(self, name) != getattr(other, name):
                found.append(f"{name.replace('_', ' ')} {getattr(other, name)!s} (instead of {getattr(self, name)!s})")
        if self.effective_grants() != other.effective_grants():
            found.append(f"grants {_grants_text(other.effective_grants())} "
                         f"(instead of {_grants_text(self.effective_grants())})")
        if self.settings != other.settings:
            found.append(f"settings {_settings_text(other.settings)} (instead of {_settings_text(self.settings)})")
        return found

    def effective_grants(self) -> frozenset:
        return frozenset({(None, "CONNECT", False), (None, "TEMPORARY", False)}) if self.default_acl else self.grants

    def summary(self, owner: str | None) -> str:
        """One line: what the re-created database will have, for the reset prompt."""
        locale = self.collate if self.collate == self.ctype else f"{self.collate}/{self.ctype}"
        if self.locale_provider != "libc":
            locale = f"{self.locale_provider} {self.locale}" + (", with ICU rules" if self.icu_rules else "")
        parts = [f"owner {owner}", f"encoding {self.encoding}", f"locale {locale}"]
        if self.tablespace != "pg_default":
            parts.append(f"tablespace {self.tablespace}")
        if self.connection_limit != -1:
            parts.append(f"connection limit {self.connection_limit}")
        if not self.default_acl:
            parts.append(f"grants {_grants_text(self.grants)}")
        if self.settings:
            parts.append(f"settings {_settings_text(self.settings)}")
        if self.comment:
            parts.append("its comment")
        return ", ".join(parts)


def _grants_text(grants) -> str:
    by_role: dict[str, list[str]] = {}
    for grantee, privilege, grantable in sorted(grants, key=lambda g: (g[0] or "", g[1])):
        by_role.setdefault(grantee or "PUBLIC", []).append(privilege + (" WITH GRANT OPTION" if grantable else ""))
    return "; ".join(f"{role}: {', '.join(privs)}" for role, privs in by_role.items()) or "none"


def _settings_text(settings) -> str:
    return "; ".join(f"{setting}" + (f" (role {role})" if role else "")
                     for role, setting in sorted(settings, key=lambda s: (s[0] or "", s[1]))) or "none"


def database_attributes(conn, name: str) -> DatabaseAttributes | None:
    """The attributes of database `name` (None when it does not exist); PostgreSQL 12 and later."""
    row = conn.execute(
        """SELECT row_to_json(d)::jsonb, pg_encoding_to_char(d.encoding), t.spcname, d.datacl IS NULL,
                  shobj_description(d.oid, 'pg_database'),
                  (SELECT coalesce(array_agg(ARRAY[CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
                                             a.privilege_type, a.is_grantable::text]), '{}')
                   FROM aclexplode(d.datacl) a),
                  (SELECT coalesce(array_agg(ARRAY[CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END,
                                             c]), '{}')
                   FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = d.oid)
           FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = %s""",
        (name,),
    ).fetchone()
    if row is None:
        return None
    d, encoding, tablespace, default_acl, comment, grants, settings = row
    provider = {"c": "libc", "i": "icu", "b": "builtin"}[d.get("datlocprovider", "c")]
    return DatabaseAttributes(
        encoding=encoding, collate=d["datcollate"], ctype=d["datctype"], locale_provider=provider,
        locale=d.get("datlocale", d.get("daticulocale")), icu_rules=d.get("daticurules"), tablespace=tablespace,
        connection_limit=d["datconnlimit"], is_template=d["datistemplate"], allow_connections=d["datallowconn"],
        grants=frozenset((g[0], g[1], g[2] == "true") for g in grants), default_acl=default_acl,
        settings=frozenset((s[0], s[1]) for s in settings), comment=comment,
    )


def create_database_like(conn, name: str, attrs: DatabaseAttributes, owner: str | None) -> None:
    """CREATE DATABASE `name` from template0 with `attrs` (encoding, locale, tablespace, limit), then its
    grants, settings and comment as they were. pg.Error when PostgreSQL refuses any of it."""
    from psycopg2 import sql

    options = [sql.SQL("TEMPLATE template0 ENCODING {}").format(sql.Literal(attrs.encoding))]
    if conn.info.server_version >= 150000:
        options.append(sql.SQL("LOCALE_PROVIDER {}").format(sql.SQL(attrs.locale_provider)))
    options.append(sql.SQL("LC_COLLATE {} LC_CTYPE {}").format(sql.Literal(attrs.collate), sql.Literal(attrs.ctype)))
    if attrs.locale_provider == "icu":
        options.append(sql.SQL("ICU_LOCALE {}").format(sql.Literal(attrs.locale)))
    if attrs.locale_provider == "builtin":
        options.append(sql.SQL("BUILTIN_LOCALE {}").format(sql.Literal(attrs.locale)))
    if attrs.icu_rules:
        options.append(sql.SQL("ICU_RULES {}").format(sql.Literal(attrs.icu_rules)))
    if attrs.tablespace != "pg_default":  # naming pg_default would need CREATE on it, which owners lack
        options.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(attrs.tablespace)))
    options.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(attrs.connection_limit)))
    if owner is not None:
        options.insert(0, sql.SQL("OWNER {}").format(sql.Identifier(owner)))
    db = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE DATABASE {} ").format(db) + sql.SQL(" ").join(options))
    if not attrs.default_acl:
        owner_role = owner or conn.execute("SELECT current_user").fetchone()[0]
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC, {}").format(db, sql.Identifier(owner_role)))
        for grantee, privilege, grantable in sorted(attrs.grants, key=lambda g: (g[0] or "", g[1])):
            conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege), db, sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                sql.SQL(" WITH GRANT OPTION" if grantable else "")))
    for role, setting in sorted(attrs.settings, key=lambda s: (s[0] or "", s[1])):
        key, _, value = setting.partition("=")
        values = _list_elements(value) if key.lower() in _LIST_SETTINGS else [value]
        target = (sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), db) if role
                  else sql.SQL("ALTER DATABASE {}").format(db))
        conn.execute(target + sql.SQL(" SET {} TO {}").format(
            sql.Identifier(*key.split(".")), sql.SQL(", ").join(sql.Literal(v) for v in values)))
    if attrs.comment is not None:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal(attrs.comment)))


def _list_elements(value: str) -> list[str]:
    """A stored list setting (`"$user", public`) as its elements (`$user`, `public`), as guc.c splits it."""
    elements, current, quoted, i = [], "", False, 0
    while i < len(value):
        c = value[i]
        if c == '"' and quoted and value[i + 1:i + 2] == '"':
            current += '"'
            i += 1
        elif c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            elements.append(current.strip())
            current = ""
        else:
            current += c
        i += 1
    elements.append(current.strip())
    return elements


def connect_to_database(url: str, dbname: str, *, application_name: str = "dbctl", timeout: float = 5):
    """Connect with the URL's host, user and password but to another database (the maintenance one)."""
    conninfo = url_for_database(url, dbname)
    try:
        return pg.connect(conninfo, timeout=timeout, application_name=application_name[:63],
                          client_encoding=CLIENT_ENCODING)
    except pg.Error as exc:
        raise connect_failure(exc, url, f" (while connecting to the maintenance database {quoted(dbname)})") from None


def url_for_database(url: str, dbname: str) -> str:
    """The same server, user and password, another database (a scratch one); libpq keyword form."""
    try:
        return pg.make_dsn(url, dbname=dbname)
    except pg.Error as exc:
        raise connect_failure(exc, url) from None


REVERTS_DDL = f"""
CREATE TABLE IF NOT EXISTS {REVERTS_TABLE} (
    id BIGSERIAL PRIMARY KEY,
    version BIGINT NOT NULL,
    description TEXT NOT NULL,
    applied_checksum BYTEA NOT NULL,
    down_checksum BYTEA NOT NULL,
    reverted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    duration_ns BIGINT NOT NULL,
    runner TEXT NOT NULL,
    actor TEXT,
    dbctl_version TEXT NOT NULL
)"""

_REVERT_RECORD = f"""
WITH gone AS (DELETE FROM {HISTORY_TABLE} WHERE version = %(version)s RETURNING description, checksum)
INSERT INTO {REVERTS_TABLE}
    (version, description, applied_checksum, down_checksum, duration_ns, runner, actor, dbctl_version)
SELECT %(version)s, description, checksum, %(down_checksum)s, %(duration_ns)s, %(runner)s, %(actor)s,
       %(dbctl_version)s FROM gone"""


def ensure_reverts_table(conn) -> None:
    """Create `_dbctl_migration_reverts` if missing; call with the advisory lock held."""
    if conn.execute("SELECT to_regclass(%s) IS NULL", (REVERTS_TABLE,)).fetchone()[0]:
        conn.execute(REVERTS_DDL)


def revert_migration(conn, down: Migration, *, runner: str, actor: str | None = None,
                     lock_timeout: str | None = None, statement_timeout: str | None = None) -> int:
    """Run a `.down.sql` and remove its version from the history, as sqlx's revert does.

    The file is one query, as in apply_migration. Transactional down files: the
    SQL, the DELETE and the revert record commit together. `-- no-transaction`
    ones run alone first. Returns the duration in nanoseconds; raises
    MigrationError like apply_migration.
    """
    start = time.perf_counter_ns()
    row = {"version": down.version, "down_checksum": down.checksum, "runner": runner, "actor": actor,
           "dbctl_version": __version__}

    def record() -> None:
        row["duration_ns"] = time.perf_counter_ns() - start
        conn.execute(_REVERT_RECORD, row)

    try:
        if down.no_tx:
            _run_outside_transaction(conn, down, lock_timeout, statement_timeout)
            row["duration_ns"] = time.perf_counter_ns() - start
            _record_outside_transaction(conn, down, _REVERT_RECORD, row)
        else:
            _in_transaction(conn, down, lock_timeout, statement_timeout, True, _file_sender(conn, down, None),
                            record)
    except MigrationError as exc:
        raise _located(conn, down, exc.failure, lock_timeout, statement_timeout) from exc.__cause__
    return row["duration_ns"]


def read_reverts(conn, limit: int = 20) -> list[tuple]:
    """Newest reverts first: (version, description, reverted_at, runner, actor)."""
    if conn.execute("SELECT to_regclass(%s) IS NULL", (REVERTS_TABLE,)).fetchone()[0]:
        return []
    return conn.execute(
        f"SELECT version, description, reverted_at, runner, actor FROM {REVERTS_TABLE} ORDER BY id DESC LIMIT %s",
        (limit,),
    ).fetchall()
