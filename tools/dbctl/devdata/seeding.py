"""Development data: load the seed files, run them in one transaction, record the run; reset a database.

Seed files are plain SQL in `seeds/`, applied in file-name order, all in one
transaction: any failure leaves no seed rows. They are written to be idempotent
(INSERT ... ON CONFLICT on stable keys), so a second run inserts nothing. Rows a
developer edited by hand are left alone unless the run sets `dbctl.refresh` to
`on` (`dbctl seed --refresh`), which the files' `DO UPDATE ... WHERE` clauses read.

Counting is PostgreSQL's own: each INSERT ... ON CONFLICT runs under
EXPLAIN ANALYZE, whose ModifyTable node reports the tuples it inserted and the
ones that conflicted (already present), per table.

A seed file is kept as its bytes (a large one as its open descriptor, read a
piece at a time) with the byte offsets of its statements, never as text: a
statement is decoded only to be classified, and read again, with its EXPLAIN
prefix, only to be sent (the seed Job runs under a 128 MiB limit). What is
read again is checked to be what was checksummed before the transaction
commits (source.Sending). A file of many statements
costs a fraction of its size; one huge statement about three times it while it
is sent: dbctl's copy, and libpq's output buffer and its own copy of the text.

Every run, failed ones too, is a row of `_dbctl_seed_runs`, which `dbctl status` shows.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from dbctl import __version__
from dbctl import config
from dbctl.engine import postgres
from dbctl.errors import ConfigError, DbctlError, Refused
from dbctl.engine.source import (FileChanged, FileImage, Scan, Sending, count_newlines, examine,
                                 line_of_character, read_file)
from dbctl.text import quoted
from dbctl.urls import print_line

SAFE_ENVIRONMENTS = ("development", "test")
REFRESH_SETTING = "dbctl.refresh"
# Ours, not sqlx's: seeding and migrating take the same advisory lock (see seed()).
_EXPLAIN = b"EXPLAIN (ANALYZE, TIMING OFF, SUMMARY OFF, FORMAT JSON) "

RUNS_DDL = f"""
CREATE TABLE IF NOT EXISTS {postgres.SEED_RUNS_TABLE} (
    id BIGSERIAL PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL,
    duration_ns BIGINT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('success', 'failed')),
    environment TEXT NOT NULL,
    refresh BOOLEAN NOT NULL,
    runner TEXT NOT NULL,
    dbctl_version TEXT NOT NULL,
    files JSONB NOT NULL,
    inserted JSONB NOT NULL DEFAULT '{{}}',
    present JSONB NOT NULL DEFAULT '{{}}',
    refreshed JSONB NOT NULL DEFAULT '{{}}',
    error TEXT
)"""

_INSERT_RUN = f"""
INSERT INTO {postgres.SEED_RUNS_TABLE}
    (started_at, duration_ns, outcome, environment, refresh, runner, dbctl_version, files,
     inserted, present, refreshed, error)
VALUES (%(started_at)s, %(duration_ns)s, %(outcome)s, %(environment)s, %(refresh)s, %(runner)s,
        %(dbctl_version)s, %(files)s, %(inserted)s, %(present)s, %(refreshed)s, %(error)s)
RETURNING id"""


class SeedFailed(DbctlError):
    """A seed file's SQL failed; the whole seed transaction was rolled back."""


@dataclass(frozen=True, slots=True)
class Statement:
    offset: int  # byte offset of the statement's first token in its file
    end: int  # byte offset just after its last token
    counted: bool  # INSERT ... ON CONFLICT: run under EXPLAIN ANALYZE to count its rows
    table: str | None  # the INSERT's target table, when it is one


