"""Many runners at once, as when several Job pods or a developer and a Job start together.

The advisory lock must make every migration run exactly once, every runner
exit 0, and a `-- no-transaction` CREATE INDEX CONCURRENTLY finish while other
runners wait (they poll pg_try_advisory_lock outside any transaction, so the
index build never waits for them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import MIGRATIONS, REPO
from dbctl.engine import postgres

RUNNERS = int(os.environ.get("DBCTL_CONCURRENT_RUNNERS", "20"))  # `make soak` runs more


def spawn_dbctl(*args: str, env: dict | None = None) -> subprocess.Popen:
    """The real CLI in its own process, environment cleaned as conftest.run_dbctl does."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DBCTL_", "DATABASE_URL", "PG"))}
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "dbctl", *args], cwd=REPO, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs, timeout: float = 180) -> list[tuple[int, str, str]]:
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a dbctl runner did not finish: deadlock or lost lock?")
        results.append((proc.returncode, out, err))
    return results


def generated(directory, start: int, count: int) -> None:
    for i in range(start, start + count):
        (directory / f"{i:03d}_gen_{i}.sql").write_text(
            f"CREATE TABLE gen_{i} (id bigserial PRIMARY KEY, v text);\n"
            f"CREATE INDEX gen_{i}_v_idx ON gen_{i} (v);\n"
            f"INSERT INTO gen_{i} (v) SELECT 'row ' || n FROM generate_series(1, 50) AS n;\n")


def test_many_runners_at_once_apply_each_migration_exactly_once(db, tmp_path):
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, directory)
    generated(directory, 9, 40)
    files = sorted(p.name for p in directory.glob("*.sql"))
    procs = [spawn_dbctl("migrate", "--migrations", str(directory), "--database-url", db.url)
             for _ in range(RUNNERS)]
    results = finish(procs)

    for code, out, err in results:
        assert code == 0, out + err
        assert "Traceback" not in err
    history = db.query("SELECT version, success FROM _sqlx_migrations ORDER BY version")
    assert [v for v, _ in history] == [int(name.split("_")[0]) for name in files]
    assert all(ok for _, ok in history)
    # Exactly once: one successful attempt per version, no failed or retried ones, no duplicated data.
    attempts = db.query("SELECT version, outcome, count(*) FROM _dbctl_migration_attempts GROUP BY 1, 2 ORDER BY 1")
    assert attempts == [(v, "success", 1) for v, _ in history]
    assert [db.scalar(f"SELECT count(*) FROM gen_{i}") for i in (9, 30, 48)] == [50, 50, 50]
    # One runner applied everything, or several took turns; together exactly the set of files.
    applied_lines = [line for _, out, _ in results for line in out.splitlines() if line.startswith("applied ")
                     and "migration(s)" not in line]
    assert sorted(applied_lines) == sorted({line for line in applied_lines})
    assert len(applied_lines) == len(files)
    assert sum("up to date" in out for _, out, _ in results) >= 1


def test_create_index_concurrently_while_other_runners_wait(db, tmp_path):
    """The lock holder runs CREATE INDEX CONCURRENTLY while the rest poll for the lock: no deadlock, all succeed."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "001_events.sql").write_text(
        "CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, at timestamptz NOT NULL);\n"
        "INSERT INTO events (kind, at) SELECT 'k' || (n % 97), now() - n * interval '1 second'\n"
        "FROM generate_series(1, 200000) AS n;\n")
    (directory / "002_events_kind_index.sql").write_text(
        "-- no-transaction\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS events_kind_at_idx ON events (kind, at);\n")
    (directory / "003_after.sql").write_text("CREATE TABLE after_index (id int);\n")

    # Hold the lock ourselves until every runner is waiting, so they all queue behind one holder.
    holder = db.connect(application_name="test holder")
    holder.execute("SELECT pg_advisory_lock(%s)", (postgres.lock_key(db.name),))
    procs = [spawn_dbctl("migrate", "--migrations", str(directory), "--database-url", db.url) for _ in range(6)]
    try:
        waiting = 0
        for _ in range(300):
            waiting = db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                "AND application_name LIKE 'dbctl migrate%%' AND application_name NOT LIKE '%%(check)'",
                                (db.name,))
            if waiting >= 6:
                break
            time.sleep(0.05)
        assert waiting >= 6, "the runners never connected"
    finally:
        holder.close()  # releases the lock: one runner applies, the others keep polling
    results = finish(procs, timeout=120)

    for code, out, err in results:
        assert code == 0, out + err
    outputs = "".join(out for _, out, _ in results)
    assert "waiting for the migration lock" in outputs
    assert outputs.count("applied 002_events_kind_index.sql") == 1
    valid = db.scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = 'events_kind_at_idx'::regclass")
    assert valid is True
    assert [v for v, in db.query("SELECT version FROM _sqlx_migrations ORDER BY 1")] == [1, 2, 3]

