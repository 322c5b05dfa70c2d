"""`dbctl migrate` against a real PostgreSQL: the history sqlx reads, refusals, retries, the lock."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import psycopg

from conftest import MIGRATIONS, REPO, assert_clean_error, run_dbctl, start_dbctl, wait_for_lock_then_release
from dbctl.engine.postgres import lock_key

KIRO_VERSIONS = list(range(1, 9))


def migrate(db, *args, migrations=MIGRATIONS, env=None):
    return run_dbctl("migrate", "--migrations", str(migrations), *args,
                     env={"DATABASE_URL": db.url, **(env or {})})


def test_fresh_database_gets_the_kiro_schema_and_sqlx_history(db):
    result = migrate(db)
    assert result.code == 0, result.output
    assert "applied 8 migration(s)" in result.out
    rows = db.query("SELECT version, description, success, checksum, execution_time FROM _sqlx_migrations "
                    "ORDER BY version")
    assert [r[0] for r in rows] == KIRO_VERSIONS
    assert rows[0][1] == "initial schema" and rows[7][1] == "audit logging and rate limiting"
    assert all(r[2] is True for r in rows)
    for row, path in zip(rows, sorted(MIGRATIONS.glob("*.sql"))):
        assert bytes(row[3]) == hashlib.sha384(path.read_bytes()).digest()
        assert row[4] > 0  # nanoseconds, as sqlx records them
    assert {"users", "artists", "artist_external_ids", "dnp_lists", "dnp_entries", "community_lists",
            "background_jobs", "audit_log", "user_sessions", "health_checks"} <= db.tables()
    attempts = db.query("SELECT version, outcome, attempt FROM _dbctl_migration_attempts ORDER BY version")
    assert attempts == [(v, "success", 1) for v in KIRO_VERSIONS]


def test_history_table_is_exactly_sqlx_s(db):
    assert migrate(db).code == 0
    columns = db.query(
        """SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns
           WHERE table_name = '_sqlx_migrations' ORDER BY ordinal_position""")
    assert columns == [
        ("version", "bigint", "NO", None),
        ("description", "text", "NO", None),
        ("installed_on", "timestamp with time zone", "NO", "now()"),
        ("success", "boolean", "NO", None),
        ("checksum", "bytea", "NO", None),
        ("execution_time", "bigint", "NO", None),
    ]
    assert db.scalar("""SELECT pg_get_constraintdef(oid) FROM pg_constraint
                        WHERE conrelid = '_sqlx_migrations'::regclass AND contype = 'p'""") == "PRIMARY KEY (version)"


def test_a_history_written_by_sqlx_is_understood(db, migrations_dir):
    """Rows as sqlx writes them (execution_time -1 until updated) are applied migrations to dbctl."""
    db.query("""CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,
                checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)""")
    first = migrations_dir / "001_initial_schema.sql"
    with db.connect() as conn:
        conn.execute(first.read_text())
        conn.execute("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
                     "VALUES (1, 'initial schema', TRUE, %s, -1)", (hashlib.sha384(first.read_bytes()).digest(),))
    result = migrate(db, migrations=migrations_dir)
    assert result.code == 0, result.output
    assert "applied 7 migration(s)" in result.out
    assert [r[0] for r in db.history()] == KIRO_VERSIONS


def test_second_run_changes_nothing(db):
    assert migrate(db).code == 0
    before = db.query("SELECT version, installed_on FROM _sqlx_migrations ORDER BY version")
    result = migrate(db)
    assert result.code == 0
    assert "database is up to date at version 8; nothing to apply" in result.out
    assert db.query("SELECT version, installed_on FROM _sqlx_migrations ORDER BY version") == before
    assert db.scalar("SELECT count(*) FROM _dbctl_migration_attempts") == 8


def test_concurrent_runners_apply_each_migration_once(db):
    env = {"DATABASE_URL": db.url}
    procs = [subprocess.Popen([sys.executable, "-m", "dbctl", "migrate", "--migrations", str(MIGRATIONS)],
                              cwd=REPO, env={**_base_env(), **env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(5)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, outputs
    assert [r[0] for r in db.history()] == KIRO_VERSIONS
    assert db.scalar("SELECT count(*) FROM _dbctl_migration_attempts WHERE outcome = 'success'") == 8
    applied_lines = sum(out.count("applied 0") for out, _ in outputs)
    assert applied_lines == 8  # each file's "applied 00N_..." line printed by exactly one runner


def _base_env():
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("DBCTL_", "DATABASE_URL", "PG"))}


def test_failing_migration_leaves_nothing_and_is_recorded(db, migrations_dir):
    broken = migrations_dir / "009_broken.sql"
    broken.write_text("CREATE TABLE made_before_error (id int);\n\nCREATE TABLE broken (id int,, name text);\n")
    result = migrate(db, migrations=migrations_dir)
    assert_clean_error(result, 1, "009_broken.sql:3:", 'syntax error at or near ","', "SQLSTATE 42601",
                       "nothing of 009_broken.sql was applied")
    assert "made_before_error" not in db.tables()
    assert [r[0] for r in db.history()] == KIRO_VERSIONS  # 1-8 applied, 9 not, never a success=false row
    assert db.scalar("SELECT count(*) FROM _sqlx_migrations WHERE NOT success") == 0
    failed = db.query("SELECT outcome, sqlstate, error_line, error_message, attempt FROM _dbctl_migration_attempts "
                      "WHERE version = 9")
    assert failed == [("failed", "42601", 3, 'syntax error at or near ","', 1)]  # permanent: not retried

    status = run_dbctl("status", "--migrations", str(migrations_dir), env={"DATABASE_URL": db.url})
    assert status.code == 0
    line = next(line for line in status.out.splitlines() if line.startswith("9 "))
    assert "failed" in line and "syntax error" in line

    broken.write_text("CREATE TABLE made_before_error (id int);\n\nCREATE TABLE broken (id int, name text);\n")
    fixed = migrate(db, migrations=migrations_dir)
    assert fixed.code == 0, fixed.output
    assert {"made_before_error", "broken"} <= db.tables()
    assert db.history()[-1][0] == 9


def test_terminated_connection_is_retried(db, migrations_dir):
    (migrations_dir / "009_slow.sql").write_text(
        "CREATE TABLE slow_made (id int);\nSELECT pg_sleep(1.5);\n")
    assert migrate(db, "--target", "8", migrations=migrations_dir).code == 0
    killed = []

    def terminate_first_runner():
        deadline = time.monotonic() + 30
        with db.connect() as conn:
            while time.monotonic() < deadline and not killed:
                pid = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE '%%pg_sleep(1.5)%%' "
                    "AND pid <> pg_backend_pid() AND state = 'active'", (db.name,)).fetchone()
                if pid:
                    conn.execute("SELECT pg_terminate_backend(%s)", pid)
                    killed.append(pid[0])
                time.sleep(0.05)

    killer = threading.Thread(target=terminate_first_runner)
    killer.start()
    result = migrate(db, migrations=migrations_dir)
    killer.join()
    assert killed, "the migration's backend was never seen running"
    assert result.code == 0, result.output
    assert "attempt 1 of 3 failed" in result.out
    assert "slow_made" in db.tables()
    attempts = db.query("SELECT attempt, outcome FROM _dbctl_migration_attempts WHERE version = 9 ORDER BY id")
    assert attempts == [(1, "retried"), (2, "success")]


def test_changed_applied_file_is_refused_with_both_checksums(db, migrations_dir):
    assert migrate(db, migrations=migrations_dir).code == 0
    changed = migrations_dir / "003_rate_limiting_and_jobs.sql"
    old = hashlib.sha384(changed.read_bytes()).hexdigest()
    changed.write_text(changed.read_text() + "\n-- a harmless comment is still a change\n")
    new = hashlib.sha384(changed.read_bytes()).hexdigest()
    (migrations_dir / "009_pending.sql").write_text("CREATE TABLE should_not_exist (id int);\n")
    result = migrate(db, migrations=migrations_dir)
    assert_clean_error(result, 1, "003_rate_limiting_and_jobs.sql was changed after it was applied",
                       old[:16], new[:16], "git checkout")
    assert "should_not_exist" not in db.tables()
    assert db.history()[-1][0] == 8


def test_missing_applied_file_is_refused(db, migrations_dir):
    assert migrate(db, migrations=migrations_dir).code == 0
    (migrations_dir / "005_content_moderation.sql").unlink()
    result = migrate(db, migrations=migrations_dir)
    assert_clean_error(result, 1, "version 5 (content moderation) is applied but its file is missing")


def test_dirty_row_written_by_old_sqlx_is_refused(db):
    assert migrate(db).code == 0
    db.query("UPDATE _sqlx_migrations SET success = FALSE WHERE version = 8")
    result = migrate(db)
    assert_clean_error(result, 1, "marks version 8 as failed (success = false)",
                       "DELETE FROM _sqlx_migrations WHERE version = 8")


def test_dry_run_changes_nothing(db):
    result = migrate(db, "--dry-run")
    assert result.code == 0, result.output
    assert "8 migration(s) would be applied, nothing was changed" in result.out
    assert "would apply 001_initial_schema.sql" in result.out
    assert db.tables() == set()  # not even the history tables


def test_target_stops_at_the_version(db):
    result = migrate(db, "--target", "3")
    assert result.code == 0, result.output
    assert [r[0] for r in db.history()] == [1, 2, 3]
    assert "rate_limit_buckets" in db.tables() and "audit_log" not in db.tables()
    assert_clean_error(migrate(db, "--target", "42"), 2, "--target 42 is not a migration version")


def test_out_of_order_is_applied_with_a_warning_or_refused_with_strict(db, tmp_path):
    for name in ("1_one.sql", "2_two.sql", "4_four.sql"):
        (tmp_path / name).write_text(f"CREATE TABLE t{name[0]} (id int);\n")
    assert migrate(db, migrations=tmp_path).code == 0
    (tmp_path / "3_three.sql").write_text("CREATE TABLE t3 (id int);\n")
    strict = migrate(db, "--strict", migrations=tmp_path)
    assert_clean_error(strict, 1, "3_three.sql older than the applied version 4 (out of order)")
    assert "t3" not in db.tables()
    result = migrate(db, migrations=tmp_path)
    assert result.code == 0
    assert "warning: applying 3_three.sql out of order" in result.err
    assert [r[0] for r in db.history()] == [1, 2, 3, 4]


def test_no_transaction_file_runs_as_one_query_like_sqlx(db, tmp_path):
    (tmp_path / "1_table.sql").write_text("CREATE TABLE items (id int, name text);\n")
    (tmp_path / "2_index.sql").write_text(
        "-- no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS items_name_idx ON items (name);\n")
    result = migrate(db, migrations=tmp_path)
    assert result.code == 0, result.output
    assert db.scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 'items'") == 1
    assert [r[0] for r in db.history()] == [1, 2]


def test_two_concurrent_indexes_in_one_no_transaction_file_fail_as_under_sqlx(db, tmp_path):
    # sqlx sends the file as one query, which PostgreSQL runs as one implicit transaction.
    (tmp_path / "1_table.sql").write_text("CREATE TABLE items (id int);\n")
    (tmp_path / "2_index.sql").write_text(
        "-- no-transaction\n/* first */ CREATE INDEX CONCURRENTLY IF NOT EXISTS items_id_idx ON items (id);\n"
        "CREATE INDEX CONCURRENTLY items_id2_idx ON items (id);\n")
    result = migrate(db, migrations=tmp_path)
    assert_clean_error(result, 1, "2_index.sql:2:", "cannot run inside a transaction block",
                       "ran outside a transaction as one query")
    assert [r[0] for r in db.history()] == [1]
    assert db.scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 'items'") == 0


def test_failing_no_transaction_file_names_its_line_and_applies_nothing(db, tmp_path):
    (tmp_path / "1_table.sql").write_text("CREATE TABLE items (id int);\n")
    (tmp_path / "2_more.sql").write_text(
        "-- no-transaction\nCREATE TABLE more (id int);\n/* a\n comment */\nALTER TABLE nope ADD COLUMN x int;\n")
    result = migrate(db, migrations=tmp_path)
    assert_clean_error(result, 1, "2_more.sql:5:", 'relation "nope" does not exist')
    assert [r[0] for r in db.history()] == [1]
    assert "more" not in db.tables()


def test_own_commit_is_applied_as_sqlx_applies_it_with_a_warning(db, tmp_path):
    (tmp_path / "1_wrapped.sql").write_text("BEGIN;\nCREATE TABLE wrapped (id int);\nCOMMIT;\n")
    result = migrate(db, migrations=tmp_path)
    assert result.code == 0, result.output
    assert "1_wrapped.sql:3: COMMIT ends the migration's transaction" in result.output
    assert [r[0] for r in db.history()] == [1] and "wrapped" in db.tables()


def test_a_large_file_is_sent_on_its_own_and_still_commits_with_its_row(db, tmp_path):
    rows = "".join(f"INSERT INTO big VALUES ({i}, '{'x' * 200}');\n" for i in range(6000))  # > 1 MiB
    (tmp_path / "1_big.sql").write_text("CREATE TABLE big (id int PRIMARY KEY, pad text);\n" + rows)
    (tmp_path / "2_big_bad.sql").write_text(rows.replace("INSERT INTO big", "INSERT INTO big2") +
                                            "INSERT INTO big VALUES (1, 'dup');\n")
    result = migrate(db, migrations=tmp_path)
    assert_clean_error(result, 1, "2_big_bad.sql:1:", 'relation "big2" does not exist')
    assert [r[0] for r in db.history()] == [1] and db.scalar("SELECT count(*) FROM big") == 6000


def test_lock_held_past_the_timeout_names_the_holder(db):
    with psycopg.connect(db.url, autocommit=True, application_name="someone-else") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(db.name),))
        pid = holder.info.backend_pid
        result = migrate(db, "--lock-wait-timeout", "1")
    assert_clean_error(result, 1, "gave up waiting for the migration lock after 1s",
                       f"held by pid {pid} (someone-else")
    assert "waiting for the migration lock, held by" in result.out
    assert "users" not in db.tables()


def test_lock_is_released_and_taken_after_a_wait(db):
    holder = psycopg.connect(db.url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(db.name),))
    proc = start_dbctl("migrate", "--migrations", str(MIGRATIONS), "--lock-wait-timeout", "60",
                       env={"DATABASE_URL": db.url})
    first = wait_for_lock_then_release(proc, holder)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, first + out + err
    assert "waiting for the migration lock" in first
    assert [r[0] for r in db.history()] == KIRO_VERSIONS


def test_lock_timeout_is_transient_and_gives_up_after_three_attempts(db, tmp_path):
    (tmp_path / "1_table.sql").write_text("CREATE TABLE busy (id int);\n")
    (tmp_path / "2_alter.sql").write_text("ALTER TABLE busy ADD COLUMN note text;\n")
    assert migrate(db, "--target", "1", migrations=tmp_path).code == 0
    with psycopg.connect(db.url) as blocker:  # an open transaction holding a lock on the table
        blocker.execute("LOCK TABLE busy IN ACCESS SHARE MODE")
        result = migrate(db, "--lock-timeout", "100ms", migrations=tmp_path)
        blocker.rollback()
    assert_clean_error(result, 1, "2_alter.sql:1:", "canceling statement due to lock timeout", "55P03",
                       "after 3 attempts")
    outcomes = db.query("SELECT outcome FROM _dbctl_migration_attempts WHERE version = 2 ORDER BY id")
    assert outcomes == [("retried",), ("retried",), ("failed",)]
    assert migrate(db, migrations=tmp_path).code == 0  # the lock is gone: it applies


def test_statement_timeout_fails_without_retry(db, tmp_path):
    (tmp_path / "1_slow.sql").write_text("SELECT pg_sleep(5);\n")
    result = migrate(db, "--statement-timeout", "200ms", migrations=tmp_path)
    assert_clean_error(result, 1, "1_slow.sql:1:", "canceling statement due to statement timeout")
    assert db.query("SELECT outcome FROM _dbctl_migration_attempts") == [("failed",)]


def test_invalid_timeout_value_is_a_usage_error(db):
    result = migrate(db, "--lock-timeout", "banana")
    assert_clean_error(result, 2, "--lock-timeout", '"banana"', "e.g. 5s")
    assert db.tables() == set()


def test_password_from_pgpassword(db, pg_server):
    url = f"postgresql://{pg_server.user}@127.0.0.1:{pg_server.port}/{db.name}"
    result = run_dbctl("migrate", env={"DATABASE_URL": url, "PGPASSWORD": pg_server.password})
    assert result.code == 0, result.output
    assert [r[0] for r in db.history()] == KIRO_VERSIONS


def test_migrate_waits_for_the_database_to_be_created(db, pg_server):
    """A Job that starts before its database exists succeeds once it appears."""
    name = db.name + "_late"
    url = pg_server.url(name)

    def create_later():
        time.sleep(1.5)
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    threading.Thread(target=create_later).start()
    try:
        result = run_dbctl("migrate", "--wait-timeout", "30", env={"DATABASE_URL": url})
        assert result.code == 0, result.output
        assert "waiting for PostgreSQL: database in" in result.out
    finally:
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_only_the_last_commit_of_a_run_waits_for_the_wal_flush(db, tmp_path):
    """Earlier migrations commit with synchronous_commit off; the last one's flush makes them all durable."""
    db.query(f'ALTER DATABASE "{db.name}" SET synchronous_commit = on')  # the test server's default is off
    (tmp_path / "1_log.sql").write_text(
        "CREATE TABLE commit_mode (version int, mode text);\n"
        "INSERT INTO commit_mode VALUES (1, current_setting('synchronous_commit'));\n")
    for v in (2, 3):
        (tmp_path / f"{v}_more.sql").write_text(
            f"INSERT INTO commit_mode VALUES ({v}, current_setting('synchronous_commit'));\n")
    assert migrate(db, migrations=tmp_path).code == 0
    assert db.query("SELECT version, mode FROM commit_mode ORDER BY version") == [
        (1, "off"), (2, "off"), (3, "on")]


