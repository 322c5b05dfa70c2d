"""`dbctl test`: prove a migrations directory in CI, on scratch databases only.

1. lint the files (all of them, or those after a baseline version);
2. apply every migration, one at a time, to scratch database A; after each
   reversible one, roll it back (the schema must be exactly what it was before)
   and apply it again (exactly what it was after);
3. apply everything at once to a fresh scratch database B: A, after all those
   round trips, must not differ from it (the drift check).

Nothing outside the two scratch databases is touched; both are dropped at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dbctl.engine import postgres
from dbctl.checks.drift import compare, snapshot
from dbctl.errors import DbctlError
from dbctl.checks.lint import lint_migrations, select_migrations
from dbctl.engine.source import MigrationSet


@dataclass
class Step:
    name: str
    ok: bool
    detail: str = ""

    def as_dict(self) -> dict:
        return {"step": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class TestReport:
    directory: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def failures(self) -> list[Step]:
        return [s for s in self.steps if not s.ok]

    def as_dict(self) -> dict:
        return {"migrations": self.directory, "ok": self.ok, "steps": [s.as_dict() for s in self.steps]}

    def format_text(self) -> str:
        lines = [f"dbctl test: {self.directory}"]
        for s in self.steps:
            lines.append(f"  {'ok  ' if s.ok else 'FAIL'}  {s.name}")
            lines += [f"        {line}" for line in s.detail.splitlines() if line] if not s.ok or s.detail else []
        verdict = "passed" if self.ok else f"FAILED ({len(self.failures)} of {len(self.steps)} steps)"
        lines.append(f"{verdict}: {len(self.steps)} step(s)")
        return "\n".join(lines)


def _quiet(_message: str) -> None:
    pass


def run_tests(server_url: str, migrations: MigrationSet, *, lint_since: int | None = None,
              busy_tables=frozenset(), progress=_quiet) -> TestReport:
    report = TestReport(str(migrations.directory))
    files, selection = select_migrations(migrations.ups, applied=None, since=lint_since, everything=lint_since is None)
    lint = lint_migrations(files, busy_tables, selection)
    report.steps.append(Step(f"lint ({selection}: {len(files)} file(s))", lint.ok,
                             "\n".join(f.describe() for f in lint.findings)))
    progress(report.steps[-1].name)

    from dbctl.checks.scratch import scratch_database

    with scratch_database(server_url, "test") as a_url:
        final = _round_trips(a_url, migrations, report, progress)
        if final is not None:
            with scratch_database(server_url, "test") as b_url:
                _step(report, "apply all migrations at once to a second scratch database",
                      lambda: _migrate(b_url, migrations, None), progress)
                if report.steps[-1].ok:
                    fresh = _snapshot(b_url)
                    diffs = compare(fresh, final)
                    report.steps.append(Step(
                        "drift: the round-tripped schema equals a straight run of the migrations", not diffs,
                        "\n".join(d.describe("the straight run", "the round-tripped database") for d in diffs)))
                    progress(report.steps[-1].name)
    return report


def _round_trips(url: str, migrations: MigrationSet, report: TestReport, progress) -> dict | None:
    """Apply one migration at a time; down and up again for reversible ones. The final schema, or None."""
    from dbctl.engine.rollback import RollbackOptions, rollback

    before = _snapshot(url)
    for m in migrations.ups:
        if not _step(report, f"apply {m.label}", lambda: _migrate(url, migrations, m.version), progress):
            return None
        after = _snapshot(url)
        down = migrations.downs.get(m.version)
        if down is not None:
            if not _step(report, f"roll back {down.label}",
                         lambda: rollback(url, migrations, RollbackOptions(steps=1, wait_timeout=5),
                                          say=_quiet, warn=_quiet), progress):
                return None
            diffs = compare(before, _snapshot(url))
            report.steps.append(Step(f"{down.label} restores the schema before {m.label}", not diffs,
                                     "\n".join(d.describe("the schema before", "the schema after the down file")
                                               for d in diffs)))
            if not _step(report, f"apply {m.label} again", lambda: _migrate(url, migrations, m.version), progress):
                return None
            diffs = compare(after, _snapshot(url))
            report.steps.append(Step(f"{m.label} again gives the same schema as the first time", not diffs,
                                     "\n".join(d.describe("the first run", "the second run") for d in diffs)))
        before = after
    return before


def _step(report: TestReport, name: str, action, progress) -> bool:
    try:
        action()
    except DbctlError as exc:
        report.steps.append(Step(name, False, " ".join(str(exc).split())))
        progress(f"FAIL {name}")
        return False
    report.steps.append(Step(name, True))
    progress(name)
    return True


def _migrate(url: str, migrations: MigrationSet, target: int | None) -> None:
    from dbctl.engine.migrator import MigrateOptions, migrate

    migrate(url, migrations, MigrateOptions(target=target, wait_timeout=5, max_attempts=1), say=_quiet, warn=_quiet)


def _snapshot(url: str) -> dict:
    conn = postgres.connect(url, application_name="dbctl test")
    with conn:
        return snapshot(conn)
