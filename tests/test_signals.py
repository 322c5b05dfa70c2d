"""SIGTERM (Kubernetes deleting a Job's pod) and SIGINT stop dbctl cleanly, at any moment.

The running statement is cancelled on the server (not left to commit seconds
later), its transaction rolled back, the migration lock released at once (a new
run starts without waiting), the attempt recorded as `interrupted`, one line
printed, exit 143 or 130. Hypothesis picks the signal and when it lands over a
whole run of the crash set (tests/test_crash.py), whose consistency checker
then looks at history and schema.
"""

from __future__ import annotations

import signal
import time
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from conftest import drop_database, run_dbctl
from dbctl.engine import postgres
from test_crash import add_users, clone, consistency_problems, migrate_args, spawn, write_crash_set

SLOW_VERSION = 8  # sleeps 1.5 s: a signal has a long migration to land in
COUNT = 14  # the set's no-transaction CREATE INDEX CONCURRENTLY is version 12
FULL_RUN = 4.0  # seconds: start-up and the whole set, generously (the delays spread over it)


@pytest.fixture(scope="module")
def signal_template(pg_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("signals") / "migrations"
    write_crash_set(directory, count=COUNT, slow_version=SLOW_VERSION)
    name = f"sig_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    assert run_dbctl(*migrate_args(directory, pg_server.url(name), "--target", "1")).code == 0
    add_users(pg_server.url(name))
    yield name, directory
    drop_database(pg_server, name)


def lock_is_free(url: str) -> bool:
    """The migration lock can be taken right now (and is given back)."""
    with psycopg.connect(url, autocommit=True) as conn:
        key = postgres.lock_key(conn.execute("SELECT current_database()").fetchone()[0])
        taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        if taken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return taken


def wait_for_sleep(db, what: str, only: str = "") -> None:
    """Until a session (other than ours) is inside `SELECT pg_sleep`, `only` narrowing which: the moment
    to send the signal."""
    deadline = time.monotonic() + 30
    while not db.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep%%' "
                        f"AND state = 'active' AND pid <> pg_backend_pid() {only}"):
        assert time.monotonic() < deadline, f"{what} never started"
        time.sleep(0.02)


def assert_stopped_cleanly(proc, out: str, err: str, signum: int) -> None:
    assert proc.returncode == 128 + signum, out + err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: interrupted by {signal.Signals(signum).name}"), err
    assert "s3cret-pw" not in out + err


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(signum=st.sampled_from([signal.SIGTERM, signal.SIGINT]), delay=st.floats(0.0, FULL_RUN))
@example(signum=signal.SIGTERM, delay=1.6)  # inside the slow migration, after start-up
def test_signal_at_any_moment_leaves_a_consistent_database_and_a_free_lock(pg_server, signal_template, signum,
                                                                          delay):
    template, directory = signal_template
    db = clone(pg_server, template)
    try:
        proc = spawn(migrate_args(directory, db.url))
        time.sleep(delay)
        signalled = proc.poll() is None
        if signalled:
            proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        if proc.returncode == -signum:  # outside main()'s handlers: before anything started, or all done
            assert out + err == "" or "database at version 14" in out, out + err
            assert "Traceback" not in err
        elif signalled and proc.returncode != 0:
            assert lock_is_free(db.url), "the lock must be free as soon as dbctl has exited"
            assert_stopped_cleanly(proc, out, err, signum)
        else:  # the run finished before the signal (or the signal came as it ended)
            assert proc.returncode == 0, out + err
        assert consistency_problems(db.url, directory, complete=False) == []
        history = {v for v, in db.query("SELECT version FROM _sqlx_migrations")}
        interrupted = db.query("SELECT version, sqlstate FROM _dbctl_migration_attempts "
                               "WHERE outcome = 'interrupted'")
        assert len(interrupted) <= 1 and all(v not in history and s == "57014" for v, s in interrupted)
        assert db.scalar("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0

        rerun = run_dbctl(*migrate_args(directory, db.url, "--lock-wait-timeout", "0"))
        assert rerun.code == 0, rerun.output
        assert "waiting for the migration lock" not in rerun.output
        assert consistency_problems(db.url, directory, complete=True) == []
    finally:
        drop_database(pg_server, db.name)


def test_sigterm_cancels_the_statement_on_the_server(pg_server, signal_template):
    """Not just the client: the slow migration's query is gone from pg_stat_activity when dbctl exits."""
    template, directory = signal_template
    db = clone(pg_server, template)
    try:
        proc = spawn(migrate_args(directory, db.url))
        wait_for_sleep(db, "the slow migration", "AND application_name LIKE 'dbctl migrate%%'")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert_stopped_cleanly(proc, out, err, signal.SIGTERM)
        assert f"while applying {SLOW_VERSION:03d}_step_{SLOW_VERSION}.sql" in err
        assert "cancelled and rolled back" in err and "lock is released" in err
        assert db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dbctl%%'") == 0
        assert lock_is_free(db.url)
        assert SLOW_VERSION not in {v for v, in db.query("SELECT version FROM _sqlx_migrations")}
        assert db.query("SELECT attempt, outcome FROM _dbctl_migration_attempts WHERE version = %s",
                        (SLOW_VERSION,)) == [(1, "interrupted")]
        time.sleep(2)  # were the query still running, it would have committed by now
        assert db.scalar("SELECT to_regclass(%s)", (f"item_{SLOW_VERSION}",)) is None
    finally:
        drop_database(pg_server, db.name)


def test_sigterm_during_rollback(db, tmp_path):
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "1_a.up.sql").write_text("CREATE TABLE a (id int);\n")
    (directory / "1_a.down.sql").write_text("DROP TABLE a;\nSELECT pg_sleep(5);\n")
    assert run_dbctl("migrate", "--migrations", str(directory), "--database-url", db.url).code == 0
    proc = spawn(["rollback", "--migrations", str(directory), "--database-url", db.url])
    wait_for_sleep(db, "the down file", "AND application_name LIKE 'dbctl rollback%%'")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert_stopped_cleanly(proc, out, err, signal.SIGTERM)
    assert "1_a.down.sql" in err and "version 1 is still applied" in err
    assert lock_is_free(db.url)
    assert db.scalar("SELECT to_regclass('a')") is not None
    assert [v for v, in db.query("SELECT version FROM _sqlx_migrations")] == [1]


def test_sigint_during_seed(db, tmp_path):
    migrations, seeds = tmp_path / "m", tmp_path / "seeds"
    migrations.mkdir()
    seeds.mkdir()
    (migrations / "1_a.sql").write_text("CREATE TABLE a (id int PRIMARY KEY);\n")
    (seeds / "01_a.sql").write_text("INSERT INTO a VALUES (1) ON CONFLICT DO NOTHING;\nSELECT pg_sleep(5);\n")
    assert run_dbctl("migrate", "--migrations", str(migrations), "--database-url", db.url).code == 0
    proc = spawn(["seed", "--migrations", str(migrations), "--seeds", str(seeds), "--database-url", db.url])
    wait_for_sleep(db, "the seed")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert_stopped_cleanly(proc, out, err, signal.SIGINT)
    assert "while seeding: the seed transaction was rolled back" in err and "lock is released" in err
    assert lock_is_free(db.url)
    assert db.scalar("SELECT count(*) FROM a") == 0