# ---------------------------------------------------------------- the line an error names

import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_noise = st.lists(st.sampled_from([
    "\n", "  ", "\t", "\r\n", "-- a comment; with a semicolon\n", "/* one line */", "/* two\nlines */\n",
    "/* nested /* twice\n */ still */\n", "/**/", "--\n",
]), max_size=6).map("".join)
_failing = st.sampled_from([
    ("SELEC 1;", "42601"),                                        # syntax: PostgreSQL gives a position
    ("ALTER TABLE nope ADD COLUMN x int;", "42P01"),              # no such table
    ("INSERT INTO lined VALUES (1);", "23505"),                   # duplicate key: no position at all
    ("SELECT 1/0;", "22012"),
])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=_noise, between=_noise, failing=_failing, no_tx=st.booleans())
def test_the_error_names_the_failing_statement_s_line(db, tmp_path_factory, before, between, failing, no_tx):
    from dbctl.engine.migrator import migrate as migrate_in_process
    from dbctl.engine.source import load_migrations
    from dbctl.errors import MigrationFailed

    directory = tmp_path_factory.mktemp("lines")
    head = "-- no-transaction\n" if no_tx else ""
    text = (f"{head}{before}CREATE TABLE IF NOT EXISTS lined (id int PRIMARY KEY);{between}"
            f"INSERT INTO lined VALUES (1) ON CONFLICT DO NOTHING;\n{between}{failing[0]}\n")
    (directory / "1_lines.sql").write_text(text)
    expected = text[:text.rindex(failing[0])].count("\n") + 1
    with pytest.raises(MigrationFailed) as err:
        migrate_in_process(db.url, load_migrations(directory), say=lambda _: None, warn=lambda _: None)
    assert f"1_lines.sql:{expected}: " in str(err.value), (text, str(err.value))
    assert f"SQLSTATE {failing[1]}" in str(err.value)
    assert db.scalar("SELECT count(*) FROM _sqlx_migrations") == 0


