"""Run a migration directory through sqlx (the oracle) and through dbctl, each on its own fresh database,
and describe what each did in the same terms: accepted or refused, the `_sqlx_migrations` rows, the schema
(dbctl.checks.drift's catalog snapshot) and the data. Shared by the corpus and the property-based test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from conftest import Result, create_database, drop_database, run_main
from dbctl.checks import drift
from sqlx_corpus import Link


def run_dbctl(*args: str, env: dict) -> Result:
    """`dbctl ARGS` in this process (main(), its error handling and exit codes included): the corpus
    runs it hundreds of times."""
    return run_main(*args, env=env)


def write_directory(directory: Path, files: dict) -> None:
    """Make `directory` hold exactly `files` (see sqlx_corpus for the value kinds)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name, content in files.items():
        path = directory / name
        if content is None:
            path.mkdir()
        elif isinstance(content, Link):
            path.symlink_to(content.target)
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


@dataclass
class Outcome:
    ok: bool
    message: str
    history: list  # (version, description, success, checksum hex)
    schema: dict
    data: dict  # table -> (rows, md5 of the rows)

    def state(self):
        return self.history, self.schema, self.data


def observe(db, ok: bool, message: str) -> Outcome:
    with db.connect() as conn:
        history = []
        if conn.execute("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetchone()[0]:
            history = [(v, d, s, bytes(c).hex()) for v, d, s, c in conn.execute(
                "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version")]
        schema = drift.snapshot(conn)
        data = {}
        for schema_name, name in conn.execute(
                "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', "
                "'information_schema') AND tablename NOT LIKE '\\_sqlx%%' AND tablename NOT LIKE '\\_dbctl%%'"):
            data[f"{schema_name}.{name}"] = conn.execute(
                f'SELECT count(*), md5(string_agg(t::text, \',\' ORDER BY t::text)) FROM "{schema_name}"."{name}" t'
            ).fetchone()
    return Outcome(ok, message, history, schema, data)


class Pair:
    """Two fresh databases on the test server: `sqlx` is migrated by the oracle, `dbctl` by dbctl."""

    def __init__(self, server, oracle: Path):
        self.server, self.oracle = server, oracle
        tag = uuid.uuid4().hex[:10]
        self.sqlx = create_database(server, f"sx_{tag}")
        self.dbctl = create_database(server, f"dx_{tag}")

    def close(self) -> None:
        for db in (self.sqlx, self.dbctl):
            drop_database(self.server, db.name)

    def setup(self, sql: str) -> None:
        for db in (self.sqlx, self.dbctl):
            db.query(sql)

    # -- one step on one database
    def run_sqlx(self, directory: Path, db=None) -> Outcome:
        db = db or self.sqlx
        proc = subprocess.run([str(self.oracle), "run", str(directory), db.url], capture_output=True, text=True,
                              timeout=60)
        return observe(db, proc.returncode == 0, proc.stderr.strip())

    def run_dbctl(self, directory: Path, db=None) -> Outcome:
        db = db or self.dbctl
        result = run_dbctl("migrate", "--migrations", str(directory), "--lock-wait-timeout", "30",
                           env={"DATABASE_URL": db.url})
        assert "Traceback" not in result.output, result.output
        assert result.code in (0, 1, 2), result.output
        return observe(db, result.code == 0, result.output.strip())

    def undo_sqlx(self, directory: Path, target: int) -> Outcome:
        proc = subprocess.run([str(self.oracle), "undo", str(directory), self.sqlx.url, str(target)],
                              capture_output=True, text=True, timeout=60)
        return observe(self.sqlx, proc.returncode == 0, proc.stderr.strip())

    def undo_dbctl(self, directory: Path, target: int) -> Outcome:
        result = run_dbctl("rollback", "--migrations", str(directory), "--to", str(target),
                           env={"DATABASE_URL": self.dbctl.url})
        assert "Traceback" not in result.output, result.output
        return observe(self.dbctl, result.code == 0, result.output.strip())


def sqlx_list(oracle: Path, directory: Path) -> tuple[bool, list]:
    """What sqlx resolves from the directory: (accepted, [(version, description, kind, checksum, no_tx)])."""
    proc = subprocess.run([str(oracle), "list", str(directory)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return False, []
    kinds = {"Simple": "simple", "ReversibleUp": "up", "ReversibleDown": "down"}
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    return True, sorted((r["version"], r["description"], kinds[r["kind"]], r["checksum"], r["no_tx"]) for r in rows)


def dbctl_list(directory: Path) -> tuple[bool, list]:
    from dbctl.errors import DbctlError
    from dbctl.engine.source import load_migrations, read_migration

    try:
        found = load_migrations(directory)
    except DbctlError:
        return False, []
    every = found.ups + list(found.downs.values())
    for version, names in found.duplicate_downs.items():
        every += [read_migration(directory / name) for name in names[1:]]
    return True, sorted((m.version, m.description, m.kind, m.checksum.hex(), m.no_tx) for m in every)


def describe(sqlx: Outcome, dbctl: Outcome) -> str:
    lines = [f"sqlx:  ok={sqlx.ok} {sqlx.message[:300]}", f"dbctl: ok={dbctl.ok} {dbctl.message[-600:]}"]
    if sqlx.history != dbctl.history:
        lines.append(f"history sqlx={sqlx.history} dbctl={dbctl.history}")
    differences = drift.compare(sqlx.schema, dbctl.schema)
    lines += [f"schema: {d}" for d in differences[:10]]
    if sqlx.data != dbctl.data:
        lines.append(f"data sqlx={sqlx.data} dbctl={dbctl.data}")
    return "\n".join(lines)


def same(sqlx: Outcome, dbctl: Outcome) -> bool:
    return (sqlx.ok == dbctl.ok and sqlx.history == dbctl.history and not drift.compare(sqlx.schema, dbctl.schema)
            and sqlx.data == dbctl.data)


os.environ.setdefault("RUST_BACKTRACE", "0")
