"""The engine: wait, lock, compare, refuse or apply, retry what is transient.

No SQL here; `postgres` does the talking. Progress goes through `say`,
warnings through `warn`, so the CLI, a Job's log and tests all read the same lines.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from dbctl.engine import plan as planning
from dbctl.engine import postgres
from dbctl.config import duration_ms, runner_identity
from dbctl.errors import ConfigError, ConnectError, LockTimeout, MigrationFailed, Refused
from dbctl.urls import print_line
from dbctl.engine.source import Facts, Migration, MigrationSet, lexical_facts
from dbctl.text import format_ns, quoted

MAX_ATTEMPTS = 3

# A signal turned into an exception (the CLI's handler raises a SystemExit; a bare Ctrl-C is a
# KeyboardInterrupt): connection._wait cancels the running statement on the server for both.
INTERRUPTS = (KeyboardInterrupt, SystemExit)


@dataclass
class MigrateOptions:
    target: int | None = None
    dry_run: bool = False
    strict: bool = False  # refuse out-of-order migrations instead of warning
    lock_timeout: str | None = None  # PostgreSQL lock_timeout for each migration
    statement_timeout: str | None = None
    wait_timeout: float = 30.0  # for PostgreSQL to accept connections
    lock_wait_timeout: float = 300.0  # for another runner to release the migration lock
    max_attempts: int = MAX_ATTEMPTS
    actor: str | None = None  # who asked for the run (DBCTL_ACTOR or the OS user), kept with each attempt
    announce_plan: bool = False  # print the plan before applying (production mode)


@dataclass
class MigrateResult:
    plan: planning.Plan
    applied: list[tuple[Migration, int]] = field(default_factory=list)  # (migration, nanoseconds)
    retries: int = 0


@dataclass
class _Unrecorded:
    failure: postgres.SqlFailure
    attempt: int
    started_at: datetime
    duration_ns: int
    outcome: str
    actor: str | None = None


class _Retry(Exception):
    pass


def _quiet(_message: str) -> None:
    pass


def migrate(url: str, migrations: MigrationSet, options: MigrateOptions | None = None,
            say=print_line, warn=print_line) -> MigrateResult:
    """Bring the database up to the files (or to options.target)."""
    options = options or MigrateOptions()
    if options.target is not None and options.target not in migrations.by_version():
        raise ConfigError(f"--target {options.target} is not a migration version in {migrations.directory}")
    runner = runner_identity()
    tries: dict[int, int] = {}
    invalid_before: dict[int, set[str]] = {}  # per no-transaction version: invalid indexes before its first attempt
    unrecorded: list[_Unrecorded] = []
    result = MigrateResult(plan=planning.Plan())
    session_losses = 0
    while True:
        try:
            _session(url, migrations, options, runner, tries, invalid_before, unrecorded, result, say, warn)
            return result
        except INTERRUPTS as exc:
            if result.applied:
                exc.add_note(f"the {len(result.applied)} migration(s) applied before it stay applied")
            raise
        except _Retry:
            result.retries += 1
            delay = 0.5 * 2 ** (max(tries.values(), default=1) - 1)
            say(f"retrying in {delay:g}s")
            time.sleep(delay)
        except postgres.Error as exc:
            if not postgres.is_transient(exc):  # an answer (read-only, no privilege...): retrying cannot help
                raise ConnectError(postgres.describe_sql_error(exc)) from None
            # The connection went away outside a migration (while locking or reading history).
            session_losses += 1
            if session_losses >= options.max_attempts:
                raise ConnectError(
                    f"lost the connection to PostgreSQL {session_losses} times: {' '.join(str(exc).split())}"
                ) from None
            result.retries += 1
            say(f"connection lost ({' '.join(str(exc).split())}); reconnecting")
            time.sleep(0.5 * session_losses)


def _session(url, migrations, options, runner, tries, invalid_before, unrecorded, result, say, warn) -> None:
    conn = postgres.wait_for_connection(
        url, options.wait_timeout, application_name=f"dbctl migrate {runner}", on_wait=_throttled(say, 5)
    )
    with conn:
        try:
            if not (tries or result.retries) and _nothing_to_do(conn, migrations, options, result):
                return
            _run_session(conn, url, migrations, options, runner, tries, invalid_before, unrecorded, result, say,
                         warn)
        except postgres.Error as exc:
            if postgres.is_transient(exc):
                raise
            raise ConnectError(postgres.describe_sql_error(exc, conn)) from None


# How long the no-op check waits for a lock on the history before leaving the wait (bounded, and
# explained) to the full session.
QUICK_WAIT = 1.0


def _nothing_to_do(conn, migrations, options, result) -> bool:
    """Not for a dry run or explicit timeouts (production), which the full session checks and shows."""
    if options.dry_run or options.lock_timeout or options.statement_timeout:
        return False
    plan = up_to_date_plan(conn, migrations, options.target, min(read_wait(options), QUICK_WAIT))
    if plan is None:
        return False
    result.plan = plan
    return True


def up_to_date_plan(conn, migrations, target: int | None = None, lock_wait: float = QUICK_WAIT):
    """The plan when one read of the history shows nothing to do, without the lock; else None.

    Most runs (every `tilt up`, every Job re-run) find the database up to date. Any doubt (no
    history yet, anything pending, modified, missing or dirty, a lock in the way) returns None and
    the full session decides, with its lock, waits, refusals and messages."""
    history = postgres.quick_history(conn, lock_wait)
    if history is None:
        return None
    plan = planning.build_plan(migrations.ups, history, {}, target)
    return plan if planning.judge(plan).ok else None


def _run_session(conn, url, migrations, options, runner, tries, invalid_before, unrecorded, result, say,
                 warn) -> None:
    _check_timeouts(conn, options)
    # A dry run only plans: no lock to wait for, no tables to create.
    with nullcontext() if options.dry_run else holding_lock(conn, options.lock_wait_timeout, say):
        # Reading and preparing the history waits for another session's lock no longer than the run may.
        with postgres.bounded_waits(conn, read_wait(options), "read the migration history"):
            postgres.check_history_shape(conn)  # before creating anything beside a table of another shape
            if not options.dry_run:
                postgres.ensure_history_tables(conn)
                _flush(conn, unrecorded, runner)
            history = postgres.read_history(conn)
            if not options.dry_run:
                _account_for_lost_commits(conn, history, result, tries, runner, options, say)
            plan = planning.build_plan(migrations.ups, history, postgres.read_last_attempts(conn), options.target)
        refuse_dirty(plan)
        result.plan = plan
        check_plan(plan, migrations, options.strict, warn)
        facts = {e.version: lexical_facts(e.migration.raw) for e in plan.to_apply}
        warn_transaction_control(plan, facts, warn)
        if options.dry_run:
            return
        if options.announce_plan:
            _announce(plan, say)
        todo = plan.to_apply
        for entry in todo:
            try:
                refuse_client_copy(entry.migration, facts[entry.version])
            except MigrationFailed as exc:  # refused before sending: still an attempt, recorded like any other
                _record_refusal(conn, entry.migration, facts[entry.version].client_copy, str(exc), options, runner,
                                tries)
                raise
            # Only the run's last commit waits for the WAL flush; it makes the earlier ones durable too.
            _apply_one(url, conn, entry.migration, options, runner, tries, unrecorded, result, say,
                       durable=entry is todo[-1], facts=facts[entry.version], invalid_before=invalid_before)


def _apply_one(url, conn, migration, options, runner, tries, unrecorded, result, say, durable=True,
               facts=None, invalid_before=None) -> None:
    attempt = tries.get(migration.version, 0) + 1
    tries[migration.version] = attempt
    before = None
    if migration.no_tx:
        before = _invalid_baseline(conn, migration, attempt, invalid_before, options, say)
    started_at = datetime.now(timezone.utc)
    start = time.perf_counter_ns()
    try:
        duration = postgres.apply_migration(
            conn, migration, attempt=attempt, runner=runner,
            lock_timeout=options.lock_timeout, statement_timeout=options.statement_timeout,
            actor=options.actor, durable=durable, facts=facts, invalid_before=before,
        )
    except INTERRUPTS as exc:  # SIGINT/SIGTERM: the statement is cancelled on the server (connection._wait)
        _stop_migration(url, conn, migration, attempt, started_at, start, options, runner, exc)
        raise
    except postgres.MigrationError as exc:
        failure = exc.failure
        if migration.no_tx and not failure.invalid_indexes:
            failure = replace(failure, invalid_indexes=tuple(_left_after_failure(url, conn, migration, before)))
        retry = failure.transient and attempt < options.max_attempts
        unrecorded.append(_Unrecorded(failure, attempt, started_at, time.perf_counter_ns() - start,
                                      "retried" if retry else "failed", options.actor))
        if not failure.connection_lost:
            _flush_quietly(conn, unrecorded, runner)
        if retry:
            say(f"  {migration.label}: attempt {attempt} of {options.max_attempts} failed: {failure.message}")
            raise _Retry() from None
        _record_after_loss(url, conn, unrecorded, runner)
        raise MigrationFailed(_failure_message(failure, attempt, facts)) from None
    result.applied.append((migration, duration))  # once: a lost one left this list when found missing
    say(f"applied {migration.label} ({format_ns(duration)})")


def _record_refusal(conn, migration: Migration, line: int | None, message: str, options: MigrateOptions,
                    runner: str, tries: dict[int, int]) -> None:
    """An attempt row for a migration refused before it was sent: `dbctl status` shows it as failed, with why."""
    attempt = tries.get(migration.version, 0) + 1
    tries[migration.version] = attempt
    failure = postgres.SqlFailure(migration, None, message, None, line, transient=False, connection_lost=False)
    postgres.record_failure(conn, failure, attempt=attempt, runner=runner, started_at=datetime.now(timezone.utc),
                            duration_ns=0, outcome="failed", actor=options.actor)


def _announce(plan: planning.Plan, say) -> None:
    """The plan, before anything runs: in production the log shows what was about to happen."""
    todo = plan.to_apply
    current = "none" if plan.current_version is None else plan.current_version
    say(f"plan: {len(todo)} migration(s) to apply (database at version {current})")
    for e in todo:
        mode = " (no transaction)" if e.migration.no_tx else ""
        say(f"  will apply {e.migration.label}{mode}")


def _failure_message(failure: postgres.SqlFailure, attempt: int, facts: Facts | None = None) -> str:
    tried = f" after {attempt} attempts" if attempt > 1 else ""
    if failure.invalid_indexes:
        left = postgres.left_message(list(failure.invalid_indexes))
        if failure.sqlstate is None and not failure.connection_lost:  # the file itself succeeded
            return f"{failure.describe()}: {left} then dbctl migrate again"
        return f"{failure.describe()}{tried}; it left an {left} then fix the file and run dbctl migrate again"
    undo = what_stayed(failure, facts or lexical_facts(failure.migration.raw))
    if failure.sqlstate == "25006":  # not the file's fault: the server is a standby, or read-only
        return f"{failure.describe()}; {undo}; {postgres.setup_hint('25006')}"
    return f"{failure.describe()}{tried}; {undo}; fix it and run dbctl migrate again"


def what_stayed(failure: postgres.SqlFailure, facts: Facts) -> str:
    """What a failed file left behind, for up and down files alike.

    The file ran as one query: PostgreSQL rolls back everything it did unless
    the file itself ended the transaction before the failing statement; then
    what preceded that COMMIT stays (as under sqlx).
    """
    if failure.stayed:  # dbctl refused the file itself and said what it left
        return failure.stayed
    m = failure.migration
    control = facts.transaction_control
    if control and (failure.line is None or failure.line > control[0]):
        line, statement = control
        if statement in ("ROLLBACK", "ABORT"):
            return (f"its {statement} at line {line} undid what preceded it and PostgreSQL rolled back the rest, "
                    f"so nothing of {m.label} was applied")
        maybe = "may have been" if failure.line is None else "was"
        return (f"what precedes its {statement} at line {line} {maybe} committed (the file ends the transaction "
                f"itself, as sqlx lets it): check those objects by hand, and remove the file's own {statement}")
    if m.no_tx:
        return (f"nothing of {m.label} was applied (it ran outside a transaction as one query, which PostgreSQL "
                "rolls back as a whole)")
    return f"nothing of {m.label} was applied"


def transaction_control_warning(m: Migration, line: int, statement: str) -> str:
    if statement in ("ROLLBACK", "ABORT"):
        return (f"warning: {m.path}:{line}: {statement} undoes what precedes it; when it does, dbctl refuses to "
                "write the history change (sqlx would write it, and the history would not match the schema); "
                f"remove the file's own BEGIN/{statement}, dbctl and sqlx already run it in a transaction")
    return (f"warning: {m.path}:{line}: {statement} ends the migration's transaction before its history "
            "row is written (sqlx does the same); if anything after it fails, part of the file stays "
            "applied; remove the file's own BEGIN/COMMIT, dbctl and sqlx already run it in a transaction")


def _flush(conn, unrecorded: list[_Unrecorded], runner: str) -> None:
    while unrecorded:
        item = unrecorded[0]
        postgres.record_failure(conn, item.failure, attempt=item.attempt, runner=runner,
                                started_at=item.started_at, duration_ns=item.duration_ns, outcome=item.outcome,
                                actor=item.actor)
        unrecorded.pop(0)


def _account_for_lost_commits(conn, history, result: MigrateResult, tries, runner, options, say) -> None:
    """After a reconnect: migrations this run applied that the history no longer holds were lost with the
    server (their commits did not wait for the WAL flush; only the run's last one does).

    Each gets an attempt row `lost` under the attempt number it had, so the attempts
    table reads 1 lost, 2 success when it is applied again; the run's summary counts
    it once.
    """
    present = {row.version for row in history}
    lost = [(m, ns) for m, ns in result.applied if m.version not in present]
    if not lost:
        return
    result.applied = [(m, ns) for m, ns in result.applied if m.version in present]
    say(f"{len(lost)} migration(s) this run applied were lost when PostgreSQL went down (committed without "
        f"waiting for the WAL flush): {', '.join(m.label for m, _ in lost)}; applying them again")
    for migration, ns in lost:
        failure = postgres.SqlFailure(migration, None, "applied, but the commit was lost when PostgreSQL went "
                                      "down before flushing it; applied again", None, None, True, False)
        postgres.record_failure(conn, failure, attempt=tries.get(migration.version, 1), runner=runner,
                                started_at=datetime.now(timezone.utc), duration_ns=ns, outcome="lost",
                                actor=options.actor)


def _invalid_baseline(conn, migration, attempt, invalid_before, options, say) -> set[str]:
    """The invalid indexes before this file's first attempt; before a retry, drop the ones an earlier
    attempt of this run left (ours: else IF NOT EXISTS would skip the half-built index)."""
    version = migration.version
    if version not in invalid_before or attempt == 1:
        invalid_before[version] = {ix.name for ix in postgres.invalid_indexes(conn)}
        return invalid_before[version]
    for index in postgres.invalid_indexes(conn):
        if index.name in invalid_before[version]:
            continue
        try:
            postgres.drop_index_concurrently(conn, index, options.lock_timeout)
            say(f"  dropped the INVALID index {index.name} an earlier attempt of {migration.label} left")
        except postgres.Error:
            pass  # still there: the attempt's own check reports it with the DROP to run
    return invalid_before[version]


def signal_name(exc: BaseException) -> str:
    """SIGTERM or SIGINT, from the exception the CLI's signal handler raised (a plain Ctrl-C: SIGINT)."""
    return signal.Signals(getattr(exc, "signum", signal.SIGINT)).name


def _stop_migration(url, conn, migration, attempt, started_at, start, options, runner, exc) -> None:
    """Leave the database as if the interrupted migration had not started, record the attempt, say so.

    The statement was cancelled on the server; its transaction is rolled back here
    (the lock is released after this, by holding_lock). If the cancel came too late
    and the migration committed, it is applied and nothing is recorded as interrupted.
    A cancelled CREATE INDEX CONCURRENTLY leaves an INVALID index: dropped at once
    if that is quick, else named with its DROP.
    """
    name = signal_name(exc)
    session = conn if postgres.end_transaction(conn) else None
    try:
        session = session or postgres.connect(url, timeout=3)
    except ConnectError:
        exc.add_note(f"while applying {migration.label}; PostgreSQL rolls back what it did when the session ends")
        return
    try:
        if postgres.is_applied(session, migration.version):
            exc.add_note(f"just after {migration.label} was applied (it had committed)")
            return
        left = ""
        if migration.no_tx:
            for index in postgres.invalid_indexes_left(session, migration, set()):
                try:
                    postgres.drop_index_concurrently(session, index, "1s")
                except postgres.Error:
                    postgres.end_transaction(session)
                    left += f"; it left an {index.describe()}"
        failure = postgres.SqlFailure(migration, "57014", f"interrupted by {name}; the statement was cancelled "
                                      "and rolled back", None, None, False, False)
        postgres.record_failure(session, failure, attempt=attempt, runner=runner, started_at=started_at,
                                duration_ns=time.perf_counter_ns() - start, outcome="interrupted",
                                actor=options.actor)
        exc.add_note(f"while applying {migration.label}: the statement was cancelled and rolled back{left}")
    except postgres.Error:
        exc.add_note(f"while applying {migration.label}; PostgreSQL rolls back what it did when the session ends")
    finally:
        if session is not conn:
            session.close()


def _left_after_failure(url, conn, migration, before) -> list:
    """Invalid indexes a failed no-transaction attempt left; asked on a new connection if it cost ours."""
    try:
        if not (conn.closed or conn.broken):
            return postgres.invalid_indexes_left(conn, migration, before)
        with postgres.connect(url, timeout=5) as fresh:
            return postgres.invalid_indexes_left(fresh, migration, before)
    except (postgres.Error, ConnectError):
        return []  # the server is away: a retry or the next run finds them


def _flush_quietly(conn, unrecorded: list[_Unrecorded], runner: str) -> None:
    """Record failed attempts now if the session still can; otherwise they stay queued for the next
    session (or _record_after_loss). Recording must never hide the failure being recorded."""
    try:
        _flush(conn, unrecorded, runner)
    except postgres.Error:
        pass


def _record_after_loss(url, conn, unrecorded, runner) -> None:
    """A failure that cost us the connection is still worth recording: reconnect once to do it."""
    if not unrecorded:
        return
    try:
        if conn.closed or conn.broken:
            conn = postgres.connect(url, timeout=5)
        _flush(conn, unrecorded, runner)
    except Exception:  # recording is best effort; the failure itself is what we report
        pass


def _check_timeouts(conn, options: MigrateOptions) -> None:
    for name, value in (("lock_timeout", options.lock_timeout), ("statement_timeout", options.statement_timeout)):
        if value is None:
            continue
        try:
            postgres.check_setting(conn, name, value)
        except postgres.Error as exc:
            if postgres.is_transient(exc):  # the connection, not the value: the session loop retries
                raise
            message = getattr(exc.diag, "message_primary", None) or str(exc)
            raise ConfigError(f"--{name.replace('_', '-')} {quoted(value)}: {message}; use e.g. 5s or 500ms") from None


@contextmanager
def holding_lock(conn, timeout: float, say=print_line):
    """sqlx's migration lock on `conn` for the body of the with-block; released however it ends."""
    key = postgres.lock_key(postgres.current_database(conn))
    acquire_lock(conn, key, timeout, say)
    interrupted = None
    try:
        yield
    except INTERRUPTS as exc:
        interrupted = exc
        raise
    finally:
        postgres.unlock(conn, key)  # rolls back an open transaction first, so a new run need not wait
        if interrupted is not None:
            interrupted.add_note("the migration lock is released")


def acquire_lock(conn, key: int, timeout: float, say=print_line) -> None:
    """Poll pg_try_advisory_lock: a blocked waiter would deadlock with CREATE INDEX CONCURRENTLY."""
    if postgres.try_lock(conn, key):
        return
    deadline = time.monotonic() + timeout
    next_report = 0.0
    delay = 0.05
    while True:
        now = time.monotonic()
        holder = None
        if now >= next_report or now >= deadline:
            holder = postgres.lock_holder(conn, key) or "another session"
        if now >= deadline:
            raise LockTimeout(
                f"gave up waiting for the migration lock after {timeout:g}s; it is held by {holder}; "
                "wait for that run to finish, or end it with SELECT pg_terminate_backend(<pid>)"
            )
        if holder:
            say(f"waiting for the migration lock, held by {holder}")
            next_report = now + 15
        time.sleep(min(delay, max(0.0, deadline - now)))
        delay = min(delay * 1.5, 0.5)
        if postgres.try_lock(conn, key):
            return


def read_wait(options) -> float:
    """Seconds reading the history may wait for another session's lock: --lock-wait-timeout, and no more
    than --lock-timeout (production's 5s) when one is set."""
    limit = options.lock_wait_timeout
    ms = duration_ms(options.lock_timeout) if options.lock_timeout else None
    return min(limit, ms / 1000) if ms else limit


def refuse_dirty(plan: planning.Plan) -> None:
    """A success = false row (sqlx wrote it) refuses the run, in the words of the one verdict (plan.judge)."""
    verdict = planning.judge(plan)
    if verdict.dirty:
        raise Refused(verdict.problems[0])


def warn_transaction_control(plan: planning.Plan, facts: dict[int, Facts], warn=print_line) -> None:
    """A file's own COMMIT/ROLLBACK ends the migration's transaction early, under sqlx as here.

    Applied as sqlx applies it (refusing would leave a database sqlx already
    migrated unmigratable by dbctl), with a warning: what precedes it commits
    before the history row, so a failure after it leaves part of the file applied.
    """
    for entry in plan.to_apply:
        if not entry.migration.no_tx:
            warn_own_transaction_control(entry.migration, facts[entry.version], warn)


def warn_own_transaction_control(m: Migration, facts: Facts, warn=print_line) -> None:
    """The file's first COMMIT/ROLLBACK..., and its first ROLLBACK when a COMMIT came before it."""
    for found in dict.fromkeys(f for f in (facts.transaction_control, facts.rollback) if f):
        warn(transaction_control_warning(m, *found))


def refuse_client_copy(migration: Migration, facts: Facts, command: str = "migrate") -> None:
    """COPY ... FROM STDIN / TO STDOUT needs a client that streams the data; a migration is one query.

    sqlx fails on it when it reaches the file (earlier files stay applied); so does
    dbctl, before sending it, since the driver would be left mid-COPY.
    """
    if facts.client_copy:
        nothing = "nothing of the file was applied" if command == "migrate" else "nothing was reverted"
        raise MigrationFailed(
            f"{migration.path}:{facts.client_copy}: COPY ... FROM STDIN / TO STDOUT cannot run in a migration "
            f"(sqlx fails on it too); {nothing}; use INSERT, or COPY from a server-side file"
        )


def check_plan(plan: planning.Plan, migrations: MigrationSet, strict: bool, warn=print_line) -> None:
    """Refuse modified and missing migrations; warn about (or with strict, refuse) out-of-order ones."""
    modified = plan.with_state(planning.MODIFIED)
    if modified:
        e = modified[0]
        more = f" (and {len(modified) - 1} more)" if len(modified) > 1 else ""
        raise Refused(
            f"{e.migration.label} was changed after it was applied{more}: applied sha384 "
            f"{e.applied.checksum.hex()[:16]}…, file sha384 {e.migration.checksum.hex()[:16]}…; "
            f"restore the file (git checkout -- {e.migration.path}) and put the change in a new migration (dbctl new)"
        )
    missing = plan.with_state(planning.MISSING)
    if missing:
        e = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise Refused(
            f"version {e.version} ({e.description}) is applied but its file is missing from "
            f"{migrations.directory}{more}; restore the file, or point --migrations at the right directory"
        )
    late = plan.out_of_order
    if late:
        names = ", ".join(e.migration.label for e in late)
        newest = plan.current_version
        if strict:
            raise Refused(
                f"{names} older than the applied version {newest} (out of order); "
                "renumber it after the newest migration, or run without --strict"
            )
        warn(f"warning: applying {names} out of order (the database is already at version {newest})")


def _throttled(say, every: float):
    last = [0.0]

    def report(message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            say(f"waiting for PostgreSQL: {message}")

    return report