def test_a_50_mb_data_migration_applies_inside_the_jobs_128mib_limit(db, tmp_path):
    """The migration Job's limit is 128Mi; a 50 MB data migration must apply inside it (a real memory cgroup).
    bench/memory.py measures the same run, with the peak RSS against the file's size."""
    from test_crash import memory_cgroup

    group = memory_cgroup(128 * 1024 * 1024)
    if group is None:
        pytest.skip("no writable memory cgroup here (needs root and cgroup v1 memory or v2); bench/memory.py")
    directory = tmp_path / "migrations"
    directory.mkdir()
    pad = "x" * 960
    with open(directory / "1_data.sql", "w") as out:
        out.write("CREATE TABLE data (id int PRIMARY KEY, pad text);\n")
        rows = 50_000  # about 1,006 bytes a line
        for i in range(rows):
            out.write(f"INSERT INTO data (id, pad) VALUES ({i}, '{pad}');\n")
    assert (directory / "1_data.sql").stat().st_size > 50_000_000
    procs = group / "cgroup.procs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBCTL_", "DATABASE_URL", "PG"))}
    try:
        proc = subprocess.run([sys.executable, "-m", "dbctl", "migrate", "--migrations", str(directory),
                               "--database-url", db.url], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600, preexec_fn=lambda: procs.write_text(str(os.getpid())))
    finally:
        group.rmdir()
    assert proc.returncode == 0, proc.stdout[-500:] + proc.stderr  # an OOM kill would be -9
    assert db.scalar("SELECT count(*) FROM data") == rows
