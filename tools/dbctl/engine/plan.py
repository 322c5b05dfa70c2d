"""Compare the migration files with the database's history: a pure function.

Each version gets one state:
  applied       in the history with the file's checksum
  modified      in the history, but the file's checksum differs
  missing       in the history, but no file on disk
  pending       not applied yet
  out-of-order  not applied, older than the newest applied version
  failed        not applied, and its last recorded attempt failed
  dirty         in the history with success = false (sqlx wrote it for a failed run; sqlx refuses to start)

`judge` turns a plan into the one verdict every command reports (status, verify,
migrate, seed, /health, doctor, the init container): nothing else decides
whether a history is ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from dbctl.engine.source import Migration

APPLIED, MODIFIED, MISSING = "applied", "modified", "missing"
PENDING, OUT_OF_ORDER, FAILED = "pending", "out-of-order", "failed"
DIRTY = "dirty"


class AppliedRow(NamedTuple):
    """One row of _sqlx_migrations."""

    version: int
    description: str
    checksum: bytes
    success: bool
    installed_on: datetime | None = None
    execution_time_ns: int | None = None


class Attempt(NamedTuple):
    """The latest row of dbctl's attempts table for a version."""

    version: int
    outcome: str  # success, failed, retried, interrupted, lost (postgres.OUTCOME_CHECK)
    started_at: datetime | None = None
    duration_ns: int | None = None
    host: str | None = None
    error: str | None = None


@dataclass
class Entry:
    version: int
    description: str
    state: str
    migration: Migration | None = None
    applied: AppliedRow | None = None
    last_attempt: Attempt | None = None

    @property
    def is_pending(self) -> bool:
        return self.state in (PENDING, OUT_OF_ORDER, FAILED)


@dataclass
class Plan:
    entries: list[Entry] = field(default_factory=list)
    target: int | None = None

    def with_state(self, *states: str) -> list[Entry]:
        return [e for e in self.entries if e.state in states]

    @property
    def to_apply(self) -> list[Entry]:
        """Pending migrations in version order, up to the target if one was given."""
        return [
            e for e in self.entries if e.is_pending and (self.target is None or e.version <= self.target)
        ]

    @property
    def out_of_order(self) -> list[Entry]:
        newest = self.current_version
        return [] if newest is None else [e for e in self.to_apply if e.version < newest]

    @property
    def up_to_date(self) -> bool:
        return judge(self).ok

    @property
    def current_version(self) -> int | None:
        return max((e.version for e in self.entries if e.applied), default=None)


def build_plan(
    migrations: list[Migration],
    applied: list[AppliedRow],
    attempts: dict[int, Attempt] | None = None,
    target: int | None = None,
) -> Plan:
    attempts = attempts or {}
    files = {m.version: m for m in migrations}
    rows = {r.version: r for r in applied}
    newest_applied = max(rows, default=None)
    plan = Plan(target=target)
    for version in sorted(files.keys() | rows.keys()):
        migration, row = files.get(version), rows.get(version)
        attempt = attempts.get(version)
        if row is not None and not row.success:
            state = DIRTY  # whatever the file says: sqlx refuses the whole database
        elif row is not None and migration is None:
            state = MISSING
        elif row is not None:
            state = APPLIED if row.checksum == migration.checksum else MODIFIED
        elif attempt is not None and attempt.outcome == "failed":
            state = FAILED
        elif newest_applied is not None and version < newest_applied:
            state = OUT_OF_ORDER
        else:
            state = PENDING
        description = migration.description if migration else row.description
        plan.entries.append(Entry(version, description, state, migration, row, attempt))
    return plan


@dataclass
class Verdict:
    """Whether the history is ready for the files, and every reason it is not (one line each)."""

    ok: bool
    problems: list[str]
    pending: list[Entry]
    modified: list[Entry]
    missing: list[Entry]
    dirty: list[Entry]
    newer: list[Entry]  # applied beyond every file (a newer image migrated); a problem unless allow_newer


def label(entry: Entry) -> str:
    """The file name when there is a file, else what the history says."""
    return entry.migration.label if entry.migration else f"version {entry.version} ({entry.description})"


def judge(plan: Plan, *, allow_newer: bool = False) -> Verdict:
    """The one decision on a history: ready, or the problems, in the words every command prints.

    Pending means what would be applied (up to the plan's target); `allow_newer` (readiness of a
    running older backend) accepts versions applied beyond every file this copy has.
    """
    newest_file = max((e.version for e in plan.entries if e.migration), default=None)
    missing = plan.with_state(MISSING)
    newer = [e for e in missing if allow_newer and (newest_file is None or e.version > newest_file)]
    verdict = Verdict(ok=True, problems=[], pending=plan.to_apply, modified=plan.with_state(MODIFIED),
                      missing=[e for e in missing if e not in newer], dirty=plan.with_state(DIRTY), newer=newer)
    for e in verdict.dirty:
        verdict.problems.append(
            f"_sqlx_migrations marks version {e.version} as failed (success = false), which sqlx treats as a dirty "
            f"database; "
            f"check its objects by hand, then DELETE FROM _sqlx_migrations WHERE version = {e.version}")
    if verdict.pending:
        names = ", ".join(label(e) for e in verdict.pending)
        verdict.problems.append(f"{len(verdict.pending)} pending migration(s): {names}; run dbctl migrate")
    for e in verdict.modified:
        verdict.problems.append(f"{label(e)} changed after it was applied")
    for e in verdict.missing:
        verdict.problems.append(f"version {e.version} ({e.description}) is applied but has no file")
    verdict.ok = not verdict.problems
    return verdict
