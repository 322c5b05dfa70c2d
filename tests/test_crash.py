"""Crashes: the runner SIGKILLed at random points, its connection terminated, PostgreSQL restarted.

After each, a plain `dbctl migrate` succeeds and the history matches the
schema exactly: every recorded migration's objects exist, no transactional
migration's objects exist without its record, the data migrations seeded is
there exactly once, and the users' rows written before the crash are intact.

The SIGKILL runs are seeded: a failure prints the seed and run number, and
DBCTL_CRASH_SEED / DBCTL_CRASH_RUNS replay or widen them (`make soak`). The
kill delays replay exactly; where the kill lands also depends on timing.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from conftest import REPO, Database, drop_database, private_server, run_dbctl
from dbctl.devenv import local_postgres as localpg
from dbctl.engine.source import load_migrations

SEED = int(os.environ.get("DBCTL_CRASH_SEED", "20261124"))
RUNS = int(os.environ.get("DBCTL_CRASH_RUNS", "50"))
MIGRATIONS_IN_SET = int(os.environ.get("DBCTL_CRASH_MIGRATIONS", "24"))
USERS = 100
SEEDED_ROWS = 2000
NO_TX_VERSION = 12  # a `-- no-transaction` CREATE INDEX CONCURRENTLY in the middle of the set


def write_crash_set(directory: Path, count: int = MIGRATIONS_IN_SET, slow_version: int | None = None) -> None:
    """001 makes the users table; the rest each make a table, an index and seed rows; one is no-transaction."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "001_crash_users.sql").write_text(
        "CREATE TABLE crash_users (id serial PRIMARY KEY, email text NOT NULL UNIQUE);\n")
    for v in range(2, count + 1):
        if v == NO_TX_VERSION:
            text = ("-- no-transaction\n"
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS crash_users_email_lower_idx "
                    "ON crash_users (lower(email));\n")
        else:
            text = (f"CREATE TABLE item_{v} (id bigserial PRIMARY KEY, user_id int, label text NOT NULL);\n"
                    f"CREATE INDEX item_{v}_label_idx ON item_{v} (label);\n"
                    f"INSERT INTO item_{v} (label) SELECT 'seeded ' || n FROM generate_series(1, {SEEDED_ROWS}) n;\n")
            if v == slow_version:
                text += "SELECT pg_sleep(1.5);\n"
            text += f"COMMENT ON TABLE item_{v} IS 'migration {v}';\n"
        (directory / f"{v:03d}_step_{v}.sql").write_text(text)


def migrate_args(directory: Path, url: str, *extra: str) -> list[str]:
    return ["migrate", "--migrations", str(directory), "--database-url", url, *extra]


