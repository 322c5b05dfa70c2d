"""The benchmark's workloads, written out in each tool's own layout from the same SQL.

A workload is a list of (version, slug, sql). `plain` is sqlx's layout (dbctl,
and psql's file list); dbmate wants `-- migrate:up` markers; yoyo reads plain
`.sql` files in name order; sqitch wants a plan file and deploy/revert scripts,
each deploy script its own transaction (as sqitch's templates write them).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def kiro() -> list[tuple[int, str, str]]:
    """The 8 Kiro migrations, as committed."""
    out = []
    for path in sorted((REPO / "migrations").glob("*.sql")):
        version, rest = path.name.split("_", 1)
        out.append((int(version), rest[: -len(".sql")], path.read_text(encoding="utf-8")))
    return out


def generated(count: int) -> list[tuple[int, str, str]]:
    """`count` ordinary migrations: a table, its index and comment; every 5th also alters the previous table."""
    out = []
    for i in range(1, count + 1):
        name = f"bench_item_{i:04d}"
        sql = (
            f"-- generated migration {i}\n"
            f"CREATE TABLE {name} (\n"
            "    id BIGSERIAL PRIMARY KEY,\n"
            "    owner_id BIGINT NOT NULL,\n"
            "    name TEXT NOT NULL,\n"
            "    payload JSONB NOT NULL DEFAULT '{}'::jsonb,\n"
            "    created_at TIMESTAMPTZ NOT NULL DEFAULT now()\n"
            ");\n"
            f"CREATE INDEX {name}_owner_idx ON {name} (owner_id, created_at);\n"
            f"COMMENT ON TABLE {name} IS 'generated for the benchmark';\n"
        )
        if i % 5 == 0:
            sql += f"ALTER TABLE bench_item_{i - 1:04d} ADD COLUMN note TEXT;\n"
        out.append((i, f"create_{name}", sql))
    return out


def write_layouts(workload, root: Path) -> dict[str, Path]:
    """Write `workload` for every tool under `root`; returns tool -> directory."""
    dirs = {name: root / name for name in ("plain", "dbmate", "yoyo", "sqitch")}
    for d in dirs.values():
        d.mkdir(parents=True)
    (dirs["sqitch"] / "deploy").mkdir()
    (dirs["sqitch"] / "revert").mkdir()
    plan = ["%syntax-version=1.0.0", "%project=bench", ""]
    for version, slug, sql in workload:
        stem = f"{version:04d}_{slug}"
        no_tx = sql.startswith("-- no-transaction")
        (dirs["plain"] / f"{stem}.sql").write_text(sql, encoding="utf-8")
        (dirs["yoyo"] / f"{stem}.sql").write_text(
            ("-- transactional: false\n" if no_tx else "") + sql, encoding="utf-8")
        up = "-- migrate:up transaction:false\n" if no_tx else "-- migrate:up\n"
        (dirs["dbmate"] / f"{stem}.sql").write_text(up + sql + "\n-- migrate:down\n", encoding="utf-8")
        change = re.sub(r"[^A-Za-z0-9_]", "_", stem)
        body = sql if no_tx else f"BEGIN;\n{sql}\nCOMMIT;\n"
        (dirs["sqitch"] / "deploy" / f"{change}.sql").write_text(body, encoding="utf-8")
        (dirs["sqitch"] / "revert" / f"{change}.sql").write_text("SELECT 1;\n", encoding="utf-8")
        plan.append(f"{change} 2026-01-01T00:00:00Z Bench <bench@example.invalid> # {slug}")
    (dirs["sqitch"] / "sqitch.plan").write_text("\n".join(plan) + "\n", encoding="utf-8")
    return dirs
