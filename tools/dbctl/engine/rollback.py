"""Revert reversible migrations with their `.down.sql`, newest first, as sqlx's revert does.

Each down file runs in its own transaction together with the removal of its
`_sqlx_migrations` row, under the same advisory lock `migrate` takes, so a sqlx
backend and dbctl never migrate and revert at the same time. Before touching
anything the whole plan is checked: a missing down file refuses the run.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

from dbctl.engine import plan as planning
from dbctl.engine import postgres
from dbctl.config import actor_identity, runner_identity
from dbctl.errors import ConfigError, ConnectError, MigrationFailed, Refused
from dbctl.urls import print_line
from dbctl.engine.migrator import (INTERRUPTS, read_wait, holding_lock, refuse_client_copy, refuse_dirty,
                                   warn_own_transaction_control, what_stayed)
from dbctl.engine.plan import AppliedRow
from dbctl.engine.source import Migration, MigrationSet, lexical_facts, refuse_nul
from dbctl.text import format_ns


@dataclass
class RollbackOptions:
    to_version: int | None = None  # revert everything newer than this (below the oldest: everything)
    steps: int | None = None  # or this many of the newest applied migrations
    dry_run: bool = False
    lock_timeout: str | None = None
    statement_timeout: str | None = None
    wait_timeout: float = 30.0
    lock_wait_timeout: float = 300.0


@dataclass
class RollbackResult:
    planned: list[Migration] = field(default_factory=list)  # down files, in the order they run
    reverted: list[tuple[Migration, int]] = field(default_factory=list)  # (down file, nanoseconds)
    current_version: int | None = None  # after the run (or, for a dry run, before it)


def select_versions(history: list[AppliedRow], to_version: int | None, steps: int | None) -> list[int]:
    """The applied versions to revert, newest first: a pure function."""
    if to_version is not None and steps is not None:
        raise ConfigError("give either --to VERSION or --steps N, not both")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps}: must be 1 or more")
    applied = sorted((row.version for row in history), reverse=True)
    if to_version is not None:
        # As sqlx's undo: revert everything newer than the target. Versions are any i64 (0 and negative
        # included), so any target below the oldest applied version reverts them all.
        if applied and to_version not in applied and to_version > applied[-1]:
            raise ConfigError(
                f"--to {to_version} is not an applied version; applied: "
                f"{', '.join(map(str, sorted(applied)))} (give one of them, or a version below "
                f"{applied[-1]} to revert everything)"
            )
        return [v for v in applied if v > to_version]
    return applied[: steps or 1]


def plan_rollback(history: list[AppliedRow], migrations: MigrationSet, options: RollbackOptions) -> list[Migration]:
    """The down files to run, newest first; Refused when one is missing, before anything runs."""
    versions = select_versions(history, options.to_version, options.steps)
    ups = migrations.by_version()
    for version in versions:
        if version in migrations.duplicate_downs:
            raise Refused(f"cannot roll back version {version}: {' and '.join(migrations.duplicate_downs[version])} "
                          "both revert it; nothing was reverted; keep one down file per version")
        if version in migrations.downs:
            refuse_nul(migrations.downs[version])
    missing = [v for v in versions if v not in migrations.downs]
    if missing:
        names = ", ".join(ups[v].label if v in ups else f"version {v}" for v in missing)
        raise Refused(
            f"cannot roll back: {names} has no .down.sql in {migrations.directory}; nothing was reverted; "
            "write the down file (or revert by hand with a new forward migration)"
        )
    return [migrations.downs[v] for v in versions]


def rollback(url: str, migrations: MigrationSet, options: RollbackOptions, say=print_line, warn=print_line) -> RollbackResult:
    runner, actor = runner_identity(), actor_identity()
    conn = postgres.wait_for_connection(url, options.wait_timeout, application_name=f"dbctl rollback {runner}")
    result = RollbackResult()
    with conn:
        try:
            _rollback(conn, migrations, options, runner, actor, result, say, warn)
        except postgres.Error as exc:  # outside a down file's SQL: setup, reading history, a lost connection
            done = f" ({len(result.reverted)} migration(s) were reverted before it)" if result.reverted else ""
            raise ConnectError(postgres.describe_sql_error(exc, conn) + done) from None
    return result


def _rollback(conn, migrations: MigrationSet, options: RollbackOptions, runner, actor, result: RollbackResult,
              say, warn) -> None:
    with nullcontext() if options.dry_run else holding_lock(conn, options.lock_wait_timeout, say):
        with postgres.bounded_waits(conn, read_wait(options), "read the migration history"):
            history = postgres.read_history(conn)
        refuse_dirty(planning.build_plan(migrations.ups, history))
        result.planned = plan_rollback(history, migrations, options)
        result.current_version = max((r.version for r in history), default=None)
        _warn_changed(history, migrations, result.planned, warn)
        facts = {down.version: lexical_facts(down.raw) for down in result.planned}
        # Down files get the checks up files get: the same execution makes the same surprises.
        for down in result.planned:
            if not down.no_tx:
                warn_own_transaction_control(down, facts[down.version], warn)
        if options.dry_run or not result.planned:
            return
        for down in result.planned:
            refuse_client_copy(down, facts[down.version], "rollback")
        postgres.ensure_reverts_table(conn)
        for down in result.planned:
            try:
                duration = postgres.revert_migration(
                    conn, down, runner=runner, actor=actor,
                    lock_timeout=options.lock_timeout, statement_timeout=options.statement_timeout,
                )
            except INTERRUPTS as exc:  # SIGINT/SIGTERM: the statement is cancelled on the server (connection._wait)
                _note_interrupted(conn, down, result, exc)
                raise
            except postgres.MigrationError as exc:
                done = f"; {len(result.reverted)} newer migration(s) were reverted before it" if result.reverted else ""
                undo = what_stayed(exc.failure, facts[down.version])
                raise MigrationFailed(f"{exc.failure.describe()}; {undo}, and version {down.version} is still in "
                                      f"the history{done}; fix the down file and run dbctl rollback again") from None
            result.reverted.append((down, duration))
            say(f"reverted {down.label} ({format_ns(duration)})")
        with postgres.bounded_waits(conn, read_wait(options), "read the migration history"):
            remaining = postgres.read_history(conn)
        result.current_version = max((r.version for r in remaining), default=None)


def _note_interrupted(conn, down: Migration, result: RollbackResult, exc: BaseException) -> None:
    """What the interrupted rollback left: the down file's transaction rolled back, or already committed."""
    done = (f"; the {len(result.reverted)} newer migration(s) reverted before it stay reverted"
            if result.reverted else "")
    try:
        reverted = postgres.end_transaction(conn) and not postgres.is_applied(conn, down.version)
    except postgres.Error:
        exc.add_note(f"while running {down.label}; PostgreSQL rolls back what it did when the session ends{done}")
        return
    if reverted:
        exc.add_note(f"just after {down.label} reverted version {down.version} (it had committed){done}")
    else:
        exc.add_note(f"while running {down.label}: the statement was cancelled and rolled back, version "
                     f"{down.version} is still applied{done}")


def _warn_changed(history: list[AppliedRow], migrations: MigrationSet, planned: list[Migration], warn) -> None:
    """A changed up file means its down file may not match what the database holds: say so."""
    applied = {r.version: r for r in history}
    ups = migrations.by_version()
    for down in planned:
        up, row = ups.get(down.version), applied.get(down.version)
        if up is not None and row is not None and up.checksum != row.checksum:
            warn(f"warning: {up.label} changed since it was applied; check that {down.label} still undoes "
                 "what the database holds")