def spawn(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBCTL_", "DATABASE_URL", "PG"))}
    return subprocess.Popen([sys.executable, "-m", "dbctl", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def add_users(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO crash_users (email) SELECT 'user' || n || '@example.com' "
                     "FROM generate_series(1, %s) n", (USERS,))


def wait_for_runners_to_go(url: str, timeout: float = 30) -> None:
    """A killed client's backend lingers until it notices; its transaction must end before we look."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND application_name LIKE 'dbctl%%' AND pid <> pg_backend_pid()").fetchone()[0]
            if not left:
                return
            time.sleep(0.02)
    raise AssertionError("a killed runner's session never ended")


def consistency_problems(url: str, directory: Path, *, complete: bool) -> list[str]:
    """What is wrong between history and schema; complete=True also wants every migration applied."""
    files = {m.version: m for m in load_migrations(directory).ups}
    problems = []
    with psycopg.connect(url, autocommit=True) as conn:
        history = {v: (bytes(c), ok) for v, c, ok in conn.execute(
            "SELECT version, checksum, success FROM _sqlx_migrations").fetchall()} if conn.execute(
            "SELECT to_regclass('_sqlx_migrations')").fetchone()[0] else {}
        for v, (checksum, ok) in history.items():
            if not ok:
                problems.append(f"version {v} recorded with success = false")
            if v not in files or files[v].checksum != checksum:
                problems.append(f"version {v} recorded with a checksum that is not its file's")
        if complete and set(history) != set(files):
            problems.append(f"not applied after the re-run: {sorted(set(files) - set(history))}")
        users = conn.execute("SELECT to_regclass('crash_users')").fetchone()[0]
        if users and conn.execute("SELECT count(*) FROM crash_users").fetchone()[0] != USERS:
            problems.append("user rows lost or duplicated")
        for v in files:
            if v in (1, NO_TX_VERSION):
                continue
            table = conn.execute("SELECT to_regclass(%s)", (f"item_{v}",)).fetchone()[0]
            index = conn.execute("SELECT to_regclass(%s)", (f"item_{v}_label_idx",)).fetchone()[0]
            if v in history:
                if not (table and index):
                    problems.append(f"version {v} is recorded but its table or index is missing")
                else:
                    rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"item_{v}")))
                    if rows.fetchone()[0] != SEEDED_ROWS:
                        problems.append(f"version {v}'s seeded rows are not there exactly once")
            elif table or index:
                problems.append(f"version {v}'s objects exist without its history row")
        if NO_TX_VERSION in history:
            valid = conn.execute("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = "
                                 "to_regclass('crash_users_email_lower_idx')").fetchone()
            if not valid or not valid[0]:
                problems.append("the no-transaction index is recorded but missing or invalid")
    return problems


@pytest.fixture(scope="module")
def crash_template(pg_server, tmp_path_factory):
    """The set's first migration applied and the users' rows written: cloned for every run."""
    directory = tmp_path_factory.mktemp("crash") / "migrations"
    write_crash_set(directory)
    name = f"crash_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    result = run_dbctl(*migrate_args(directory, pg_server.url(name), "--target", "1"))
    assert result.code == 0, result.output
    add_users(pg_server.url(name))
    yield name, directory
    drop_database(pg_server, name)


def clone(server, template: str) -> Database:
    name = f"crash_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return Database(server, name)


def test_sigkill_at_random_points_then_a_plain_rerun_recovers(pg_server, crash_template):
    template, directory = crash_template
    # How long an undisturbed run takes, so the kills spread over all of it (start-up included).
    db = clone(pg_server, template)
    started = time.monotonic()
    assert run_dbctl(*migrate_args(directory, db.url)).code == 0
    full = time.monotonic() - started
    drop_database(pg_server, db.name)

    killed_mid_run = 0
    for run in range(RUNS):
        rng = random.Random(f"{SEED}:{run}")
        delay = rng.uniform(0.0, full * 1.1)
        replay = f"seed {SEED} run {run} (kill after {delay:.3f}s); replay with DBCTL_CRASH_SEED={SEED}"
        db = clone(pg_server, template)
        try:
            proc = spawn(migrate_args(directory, db.url))
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed_mid_run += 1
            proc.communicate(timeout=60)
            wait_for_runners_to_go(db.url)
            problems = consistency_problems(db.url, directory, complete=False)
            assert not problems, f"after the kill, {replay}: {problems}"
            rerun = run_dbctl(*migrate_args(directory, db.url))
            assert rerun.code == 0, f"re-run failed, {replay}: {rerun.output}"
            assert "Traceback" not in rerun.output
            problems = consistency_problems(db.url, directory, complete=True)
            assert not problems, f"after the re-run, {replay}: {problems}"
        finally:
            drop_database(pg_server, db.name)
    assert killed_mid_run >= RUNS // 2, "most kills should land while dbctl runs"


# The runner's session while it is inside the slow migration.
RUNNER_IN_SLOW_MIGRATION = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
                            "AND application_name LIKE 'dbctl migrate%%' AND query LIKE '%%pg_sleep%%'")


class Terminator(threading.Thread):
    """pg_terminate_backend on the session `query` finds (its pid), whenever it finds one, up to `times`
    times; `grace` seconds after finding it, so the statement is well under way."""

    def __init__(self, url: str, times: int, query: str = RUNNER_IN_SLOW_MIGRATION, params=(), grace: float = 0):
        super().__init__(daemon=True)
        self.url, self.times, self.done = url, times, 0
        self.query, self.params, self.grace = query, params, grace
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while self.done < self.times and not self.stop.is_set():
                pid = conn.execute(self.query, self.params).fetchone()
                if pid:
                    time.sleep(self.grace)
                    conn.execute("SELECT pg_terminate_backend(%s)", pid)
                    self.done += 1
                time.sleep(0.02)


def test_connection_terminated_mid_migration_is_retried(db, tmp_path):
    directory = tmp_path / "migrations"
    write_crash_set(directory, count=6, slow_version=4)
    assert run_dbctl(*migrate_args(directory, db.url, "--target", "1")).code == 0
    add_users(db.url)
    killer = Terminator(db.url, times=1)
    killer.start()
    result = run_dbctl(*migrate_args(directory, db.url))
    killer.stop.set()
    killer.join()
    assert killer.done == 1
    assert result.code == 0, result.output
    assert "attempt 1 of 3 failed" in result.out
    assert consistency_problems(db.url, directory, complete=True) == []
    outcomes = db.query("SELECT outcome FROM _dbctl_migration_attempts WHERE version = 4 ORDER BY id")
    assert [o for o, in outcomes] == ["retried", "success"]
    rerun = run_dbctl(*migrate_args(directory, db.url))
    assert rerun.code == 0 and "up to date" in rerun.out


def test_connection_terminated_on_every_attempt_fails_cleanly_then_reruns(db, tmp_path):
    directory = tmp_path / "migrations"
    write_crash_set(directory, count=6, slow_version=4)
    assert run_dbctl(*migrate_args(directory, db.url, "--target", "1")).code == 0
    add_users(db.url)
    killer = Terminator(db.url, times=3)
    killer.start()
    result = run_dbctl(*migrate_args(directory, db.url))
    killer.stop.set()
    killer.join()
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "004_step_4.sql" in errors[0] and "after 3 attempts" in errors[0], result.err
    assert consistency_problems(db.url, directory, complete=False) == []
    assert [v for v, in db.query("SELECT version FROM _sqlx_migrations ORDER BY 1")] == [1, 2, 3]
    rerun = run_dbctl(*migrate_args(directory, db.url))
    assert rerun.code == 0, rerun.output
    assert consistency_problems(db.url, directory, complete=True) == []


@pytest.fixture
def own_server():
    """A PostgreSQL of this test's own, so restarting it disturbs no other test."""
    with private_server("dbctl-restart-pg-") as server:
        yield server


def test_postgres_restarted_mid_run(own_server, tmp_path):
    """The server crashes (immediate stop) inside a migration and comes back: the run reconnects and finishes."""
    directory = tmp_path / "migrations"
    write_crash_set(directory, count=8, slow_version=5)
    with psycopg.connect(own_server.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE kiro")
    url = own_server.url("kiro")
    assert run_dbctl(*migrate_args(directory, url, "--target", "1")).code == 0
    add_users(url)

    proc = spawn(migrate_args(directory, url))
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep%%' "
                            "AND application_name LIKE 'dbctl migrate%%' AND state = 'active'").fetchone()[0]:
                break
            time.sleep(0.02)
        else:
            proc.kill()
            pytest.fail("the slow migration never started")
    localpg.stop(own_server, mode="immediate")  # a crash: no checkpoint, recovery on start
    time.sleep(0.5)
    localpg.start(own_server)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err
    assert consistency_problems(url, directory, complete=True) == []
    with psycopg.connect(url, autocommit=True) as conn:
        outcomes = [o for o, in conn.execute(
            "SELECT outcome FROM _dbctl_migration_attempts WHERE version = 5 ORDER BY id").fetchall()]
    assert outcomes[-1] == "success" and "retried" in outcomes
    rerun = run_dbctl(*migrate_args(directory, url))
    assert rerun.code == 0 and "up to date" in rerun.out


def test_commits_lost_in_a_server_crash_are_reapplied_and_counted_once(own_server, tmp_path):
    """The run's asynchronous commits die with the server (WAL left in its buffers: wal_writer_delay 10s).

    The run reconnects and applies them again; the summary counts each version
    once, and each lost commit is an attempt row `lost` before its `success`.
    """
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "01_base.sql").write_text("CREATE TABLE base (id int);\n")
    for v in range(2, 7):
        (directory / f"{v:02d}_t{v}.sql").write_text(f"CREATE TABLE t{v} (id int);\n")
    (directory / "07_slow.sql").write_text("SELECT pg_sleep(1.5);\nCREATE TABLE t7 (id int);\n")
    (directory / "08_last.sql").write_text("CREATE TABLE t8 (id int);\n")
    with psycopg.connect(own_server.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE kiro")
        conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        conn.execute("SELECT pg_reload_conf()")
    url = own_server.url("kiro")
    assert run_dbctl(*migrate_args(directory, url, "--target", "1")).code == 0
    time.sleep(0.5)  # the walwriter has flushed that run; what follows stays in WAL buffers for 10 s

    proc = spawn(migrate_args(directory, url))
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as conn:
        while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep%%' "
                               "AND application_name LIKE 'dbctl migrate%%' AND state = 'active'").fetchone()[0]:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the slow migration never started")
            time.sleep(0.01)
    localpg.stop(own_server, mode="immediate")
    localpg.start(own_server)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err
    with psycopg.connect(url, autocommit=True) as conn:
        assert [v for v, in conn.execute("SELECT version FROM _sqlx_migrations ORDER BY 1")] == list(range(1, 9))
        rows = conn.execute("SELECT version, attempt, outcome FROM _dbctl_migration_attempts WHERE version > 1 "
                            "ORDER BY version, id").fetchall()
    lost = [v for v, _, outcome in rows if outcome == "lost"]
    assert lost, f"no commit was lost (the crash came too late to show anything): {rows}"
    assert f"{len(lost)} migration(s) this run applied were lost" in out
    assert "applied 7 migration(s)" in out, out
    for version in range(2, 9):
        mine = [(attempt, outcome) for v, attempt, outcome in rows if v == version]
        assert [a for a, _ in mine] == list(range(1, len(mine) + 1)), f"version {version}: {mine}"
        assert mine[-1][1] == "success" and [o for _, o in mine].count("success") == 1, f"version {version}: {mine}"


def memory_cgroup(limit: int) -> Path | None:
    """A fresh memory cgroup limited to `limit` bytes, or None where this machine allows none."""
    base = Path("/sys/fs/cgroup")
    v2 = (base / "cgroup.controllers").exists()
    group = (base if v2 else base / "memory") / f"dbctl-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        group.mkdir()
        (group / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(str(limit))
    except OSError:
        if group.exists():
            group.rmdir()
        return None
    return group


def test_migrate_1000_files_inside_the_jobs_128mib_limit(db, tmp_path):
    """The migration Job's limit is 128Mi: 1,000 migrations must apply inside it (a real memory cgroup)."""
    group = memory_cgroup(128 * 1024 * 1024)
    if group is None:
        pytest.skip("no writable memory cgroup here (needs root and cgroup v1 memory or v2); bench/ reports it")
    directory = tmp_path / "migrations"
    directory.mkdir()
    for i in range(1, 1001):
        (directory / f"{i:04d}_table_{i}.sql").write_text(
            f"CREATE TABLE t_{i} (id bigserial PRIMARY KEY, name text NOT NULL, payload jsonb DEFAULT '{{}}');\n"
            f"CREATE INDEX t_{i}_name_idx ON t_{i} (name);\n")
    procs = str(group / "cgroup.procs")

    def enter_group():
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBCTL_", "DATABASE_URL", "PG"))}
    try:
        proc = subprocess.run([sys.executable, "-m", "dbctl", *migrate_args(directory, db.url)], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=300, preexec_fn=enter_group)
    finally:
        group.rmdir()
    assert proc.returncode == 0, proc.stdout[-500:] + proc.stderr  # an OOM kill would be -9
    assert db.scalar("SELECT count(*) FROM _sqlx_migrations") == 1000



def test_the_consistency_check_sees_a_mismatch(pg_server, crash_template):
    """The checker above is what the crash tests trust: it must catch both kinds of mismatch."""
    template, directory = crash_template
    db = clone(pg_server, template)
    try:
        assert run_dbctl(*migrate_args(directory, db.url, "--target", "4")).code == 0
        assert consistency_problems(db.url, directory, complete=False) == []
        db.query("DELETE FROM _sqlx_migrations WHERE version = 4")
        db.query("DROP TABLE item_3")
        db.query("DELETE FROM crash_users WHERE id = 1")
        problems = consistency_problems(db.url, directory, complete=False)
        assert "version 4's objects exist without its history row" in problems
        assert "version 3 is recorded but its table or index is missing" in problems
        assert "user rows lost or duplicated" in problems
    finally:
        drop_database(pg_server, db.name)
