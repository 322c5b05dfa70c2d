"""Is the schema ready for the backend? Asked by init containers, /health and `dbctl verify`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dbctl.engine import plan as planning
from dbctl.engine import postgres
from dbctl.engine.source import MigrationSet


@dataclass
class SchemaReport:
    ok: bool
    current_version: int | None
    expected_version: int | None
    problems: list[str] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    modified: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    missing_tables: list[str] = field(default_factory=list)
    newer: list[int] = field(default_factory=list)  # applied, newer than every file (allow_newer only)
    dirty: list[int] = field(default_factory=list)  # success = false rows
    invalid_indexes: list[str] = field(default_factory=list)  # what to run for each: DROP INDEX CONCURRENTLY ...
    warnings: list[str] = field(default_factory=list)  # reported, not failing (readiness: see check_schema)
    check_ms: float = 0.0

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "current_version": self.current_version,
            "expected_version": self.expected_version,
            "pending": self.pending,
            "modified": self.modified,
            "missing": self.missing,
            "missing_tables": self.missing_tables,
            "newer": self.newer,
            "dirty": self.dirty,
            "invalid_indexes": self.invalid_indexes,
            "problems": self.problems,
            "warnings": self.warnings,
            "check_ms": round(self.check_ms, 2),
        }


def check_schema(conn, migrations: MigrationSet, tables, *, allow_newer: bool = False,
                 lock_wait: float = 3.0) -> SchemaReport:
    """Every file applied with its checksum, nothing dirty, and the critical tables present.

    allow_newer: versions applied after every file this copy has (a newer
    image migrated the database) are listed in `newer` instead of being
    problems; a running older backend keeps working against an expanded schema.
    An INVALID index (a failed or interrupted CREATE INDEX / REINDEX CONCURRENTLY:
    never used, and a unique one lets duplicates in) fails the check with the
    DROP to run; under allow_newer (readiness of running backends) it is a
    warning, since taking every replica out of service would not fix it. An
    index still being built concurrently is not reported. Two round trips
    (postgres.schema_read); a lock held on the history longer than `lock_wait`
    seconds ends in LockTimeout naming the session.
    """
    start = time.perf_counter()
    tables = list(tables)
    read = postgres.schema_read(conn, tables, lock_wait)
    plan = planning.build_plan(migrations.ups, read.history)
    verdict = planning.judge(plan, allow_newer=allow_newer)
    report = SchemaReport(
        ok=True,
        current_version=plan.current_version,
        expected_version=max((m.version for m in migrations.ups), default=None),
        pending=[e.version for e in verdict.pending],
        modified=[e.version for e in verdict.modified],
        missing=[e.version for e in verdict.missing],
        newer=[e.version for e in verdict.newer],
        dirty=[e.version for e in verdict.dirty],
        problems=list(verdict.problems),
    )
    invalid = [ix for ix in read.invalid_indexes if not ix.building]
    report.invalid_indexes = [ix.drop for ix in invalid]
    (report.warnings if allow_newer else report.problems).extend(ix.describe() for ix in invalid)
    report.missing_tables = [t for t in tables if t not in read.present_tables]
    if report.missing_tables:
        report.problems.append(f"missing tables: {', '.join(report.missing_tables)}")
    report.ok = not report.problems
    report.check_ms = (time.perf_counter() - start) * 1000
    return report
