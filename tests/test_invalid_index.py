"""INVALID indexes are never recorded as applied, and verify and status name them with the DROP to run.

A `-- no-transaction` CREATE INDEX CONCURRENTLY that fails (a real lock_timeout
behind another session's open write, a real pg_terminate_backend mid-build,
duplicates under a unique index) leaves an INVALID index; IF NOT EXISTS would
then skip it on the next try. dbctl drops what its own earlier attempt left
before retrying, refuses to record a file whose index is INVALID, and says
`DROP INDEX CONCURRENTLY <schema>.<name>;` for the rest.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg

from conftest import assert_clean_error, run_dbctl
from test_crash import Terminator, spawn

USERS = "CREATE TABLE users (id int PRIMARY KEY, email text);\n"
# A key function slow enough (20 ms a row) to end the build from outside while it runs.
SLOW = ("CREATE FUNCTION slow_key(text) RETURNS text IMMUTABLE LANGUAGE plpgsql AS "
        "$$BEGIN PERFORM pg_sleep(0.02); RETURN $1; END$$;\n"
        "INSERT INTO users SELECT n, 'u' || n FROM generate_series(1, 60) n;\n")
INDEX = "-- no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_idx ON users (email);\n"
SLOW_INDEX = "-- no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_slow_idx ON users (slow_key(email));\n"


def write(directory, files: dict):
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def migrate_args(directory, url, *extra):
    return ["migrate", "--migrations", str(directory), "--database-url", url, *extra]


def index_state(db, name: str):
    """(valid, ready) of the index, or None when it does not exist."""
    row = db.query("SELECT indisvalid, indisready FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,))
    return row[0] if row else None


def wait_for(predicate, timeout: float = 30.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def build_killer(url: str, times: int, statement: str = "CREATE INDEX CONCURRENTLY") -> Terminator:
    """Terminates whoever is building an index with `statement`, only once the build is under way
    (the catalog entry exists, invalid), up to `times` times."""
    return Terminator(url, times, grace=0.2, params=(f"%{statement}%",), query=(
        "SELECT a.pid FROM pg_stat_activity a JOIN pg_stat_progress_create_index p ON p.pid = a.pid "
        "WHERE a.datname = current_database() AND a.query ILIKE %s AND p.index_relid <> 0"))


def test_lock_timeout_retry_rebuilds_the_index_instead_of_skipping_it(db, tmp_path):
    """Attempt 1 times out behind an open write and leaves an INVALID unique index; attempt 2 rebuilds it."""
    directory = write(tmp_path / "m", {"1_users.sql": USERS, "2_users_email.sql": INDEX})
    assert run_dbctl(*migrate_args(directory, db.url, "--target", "1")).code == 0
    blocker = db.connect()
    blocker.execute("BEGIN")
    blocker.execute("INSERT INTO users VALUES (1, 'a@example.com')")  # CIC waits for this writer
    try:
        proc = spawn(migrate_args(directory, db.url, "--lock-timeout", "300ms"))
        wait_for(lambda: db.query("SELECT 1 FROM pg_tables WHERE tablename = '_dbctl_migration_attempts'")
                 and db.scalar("SELECT count(*) FROM _dbctl_migration_attempts WHERE version = 2 "
                               "AND outcome = 'retried'"), what="the first attempt to time out")
        assert index_state(db, "users_email_idx")[0] is False, "the timed-out build left an INVALID index"
        blocker.execute("COMMIT")
        out, err = proc.communicate(timeout=60)
    finally:
        blocker.close()
    assert proc.returncode == 0, out + err
    assert "dropped the INVALID index public.users_email_idx" in out
    assert index_state(db, "users_email_idx") == (True, True)
    outcomes = db.query("SELECT outcome, sqlstate FROM _dbctl_migration_attempts WHERE version = 2 ORDER BY id")
    assert outcomes == [("retried", "55P03"), ("success", None)]
    # The unique index works: a duplicate is refused.
    db.query("INSERT INTO users VALUES (2, 'b@example.com')")
    try:
        db.query("INSERT INTO users VALUES (3, 'b@example.com')")
        raise AssertionError("a duplicate got past the unique index")
    except psycopg.errors.UniqueViolation:
        pass


def test_build_terminated_every_time_is_never_recorded_and_is_reported_everywhere(db, tmp_path):
    directory = write(tmp_path / "m", {"1_users.sql": USERS + SLOW, "2_users_slow.sql": SLOW_INDEX})
    assert run_dbctl(*migrate_args(directory, db.url, "--target", "1")).code == 0
    killer = build_killer(db.url, times=3)
    killer.start()
    result = run_dbctl(*migrate_args(directory, db.url))
    killer.stop.set()
    killer.join()
    assert killer.done == 3
    drop = "DROP INDEX CONCURRENTLY public.users_slow_idx;"
    assert_clean_error(result, 1, "2_users_slow.sql", "after 3 attempts", "INVALID index public.users_slow_idx",
                       drop)
    assert index_state(db, "users_slow_idx")[0] is False
    assert [v for v, in db.query("SELECT version FROM _sqlx_migrations")] == [1]

    # A plain re-run: IF NOT EXISTS skips the INVALID index, so the file "succeeds": not recorded.
    rerun = run_dbctl(*migrate_args(directory, db.url))
    assert_clean_error(rerun, 1, "2_users_slow.sql", "not recorded as applied", drop)
    assert [v for v, in db.query("SELECT version FROM _sqlx_migrations")] == [1]

    # Even once the history says applied (an older dbctl recorded it), verify and status say what is wrong.
    db.query("INSERT INTO _sqlx_migrations SELECT 2, 'users slow', now(), true, checksum, 0 "
             "FROM _sqlx_migrations WHERE version = 1")
    verify = run_dbctl("verify", "--migrations", str(directory), "--database-url", db.url, "--table", "users")
    assert verify.code == 1, verify.output
    assert drop in verify.err and "INVALID index public.users_slow_idx" in verify.err
    status = run_dbctl("status", "--migrations", str(directory), "--database-url", db.url)
    assert status.code == 0 and drop in status.out
    status_json = json.loads(run_dbctl("status", "--json", "--migrations", str(directory),
                                       "--database-url", db.url).out)
    assert status_json["invalid_indexes"] == [
        {"index": "public.users_slow_idx", "table": "public.users", "ready": False, "fix": drop}]

    db.query(drop)
    db.query("DELETE FROM _sqlx_migrations WHERE version = 2")
    final = run_dbctl(*migrate_args(directory, db.url))
    assert final.code == 0, final.output
    assert index_state(db, "users_slow_idx") == (True, True)
    assert run_dbctl("verify", "--migrations", str(directory), "--database-url", db.url, "--table", "users").code == 0


def test_unique_index_over_duplicates_names_the_index_to_drop(db, tmp_path):
    directory = write(tmp_path / "m", {"1_users.sql": USERS + "INSERT INTO users VALUES (1, 'x'), (2, 'x');\n",
                                       "2_users_email.sql": INDEX})
    result = run_dbctl(*migrate_args(directory, db.url))
    assert_clean_error(result, 1, "2_users_email.sql", "23505", "DROP INDEX CONCURRENTLY public.users_email_idx;")
    assert index_state(db, "users_email_idx")[0] is False
    assert [v for v, in db.query("SELECT version FROM _sqlx_migrations")] == [1]


def test_verify_ignores_a_build_in_progress_and_names_reindex_leftovers(db, tmp_path):
    directory = write(tmp_path / "m", {"1_users.sql": USERS + SLOW
                                       + "CREATE INDEX users_slow_idx ON users (slow_key(email));\n"})
    assert run_dbctl(*migrate_args(directory, db.url)).code == 0
    db.query("INSERT INTO users SELECT n, 'u' || n FROM generate_series(61, 200) n")  # a 4 s rebuild
    verify_json = ["verify", "--json", "--migrations", str(directory), "--database-url", db.url, "--table", "users"]

    builder = db.connect()
    done = threading.Event()

    def reindex():
        try:
            builder.execute("REINDEX INDEX CONCURRENTLY users_slow_idx")
        except psycopg.Error:
            pass
        finally:
            done.set()

    thread = threading.Thread(target=reindex, daemon=True)
    thread.start()
    wait_for(lambda: db.scalar("SELECT count(*) FROM pg_class WHERE relname LIKE 'users_slow_idx_ccnew%'"),
             what="the REINDEX to start")
    during = run_dbctl(*verify_json)
    assert during.code == 0 and json.loads(during.out)["invalid_indexes"] == [], during.output
    assert not done.is_set(), "the REINDEX finished before it could be interrupted"
    killer = build_killer(db.url, times=1, statement="REINDEX")
    killer.start()
    assert done.wait(30)
    killer.stop.set()
    killer.join()
    builder.close()
    assert killer.done == 1
    after = run_dbctl(*verify_json)
    report = json.loads(after.out)
    assert after.code == 1 and report["invalid_indexes"] == ["DROP INDEX CONCURRENTLY public.users_slow_idx_ccnew;"]
    assert any("interrupted REINDEX CONCURRENTLY" in p for p in report["problems"])
