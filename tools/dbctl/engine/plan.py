"""Compare the migration files with the database's history: a pure function.

Each version gets one state:
  applied       in the history with the file's checksum
  modified      in the history, but the file's checksum differs
  missing       in the history, but no file on disk
  pending       not applied yet
  out-of-order  not applied, older than the newest applied version
  failed        not applied, and its last recorded attempt failed
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from dbctl.engine.source import Migration

APPLIED, MODIFIED, MISSING = "applied", "modified", "missing"
PENDING, OUT_OF_ORDER, FAILED = "pending", "out-of-order", "failed"


@dataclass(frozen=True)
class AppliedRow:
    """One row of _sqlx_migrations."""

    version: int
    description: str
    checksum: bytes
    success: bool
    installed_on: datetime | None = None
    execution_time_ns: int | None = None


@dataclass(frozen=True)
class Attempt:
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
        return all(e.state == APPLIED for e in self.entries)

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
        if row is not None and migration is None:
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