@dataclass(frozen=True)
class SeedFile:
    path: Path
    raw: bytes | FileImage  # the file's bytes (read when needed when large); statements are offsets into it
    checksum: bytes
    statements: tuple[Statement, ...]

    @property
    def name(self) -> str:
        return self.path.name

    def line_of(self, offset: int) -> int:
        """The 1-based line of a byte offset."""
        return count_newlines(self.raw, 0, offset) + 1

    def queries(self):
        """(statement, the query to send: its EXPLAIN prefix when counted, and its bytes as read now), in
        order. Raises FileChanged, before the last one is handed out, unless everything read is the
        file as it was checksummed and split at load."""
        sending = Sending(self.path, self.raw, self.checksum)
        last = self.statements[-1] if self.statements else None
        for statement in self.statements:
            sending.take(statement.offset, statements=0)  # the comments before it
            piece = sending.take(statement.end, statements=1)
            if statement is last:
                sending.finish()  # the rest, and the checksum of it all
            query = _EXPLAIN + piece if statement.counted else piece
            del piece  # one copy of a large statement, not two, while libpq makes its own
            yield statement, query
        if last is None:
            sending.finish()


@dataclass
class TableCounts:
    inserted: int = 0
    present: int = 0  # conflicted with an existing row, left as it was
    refreshed: int = 0  # conflicted and was restored to the seed values (--refresh)


@dataclass
class SeedResult:
    files: list[SeedFile]
    tables: dict[str, TableCounts] = field(default_factory=dict)
    duration_ns: int = 0
    run_id: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def inserted(self) -> int:
        return sum(c.inserted for c in self.tables.values())

    @property
    def present(self) -> int:
        return sum(c.present + c.refreshed for c in self.tables.values())


# ---------------------------------------------------------------- safety

def check_environment(override: str | None, action: str) -> str:
    """The environment if `action` may run in it; Refused for staging and production.

    config.environment validates --env and DBCTL_ENV both and takes the stricter, so a
    production pod's environment wins over a flag typed into it.
    """
    env = config.environment(override)
    if env not in SAFE_ENVIRONMENTS:
        declared = (os.environ.get("DBCTL_ENV") or "").strip().lower()
        source = "DBCTL_ENV" if declared == env else "--env"
        raise Refused(
            f"refusing to {action} in the {env} environment ({source}); it only runs in "
            f"{' or '.join(SAFE_ENVIRONMENTS)}, and --env cannot override a protected environment "
            "(set DBCTL_ENV=development for a local database)"
        )
    return env


def seeds_directory(value: str | None) -> str:
    return value or os.environ.get("DBCTL_SEEDS") or config.DEFAULT_SEEDS


# ---------------------------------------------------------------- files

def load_seeds(directory: str | os.PathLike) -> list[SeedFile]:
    """The `*.sql` files of `directory` in name order, each split into statements; nothing is run."""
    directory = Path(directory)
    try:
        if not directory.is_dir():
            raise ConfigError(f"seeds directory {_shown(directory)} does not exist; pass --seeds DIR or set DBCTL_SEEDS")
        paths = sorted(p for p in directory.iterdir() if p.suffix == ".sql" and p.is_file()
                       and not p.name.startswith("."))
    except OSError as exc:  # a name too long, a directory we may not read
        raise ConfigError(f"cannot read the seeds directory {_shown(directory)}: {exc.strerror or exc}; "
                          "pass --seeds DIR or set DBCTL_SEEDS") from None
    files = []
    for path in paths:
        if not _is_utf8(path.name):  # its name could not be printed, stored in the seed run or compared
            raise ConfigError(f"seed file name {_shown(path)} is not valid UTF-8; rename the file")
        files.append(read_seed(path))
    if not files:
        raise ConfigError(f"no .sql files in the seeds directory {directory}; add some or pass --seeds DIR")
    return files


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes Python could not decode became lone surrogates
        return False
    return True


