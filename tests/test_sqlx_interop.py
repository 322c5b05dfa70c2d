"""dbctl and a sqlx backend on one database: the migration lock in both directions, and histories
written by one that the other accepts. The sqlx side is sqlx 0.8.6's own Migrator (tests/sqlx_oracle).
"""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import REPO, run_dbctl
from dbctl.engine.postgres import lock_key


def start_dbctl(directory, db):
    return subprocess.Popen([sys.executable, "-m", "dbctl", "migrate", "--migrations", str(directory),
                             "--lock-wait-timeout", "60"], cwd=REPO, env={"DATABASE_URL": db.url, "PATH": "/usr/bin"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def lock_holder_application(db) -> str | None:
    key = lock_key(db.name)
    return db.scalar(
        """SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s""",
        (key >> 32, key & 0xFFFFFFFF))


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_dbctl_waits_while_sqlx_holds_the_migration_lock(db, sqlx_oracle, tmp_path):
    (tmp_path / "1_a.sql").write_text("CREATE TABLE a (id int);\n")
    holder = subprocess.Popen([str(sqlx_oracle), "hold-lock", db.url, "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = run_dbctl("migrate", "--migrations", str(tmp_path), "--lock-wait-timeout", "60",
                           env={"DATABASE_URL": db.url})
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert holder.returncode == 0
    assert result.code == 0, result.output
    assert "waiting for the migration lock" in result.out
    assert waited >= 1.0  # it applied only once sqlx let go
    assert [r[0] for r in db.history()] == [1]


def test_sqlx_waits_while_dbctl_holds_the_migration_lock(db, sqlx_oracle, tmp_path):
    (tmp_path / "1_slow.sql").write_text("CREATE TABLE slow (id int);\nSELECT pg_sleep(2);\n")
    dbctl = start_dbctl(tmp_path, db)
    try:
        assert wait_for(lambda: (lock_holder_application(db) or "").startswith("dbctl migrate")), \
            "dbctl never took the lock"
        started = time.monotonic()
        sqlx = subprocess.run([str(sqlx_oracle), "run", str(tmp_path), db.url], capture_output=True, text=True,
                              timeout=60)
        waited = time.monotonic() - started
    finally:
        out, _ = dbctl.communicate(timeout=60)
    assert dbctl.returncode == 0, out
    assert sqlx.returncode == 0, sqlx.stderr
    # sqlx blocked in pg_advisory_lock until dbctl committed 1_slow.sql (2 s of pg_sleep), then had nothing to do.
    assert waited >= 1.0, f"sqlx did not wait for dbctl's lock ({waited:.2f}s)"
    assert [r[0] for r in db.history()] == [1]
    assert db.query("SELECT version, outcome FROM _dbctl_migration_attempts") == [(1, "success")]


def test_both_starting_together_apply_each_migration_once(db, sqlx_oracle, tmp_path):
    for version in range(1, 6):
        (tmp_path / f"{version}_t{version}.sql").write_text(f"CREATE TABLE t{version} (id int);\n"
                                                            "SELECT pg_sleep(0.2);\n")
    dbctl = start_dbctl(tmp_path, db)
    sqlx = subprocess.Popen([str(sqlx_oracle), "run", str(tmp_path), db.url], stderr=subprocess.PIPE, text=True)
    out, _ = dbctl.communicate(timeout=120)
    _, err = sqlx.communicate(timeout=120)
    assert dbctl.returncode == 0, out
    assert sqlx.returncode == 0, err
    assert [r[0] for r in db.history()] == [1, 2, 3, 4, 5]
