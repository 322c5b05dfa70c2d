"""`dbctl status`: the history beside the files, for people (a table) and programs (JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dbctl.engine import plan as planning
from dbctl.engine import postgres
from dbctl.engine.source import MigrationSet
from dbctl.text import escaped, format_ns
from dbctl.urls import mask_url


@dataclass
class Status:
    database: str
    server_version: str
    plan: planning.Plan
    tables: list[tuple[str, str, int | None, int]] = field(default_factory=list)
    invalid_indexes: list = field(default_factory=list)  # postgres.InvalidIndex, builds in progress left out
    extras: dict = field(default_factory=dict)  # JSON sections added by other modules (seeds)
    sections: list[str] = field(default_factory=list)  # their text for people
    own_tables: set[str] = field(default_factory=set)  # which of dbctl's and sqlx's tables exist


def gather(conn, url: str, migrations: MigrationSet, lock_wait: float) -> Status:
    """Everything status shows, read in two round trips (postgres.status_read)."""
    read = postgres.status_read(conn, lock_wait)
    return Status(
        database=mask_url(url),
        server_version=postgres.server_version(conn),
        plan=planning.build_plan(migrations.ups, read.history, read.attempts),
        tables=read.tables,
        invalid_indexes=[ix for ix in read.invalid_indexes if not ix.building],
        own_tables=read.own_tables,
    )


def as_dict(status: Status) -> dict:
    def when(value):
        return value.isoformat() if value else None

    return {
        "database": status.database,
        "server_version": status.server_version,
        "current_version": status.plan.current_version,
        "up_to_date": status.plan.up_to_date,
        "problems": planning.judge(status.plan).problems,
        "migrations": [
            {
                "version": e.version,
                "description": e.description,
                "state": e.state,
                "file": str(e.migration.path) if e.migration else None,
                "no_transaction": e.migration.no_tx if e.migration else None,
                "checksum": e.migration.checksum.hex() if e.migration else None,
                "applied_checksum": e.applied.checksum.hex() if e.applied else None,
                "installed_on": when(e.applied.installed_on) if e.applied else None,
                "execution_time_ns": e.applied.execution_time_ns if e.applied else None,
                "last_attempt": {
                    "outcome": e.last_attempt.outcome,
                    "started_at": when(e.last_attempt.started_at),
                    "runner": e.last_attempt.host,
                    "error": e.last_attempt.error,
                } if e.last_attempt else None,
            }
            for e in status.plan.entries
        ],
        "invalid_indexes": [{"index": ix.name, "table": ix.table, "ready": ix.ready, "fix": ix.drop}
                            for ix in status.invalid_indexes],
        "tables": [
            {"schema": s, "name": n, "rows_estimate": rows, "bytes_estimate": size}
            for s, n, rows, size in status.tables
        ],
        **status.extras,
    }


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    """Aligned columns; every cell escaped, so a name holding a newline cannot forge a row."""
    rows = [[escaped(str(c)) for c in row] for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def format_text(status: Status) -> str:
    plan = status.plan
    counts: dict[str, int] = {}
    for e in plan.entries:
        counts[e.state] = counts.get(e.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no migrations"
    version = plan.current_version if plan.current_version is not None else "none"
    out = [
        f"Database:   {status.database} (PostgreSQL {status.server_version})",
        f"Version:    {version}   Migrations: {summary}",
        "",
    ]
    rows = []
    for e in plan.entries:
        applied = e.applied
        error = e.last_attempt.error if e.last_attempt and e.last_attempt.outcome != "success" else ""
        rows.append([
            str(e.version), e.description, e.state,
            f"{applied.installed_on:%Y-%m-%d %H:%M:%S}" if applied and applied.installed_on else "-",
            format_ns(applied.execution_time_ns) if applied else "-",
            (error[:70] + "…") if len(error) > 71 else error,
        ])
    out.append(render_table(["VERSION", "DESCRIPTION", "STATE", "INSTALLED ON", "DURATION", "LAST ERROR"], rows))
    for problem in planning.judge(plan).problems:
        out.append(f"Problem:    {escaped(problem)}")
    for ix in status.invalid_indexes:
        out.append(f"Warning:    {escaped(ix.describe())}")
    out.extend(status.sections)
    out.append("")
    user_tables = [t for t in status.tables if t[1] not in postgres.OWN_TABLES]
    out.append(f"Tables: {len(user_tables)}")
    if user_tables:
        out.append(render_table(
            ["SCHEMA", "TABLE", "ROWS", "SIZE"],
            [[s, n, "-" if rows is None else str(rows), _size(size)] for s, n, rows, size in user_tables],
        ))
    return "\n".join(out)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