def _shown(path) -> str:
    """A path for a message: non-UTF-8 bytes as \\x escapes, very long ones shortened."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return text if len(text) <= 200 else text[:197] + "..."


def read_seed(path: Path) -> SeedFile:
    """One seed file, checked (UTF-8, no NUL byte) and split into statement offsets; its bytes are
    kept as read (a FileImage when large), with no text copy beside them."""
    try:
        raw = read_file(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from None
    digest, bad, nul, _ = examine(raw)
    if bad is not None:
        raise ConfigError(f"{path}:{count_newlines(raw, 0, bad) + 1}: not valid UTF-8 (offset {bad}); "
                          "save the file as UTF-8")
    if nul is not None:  # PostgreSQL would end the statement there and run the first half
        line = count_newlines(raw, 0, nul) + 1
        raise ConfigError(f"{path}:{line}: contains a NUL byte (offset {nul}); remove it, e.g. tr -d '\\000'")
    statements = []
    # Our lexical scan (bytes in, offsets out): every statement starts at its first token, so the
    # line of its offset is the line of its code; an unterminated quote makes the rest one statement.
    for found in Scan(raw):
        statements.append(_classify(path, raw, found.start, found.end, found.line))
    return SeedFile(path=path, raw=raw, checksum=digest, statements=tuple(statements))


def _classify(path: Path, raw, start: int, end: int, line: int) -> Statement:
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    if end - start > _PARSE_LIMIT:
        return _classify_large(raw, start, end)
    try:
        parsed = parse_sql(raw[start:end].decode("utf-8"))
    except ParseError:  # PostgreSQL will report it, with its own words, when the file runs
        return Statement(start, end, False, None)
    node = parsed[0].stmt if len(parsed) == 1 else None
    if isinstance(node, ast.TransactionStmt):
        raise ConfigError(
            f"{path}:{line}: transaction control (BEGIN, COMMIT, SAVEPOINT...) is not allowed in seed files; "
            "dbctl runs all of them in one transaction, remove it"
        )
    if isinstance(node, ast.InsertStmt):
        return Statement(start, end, node.onConflictClause is not None, node.relation.relname)
    return Statement(start, end, False, None)


# A parse tree costs far more memory than its text: statements larger than this (in bytes) are classified
# from their words (INSERT INTO <table> ... ON CONFLICT) instead of pglast's parse tree.
_PARSE_LIMIT = 256 * 1024
_LARGE_INSERT = re.compile(r'\s*INSERT\s+INTO\s+((?:"[^"]+"|[A-Za-z_][\w$]*)(?:\.(?:"[^"]+"|[A-Za-z_][\w$]*))?)',
                           re.I)


def _classify_large(raw, start: int, end: int) -> Statement:
    # Only the statement's first and last 4 KiB are decoded (a character cut at their edge is dropped).
    head = _LARGE_INSERT.match(raw[start:min(end, start + 4096)].decode("utf-8", "ignore"))
    if head is None:
        return Statement(start, end, False, None)
    table = head.group(1).rsplit(".", 1)[-1].strip('"')
    tail = raw[max(start, end - 4096):end].decode("utf-8", "ignore").upper()  # ON CONFLICT follows the rows
    return Statement(start, end, "ON CONFLICT" in " ".join(tail.split()), table)


# ---------------------------------------------------------------- running

def pending_migrations(conn, migrations) -> list[str]:
    """Why the schema is not ready for seeding, one line per problem (the verdict every command gives)."""
    from dbctl.engine import plan as planning

    plan = planning.build_plan(migrations.ups, postgres.read_history(conn), postgres.read_last_attempts(conn))
    return planning.judge(plan).problems


def seed(url: str, files: list[SeedFile], migrations, *, environment: str, refresh: bool = False,
         lock_wait_timeout: float = 60.0, say=print_line, warn=print_line) -> SeedResult:
    """Run every seed file in one transaction and record the run; refuse an unmigrated schema."""
    from dbctl.engine.migrator import INTERRUPTS, holding_lock

    runner = config.runner_identity()
    conn = postgres.connect(url, application_name=f"dbctl seed {runner}")
    # The migration lock: a migration never changes the schema under a seed run, and
    # two seed runs (two clicks on the Tilt button) queue instead of colliding.
    with conn, holding_lock(conn, lock_wait_timeout, say):
        with postgres.bounded_waits(conn, lock_wait_timeout, "read the migration history"):
            pending = pending_migrations(conn, migrations)
            if pending:
                raise Refused(
                    f"the schema is not fully migrated ({'; '.join(pending)}); seed once dbctl status shows "
                    "every migration applied"
                )
            conn.execute(RUNS_DDL)
        try:
            return _run(conn, files, environment=environment, refresh=refresh, runner=runner, warn=warn)
        except INTERRUPTS as exc:  # SIGINT/SIGTERM: the statement was cancelled on the server; the transaction rolls back
            exc.add_note("while seeding: the seed transaction was rolled back, no seed rows were written")
            raise


def _run(conn, files, *, environment, refresh, runner, warn) -> SeedResult:
    result = SeedResult(files=files)
    started_at = datetime.now(timezone.utc)
    start = time.perf_counter_ns()
    run = {
        "started_at": started_at, "environment": environment, "refresh": refresh, "runner": runner,
        "dbctl_version": __version__,
        "files": json.dumps([{"name": f.name, "sha384": f.checksum.hex()} for f in files]),
    }
    try:
        with conn.transaction():
            conn.execute("SELECT set_config(%s, %s, true)", (REFRESH_SETTING, "on" if refresh else "off"))
            for seed_file in files:
                try:
                    for statement, query in seed_file.queries():
                        _execute(conn, seed_file, statement, query, result)
                        del query
                except FileChanged as exc:
                    raise SeedFailed(f"{exc}; the seed transaction was rolled back, no seed rows were written; "
                                     "save it again, or wait until it is written, then run dbctl seed again") from None
            result.duration_ns = time.perf_counter_ns() - start
            result.run_id = conn.execute(_INSERT_RUN, {
                **run, "duration_ns": result.duration_ns, "outcome": "success", "error": None,
                **_counts_json(result.tables),
            }).fetchone()[0]
    except SeedFailed as exc:
        _record_failure(conn, run, time.perf_counter_ns() - start, str(exc))
        raise
    for seed_file in files:
        for statement in seed_file.statements:
            if statement.table and not statement.counted:
                result.warnings.append(
                    f"{seed_file.path}:{seed_file.line_of(statement.offset)}: INSERT INTO {statement.table} "
                    "has no ON CONFLICT clause, so a second seed run will fail or duplicate rows"
                )
    for message in result.warnings:
        warn(f"warning: {message}")
    return result


def _execute(conn, seed_file: SeedFile, statement: Statement, query: bytes, result: SeedResult) -> None:
    prefix = _EXPLAIN if statement.counted else b""
    try:
        cursor = conn.execute(query)
    except postgres.Error as exc:
        raise SeedFailed(_describe_failure(exc, seed_file, statement, len(prefix))) from None
    if statement.counted:
        for table, inserted, conflicting, filtered in _modify_nodes(cursor.fetchone()[0]):
            counts = result.tables.setdefault(table, TableCounts())
            counts.inserted += inserted
            counts.present += filtered  # conflicts the refresh condition kept as they were
            counts.refreshed += conflicting - filtered
    elif statement.table and cursor.rowcount > 0:
        result.tables.setdefault(statement.table, TableCounts()).inserted += cursor.rowcount


def _modify_nodes(explained) -> list[tuple[str, int, int, int]]:
    """(table, inserted, conflicting, kept by the conflict filter) for each INSERT node in an EXPLAIN ANALYZE."""
    found = []
    stack = [explained[0]["Plan"]]
    while stack:
        node = stack.pop()
        stack.extend(node.get("Plans", []))
        if node.get("Node Type") == "ModifyTable" and node.get("Operation") == "Insert":
            conflicting = node.get("Conflicting Tuples", 0)
            # DO NOTHING keeps every conflicting row; DO UPDATE ... WHERE keeps those the WHERE rejected.
            kept = conflicting if node.get("Conflict Resolution") == "NOTHING" else \
                node.get("Rows Removed by Conflict Filter", 0)
            found.append((node["Relation Name"], node.get("Tuples Inserted", 0), conflicting, kept))
    return found


def _describe_failure(exc, seed_file: SeedFile, statement: Statement, shift: int) -> str:
    diag = exc.diag
    line = seed_file.line_of(statement.offset)  # runtime errors (constraints) carry no position: its first line
    if diag.statement_position:  # in characters of what was sent, the prefix included
        at = max(0, int(diag.statement_position) - 1 - shift)
        line += line_of_character(seed_file.raw[statement.offset:statement.end], at) - 1
    message = diag.message_primary or " ".join(str(exc).split()) or type(exc).__name__
    if diag.message_detail:
        message += f"; {diag.message_detail}"
    if diag.message_hint:
        message += f"; hint: {diag.message_hint}"
    code = f" (SQLSTATE {exc.pgcode})" if exc.pgcode else ""
    return (f"{seed_file.path}:{line}: {message}{code}; "
            "the seed transaction was rolled back, no seed rows were written; fix the file and run dbctl seed again")


def _counts_json(tables: dict[str, TableCounts]) -> dict[str, str]:
    return {
        "inserted": json.dumps({t: c.inserted for t, c in tables.items()}),
        "present": json.dumps({t: c.present for t, c in tables.items()}),
        "refreshed": json.dumps({t: c.refreshed for t, c in tables.items()}),
    }


def _record_failure(conn, run: dict, duration_ns: int, error: str) -> None:
    """The rolled-back run is still worth a row, for `dbctl status`; best effort."""
    try:
        if not conn.closed and not conn.broken:
            conn.execute(_INSERT_RUN, {**run, "duration_ns": duration_ns, "outcome": "failed", "error": error,
                                       **_counts_json({})})
    except postgres.Error:
        pass


# ---------------------------------------------------------------- status

_NEWEST_RUN = f"""SELECT id, started_at, duration_ns, outcome, environment, refresh, runner, files, inserted,
       present, refreshed, error,
       (SELECT max(started_at) FROM {postgres.SEED_RUNS_TABLE} WHERE outcome = 'success')
FROM {postgres.SEED_RUNS_TABLE} ORDER BY id DESC LIMIT 1"""


def last_run(conn) -> dict | None:
    """The newest seed run as a JSON-able dict (None when never seeded)."""
    if conn.execute("SELECT to_regclass(%s) IS NULL", (postgres.SEED_RUNS_TABLE,)).fetchone()[0]:
        return None
    return _as_run(conn.execute(_NEWEST_RUN).fetchone())


def _as_run(row) -> dict | None:
    if row is None:
        return None
    keys = ("id", "started_at", "duration_ns", "outcome", "environment", "refresh", "runner", "files",
            "inserted", "present", "refreshed", "error", "last_success_at")
    run = dict(zip(keys, row))
    for name in ("started_at", "last_success_at"):
        run[name] = run[name].isoformat() if run[name] else None
    return run


def add_status_section(conn, status, lock_wait: float) -> None:
    """`dbctl status`: the last seed run, as a text line and as `last_seed` in the JSON; one round trip,
    none when status found no seed runs table."""
    run = None
    if postgres.SEED_RUNS_TABLE in status.own_tables:
        with postgres.explained_lock_timeout(conn, lock_wait, "read the seed runs"):
            run = _as_run(postgres.read_waiting_at_most(conn, _NEWEST_RUN, lock_wait).fetchone())
    status.extras["last_seed"] = run
    status.sections.append("")
    if run is None:
        status.sections.append("Last seed:  never (dbctl seed loads the development data)")
        return
    when = datetime.fromisoformat(run["started_at"]).strftime("%Y-%m-%d %H:%M:%S %Z")
    if run["outcome"] == "success":
        inserted = sum(run["inserted"].values())
        present = sum(run["present"].values()) + sum(run["refreshed"].values())
        refreshed = " with --refresh" if run["refresh"] else ""
        status.sections.append(
            f"Last seed:  {when}  success{refreshed}: {len(run['files'])} file(s), {inserted} row(s) inserted, "
            f"{present} already present ({run['environment']}, by {run['runner']})"
        )
    else:
        before = run["last_success_at"] or "never"
        status.sections.append(f"Last seed:  {when}  FAILED: {run['error']}")
        status.sections.append(f"            last successful seed: {before}")


# ---------------------------------------------------------------- reset

@dataclass
class ResetTarget:
    url: str
    name: str
    maintenance_db: str
    exists: bool
    owner: str | None = None
    size_bytes: int | None = None
    other_sessions: int = 0
    server_version_num: int = 0
    in_recovery: bool = False  # a hot standby: read-only
    role: str = ""  # who we connect as
    superuser: bool = False
    createdb: bool = False
    owns: bool = False  # the role is the owner, or a member of the owner role (DROP DATABASE needs that)
    attributes: postgres.DatabaseAttributes | None = None  # what it is re-created with: encoding, grants...
    not_kept: tuple[str, ...] = ()  # settings the new database does not get (said in the prompt)


def inspect_target(url: str) -> ResetTarget:
    """What a reset would drop, and what our role may do: asked of the maintenance database, so the
    target may not exist. Reads only."""
    from dbctl.urls import database_name

    name = database_name(url)
    if not name:
        raise ConfigError("the database URL names no database; add /DBNAME at the end")
    maintenance = "template1" if name == "postgres" else "postgres"
    with postgres.connect_to_database(url, maintenance, application_name="dbctl reset") as conn:
        return _inspect(conn, url, name, maintenance)


def _inspect(conn, url, name, maintenance) -> ResetTarget:
    version = int(conn.execute("SHOW server_version_num").fetchone()[0])
    role, superuser, createdb, in_recovery = conn.execute(
        "SELECT current_user, rolsuper, rolcreatedb, pg_is_in_recovery() FROM pg_roles "
        "WHERE rolname = current_user").fetchone()
    row = conn.execute(
        """SELECT pg_get_userbyid(d.datdba), pg_database_size(d.oid),
                  (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid AND a.pid <> pg_backend_pid()),
                  pg_has_role(current_user, d.datdba, 'MEMBER')
           FROM pg_database d WHERE d.datname = %s""",
        (name,),
    ).fetchone()
    common = dict(server_version_num=version, role=role, superuser=superuser, createdb=createdb,
                  in_recovery=in_recovery)
    if row is None:
        return ResetTarget(url, name, maintenance, exists=False, **common)
    attributes, not_kept = _kept(postgres.database_attributes(conn, name))
    return ResetTarget(url, name, maintenance, exists=True, owner=row[0], size_bytes=row[1],
                       other_sessions=row[2], owns=superuser or row[3], attributes=attributes, not_kept=not_kept,
                       **common)


# A database-wide read-only setting would stop the reset's own migration: the new database is writable
# (as a reset always made it), and the prompt says so.
NOT_KEPT_SETTINGS = ("default_transaction_read_only",)


def _kept(attrs):
    """(the attributes re-created, the settings not kept) of an existing database."""
    if attrs is None:
        return None, ()
    dropped = {s for s in attrs.settings if s[0] is None and s[1].split("=", 1)[0].lower() in NOT_KEPT_SETTINGS}
    return replace(attrs, settings=attrs.settings - dropped), tuple(sorted(s[1] for s in dropped))


def check_can_reset(target: ResetTarget) -> None:
    """Refuse, before anything is dropped, a reset that could drop the database but not create it again."""
    name, role = target.name, target.role
    if target.in_recovery:
        raise Refused(f"the server is a hot standby (read-only, in recovery): database {quoted(name)} cannot be dropped "
                      "or created there; reset it on the primary; nothing was dropped")
    attrs = target.attributes
    if attrs is not None and attrs.is_template:
        raise Refused(f"database {quoted(name)} is a template (IS_TEMPLATE true) and cannot be dropped; run "
                      f"ALTER DATABASE \"{name}\" IS_TEMPLATE false first, or reset another database; nothing was dropped")
    if attrs is not None and not attrs.allow_connections:
        raise Refused(f"database {quoted(name)} does not allow connections (ALLOW_CONNECTIONS false), so it could not be "
                      f"migrated after the reset; run ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true first; "
                      "nothing was dropped")
    if target.exists and not target.owns:
        raise Refused(f"role {quoted(role)} does not own database {quoted(name)} (its owner is {quoted(target.owner)}), so it "
                      f"cannot drop it; run dbctl reset as {quoted(target.owner)} or a superuser; nothing was dropped")
    if not (target.superuser or target.createdb):
        what = f"drop database {quoted(name)} but not create it again" if target.exists else \
            f"not create database {quoted(name)}"
        raise Refused(f"role {quoted(role)} has no CREATEDB privilege: it could {what}; grant it "
                      f"(ALTER ROLE \"{role}\" CREATEDB) or reset as a superuser; nothing was dropped")


@contextmanager
def reset_session(target: ResetTarget):
    """The maintenance connection for one reset, holding the reset lock of this database throughout.

    Two resets of one database at once: the second is refused at once (exit 1)
    rather than dropping the database under the first one's migration. Before
    yielding, the role proves it can create the database again by creating and
    dropping a scratch database with the same owner: what a role may do is
    decided by PostgreSQL, not guessed from the catalog.
    """
    conn = postgres.connect_to_database(target.url, target.maintenance_db, application_name="dbctl reset")
    key = postgres.lock_key(f"dbctl reset {target.name}")
    try:
        if not postgres.try_lock(conn, key):
            holder = postgres.lock_holder(conn, key) or "another session"
            raise Refused(f"another dbctl reset of database {quoted(target.name)} is running ({holder}); wait for it to "
                          "finish, then run dbctl reset again if still needed; nothing was dropped")
        _rehearse_create(conn, target)
        yield conn
    finally:
        postgres.unlock(conn, key)
        conn.close()


def _owner_to_use(conn, target: ResetTarget) -> str | None:
    me = conn.execute("SELECT current_user").fetchone()[0]
    return target.owner if target.owner and target.owner != me else None


def _rehearse_create(conn, target: ResetTarget) -> None:
    import uuid

    scratch = f"dbctl_reset_check_{uuid.uuid4().hex[:12]}"
    try:
        try:
            _create(conn, scratch, target)
        except postgres.Error as exc:
            raise Refused(f"cannot create database {quoted(target.name)} again as it is after dropping it, so nothing was "
                          f"dropped: {_pg_message(exc)}") from None
        if target.attributes is not None:
            lost = target.attributes.differences(postgres.database_attributes(conn, scratch))
            if lost:
                raise Refused(f"database {quoted(target.name)} cannot be re-created as it is: it would come back with "
                              f"{'; '.join(lost)}; nothing was dropped")
    finally:
        try:
            conn.execute(postgres.drop_database_sql(scratch, force=False))
        except postgres.Error:
            pass  # an empty scratch database left behind is harmless; its name says what it is


def _create(conn, name: str, target: ResetTarget) -> None:
    """Create `name` as the target is: its owner and, when it exists, its encoding, locale, grants and settings."""
    if target.attributes is None:
        conn.execute(postgres.create_database_owned_sql(name, _owner_to_use(conn, target)))
    else:
        postgres.create_database_like(conn, name, target.attributes, _owner_to_use(conn, target))


def _pg_message(exc) -> str:
    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag else None) or " ".join(str(exc).split()) or type(exc).__name__
    code = f" (SQLSTATE {exc.pgcode})" if getattr(exc, "pgcode", None) else ""
    return message + code


def drop_and_create(target: ResetTarget, conn) -> tuple[int, int]:
    """Drop the database (ending its sessions) and create it empty, with its old owner; returns (ended, ns).

    `conn` is the maintenance connection of reset_session (holding the reset lock).
    """
    start = time.perf_counter_ns()
    try:
        if target.server_version_num >= 130000:
            ended = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (target.name,),
            ).fetchone()[0]
            conn.execute(postgres.drop_database_sql(target.name, force=True))
        else:  # before WITH (FORCE): end the sessions ourselves, then drop
            ended = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (target.name,),
            ).fetchone()[0]
            conn.execute(postgres.drop_database_sql(target.name, force=False))
    except postgres.Error as exc:
        raise Refused(f"could not drop database {quoted(target.name)}: {_pg_message(exc)}; nothing was dropped") from None
    try:
        _create(conn, target.name, target)
    except postgres.Error as exc:
        raise DbctlError(f"database {quoted(target.name)} was dropped but could not be created again as it was: "
                         f"{_pg_message(exc)}; fix that, then run dbctl reset again") from None
    if target.attributes is not None:  # the rehearsal matched; this holds the real one to the same
        lost = target.attributes.differences(postgres.database_attributes(conn, target.name))
        if lost:
            raise DbctlError(f"database {quoted(target.name)} was re-created with {'; '.join(lost)}; restore them, "
                             "then run dbctl migrate")
    return ended, time.perf_counter_ns() - start
