"""`dbctl lint` on what sqlx cannot run, proven against the real PostgreSQL, and on down files.

sqlx sends each file as ONE simple-protocol query: a `-- no-transaction` file of
several statements runs as one implicit transaction, and a transactional file runs
between sqlx's own BEGIN and its history-row INSERT + COMMIT. The tests send SQL
exactly that way (libpq's PQexec through psycopg's pgconn) and compare what
PostgreSQL refuses or commits with what the linter flags.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from conftest import run_dbctl
from dbctl.checks.lint import lint_migrations
from dbctl.engine.source import read_migration

ACTIVE_SQL_TRANSACTION = "25001"  # "... cannot run inside a transaction block"


def simple_query(conn: psycopg.Connection, sql: str) -> str | None:
    """Send `sql` as one simple-protocol query, as sqlx does; the SQLSTATE of its error, if any."""
    result = conn.pgconn.exec_(sql.encode())
    state = result.error_field(psycopg.pq.DiagnosticField.SQLSTATE)
    return state.decode() if state else None


def rules_for(tmp_path: Path, sql: str, name: str = "002_change.sql") -> list[str]:
    path = tmp_path / name
    path.write_text(sql)
    return [f.rule for f in lint_migrations([read_migration(path)]).findings]


SETUP = """CREATE TABLE t (a int); CREATE INDEX ti ON t (a); CREATE TYPE mood AS ENUM ('a');
CREATE MATERIALIZED VIEW mv AS SELECT 1 AS x; CREATE UNIQUE INDEX mvi ON mv (x);
CREATE TABLE p (a int) PARTITION BY RANGE (a); CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10)"""

# Ones that succeed change the database, so those that need what they change come first.
STATEMENTS = [
    "CREATE INDEX CONCURRENTLY ci ON t (a)", "DROP INDEX CONCURRENTLY IF EXISTS nope",
    "REINDEX INDEX CONCURRENTLY ti", "REINDEX TABLE CONCURRENTLY t", "REINDEX (CONCURRENTLY) TABLE t",
    "REINDEX TABLE t", "REINDEX INDEX ti", "REINDEX SCHEMA public", "REINDEX DATABASE {db}", "REINDEX SYSTEM {db}",
    "VACUUM", "VACUUM t", "VACUUM (ANALYZE) t", "VACUUM FULL t", "ANALYZE t", "CLUSTER", "CLUSTER t USING ti",
    "CREATE DATABASE never_created", "DROP DATABASE IF EXISTS never_created",
    "ALTER DATABASE {db} SET TABLESPACE pg_default", "ALTER DATABASE {db} SET work_mem = '8MB'",
    "CREATE TABLESPACE ts LOCATION '/nonexistent'", "DROP TABLESPACE IF EXISTS ts",
    "ALTER SYSTEM SET work_mem = '8MB'", "ALTER SYSTEM RESET ALL",
    "ALTER TYPE mood ADD VALUE 'b'", "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'c'",
    "ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY", "DISCARD ALL", "DISCARD PLANS",
    "COMMIT PREPARED 'x'", "ROLLBACK PREPARED 'x'",
    "CREATE SUBSCRIPTION sub CONNECTION 'host=/nonexistent' PUBLICATION pub",
    "REFRESH MATERIALIZED VIEW CONCURRENTLY mv", "REFRESH MATERIALIZED VIEW mv", "CHECKPOINT",
    "CREATE INDEX ci2 ON t (a)", "DROP INDEX ci2", "ALTER TABLE p DETACH PARTITION p1", "SET lock_timeout = '5s'",
]


def test_exactly_what_postgresql_refuses_in_a_transaction_block_is_flagged(db, tmp_path):
    """Each statement after another in one query (a -- no-transaction file), and inside BEGIN/COMMIT."""
    with db.connect() as conn:
        conn.execute(SETUP)
        for template in STATEMENTS:
            statement = template.format(db=db.name)
            refused_alone = simple_query(conn, f"SELECT 1; {statement}") == ACTIVE_SQL_TRANSACTION
            refused_in_block = simple_query(conn, f"BEGIN; {statement}; COMMIT") == ACTIVE_SQL_TRANSACTION
            if conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                simple_query(conn, "ROLLBACK")
            assert refused_alone == refused_in_block, statement
            together = rules_for(tmp_path, f"-- no-transaction\nSELECT 1;\n{statement};\n")
            assert ("no-transaction-not-alone" in together) == refused_alone, (statement, together)
            transactional = rules_for(tmp_path, f"SET lock_timeout = '5s';\n{statement};\n")
            assert ("needs-no-transaction" in transactional) == refused_alone, (statement, transactional)
            alone = rules_for(tmp_path, f"-- no-transaction\n{statement};\n")
            assert not {"no-transaction-not-alone", "needs-no-transaction"} & set(alone), (statement, alone)


def test_a_lock_timeout_set_in_a_no_transaction_file_breaks_it_under_sqlx(tmp_path):
    """The common mistake: SET lock_timeout before CREATE INDEX CONCURRENTLY in the same file."""
    sql = "-- no-transaction\nSET lock_timeout = '5s';\nCREATE INDEX CONCURRENTLY i ON users (email);\n"
    path = tmp_path / "009_index.sql"
    path.write_text(sql)
    [finding] = lint_migrations([read_migration(path)]).findings
    assert (finding.line, finding.rule) == (3, "no-transaction-not-alone")
    assert "--lock-timeout" in finding.safely


# (file body, does it act on the migration's transaction). Each runs the sqlx way: BEGIN alone, the
# file as one query, then ROLLBACK in place of the history INSERT failing: a table that survives was
# committed without its history row.
CONTROL = [
    ("CREATE TABLE a1 (x int);\nCOMMIT;\nCREATE TABLE b1 (x int);", True),
    ("CREATE TABLE a1 (x int);\nEND;\nCREATE TABLE b1 (x int);", True),
    ("CREATE TABLE a1 (x int);\nCOMMIT AND CHAIN;\nCREATE TABLE b1 (x int);", True),
    ("CREATE TABLE a1 (x int);\nROLLBACK;\nCREATE TABLE b1 (x int);", True),
    ("CREATE TABLE a1 (x int);\nABORT;\nCREATE TABLE b1 (x int);", True),
    ("BEGIN;\nCREATE TABLE a1 (x int);", True),  # only a warning, but dbctl migrate refuses the file
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE;\nCREATE TABLE a1 (x int);", True),
    ("SAVEPOINT s;\nCREATE TABLE a1 (x int);\nRELEASE SAVEPOINT s;", False),
    ("SAVEPOINT s;\nCREATE TABLE a1 (x int);\nROLLBACK TO SAVEPOINT s;\nCREATE TABLE b1 (x int);", False),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND;\n"
     "CREATE TABLE a1 (x int);", False),
    ("CREATE PROCEDURE p() LANGUAGE sql\nBEGIN ATOMIC\n  INSERT INTO a0 VALUES (1);\nEND;", False),
    ("DO $$\nBEGIN\n  CREATE TABLE a1 (x int);\nEND\n$$;\nCREATE TABLE b1 (x int);", False),
    ("CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  RETURN 1;\nEND;\n$$;", False),
]


@pytest.mark.parametrize("body, acts", CONTROL, ids=[b.splitlines()[1 if b.startswith("CREATE TABLE") else 0]
                                                      for b, _ in CONTROL])
def test_transaction_control_is_flagged_exactly_when_it_acts_on_the_migrations_transaction(db, tmp_path, body, acts):
    with db.connect() as conn:
        conn.execute("CREATE TABLE a0 (x int)")
        warnings = []
        conn.add_notice_handler(lambda diag: warnings.append(diag.message_primary))
        simple_query(conn, "BEGIN")
        assert simple_query(conn, body) is None
        simple_query(conn, "ROLLBACK")
        survived = conn.execute("SELECT count(*) FROM pg_class WHERE relname IN ('a1', 'b1')").fetchone()[0]
        warned = "there is already a transaction in progress" in warnings
    assert (survived > 0 or warned) == acts, "the expectation in this table is wrong"
    rules = rules_for(tmp_path, body)
    assert ("transaction-control" in rules) == acts, rules
    assert "transaction-control" not in rules_for(tmp_path, "-- no-transaction\n" + body)


def test_prepare_transaction_is_transaction_control(tmp_path):
    """The test server has prepared transactions off (PostgreSQL's default), so this one is by the parser."""
    assert rules_for(tmp_path, "CREATE TABLE a (x int);\nPREPARE TRANSACTION 'x';\n") == ["transaction-control"]


# -- down files ---------------------------------------------------------------------------------------
def write_pair(directory: Path, up: str, down: str) -> Path:
    (directory / "009_avatars.down.sql").write_text(down)
    path = directory / "009_avatars.up.sql"
    path.write_text(up)
    return path


UP = "CREATE TABLE avatars (id int);\nSET lock_timeout = '5s';\nALTER TABLE users ADD COLUMN avatar_id int;\n"


def test_a_down_file_is_linted_after_its_up(tmp_path):
    down = "SET lock_timeout = '5s';\nCREATE INDEX CONCURRENTLY avatars_id ON avatars (id);\n" \
           "ALTER TABLE users ALTER COLUMN email TYPE varchar(10);\nBEGIN;\n"
    report = lint_migrations([read_migration(write_pair(tmp_path, UP, down))])
    assert [(Path(f.path).name, f.line, f.rule) for f in report.findings] == [
        ("009_avatars.down.sql", 2, "needs-no-transaction"),
        ("009_avatars.down.sql", 3, "alter-column-type"),
        ("009_avatars.down.sql", 4, "transaction-control")]
    assert [Path(f).name for f in report.files] == ["009_avatars.up.sql", "009_avatars.down.sql"]


def test_a_down_file_may_drop_what_its_up_created_but_nothing_else(tmp_path):
    down = "SET lock_timeout = '5s';\nALTER TABLE users DROP COLUMN avatar_id;\nDROP TABLE avatars;\n" \
           "ALTER TABLE users DROP COLUMN email;\nDROP TABLE sessions;\n"
    report = lint_migrations([read_migration(write_pair(tmp_path, UP, down))])
    assert [(f.line, f.rule) for f in report.findings] == [(4, "drop-column"), (5, "drop-table")]
    # the tables its up created are not new to the down: they have rows by the time it runs
    no_timeout = "CREATE INDEX avatars_id ON avatars (id);\n"
    report = lint_migrations([read_migration(write_pair(tmp_path, UP, no_timeout))])
    assert [(f.line, f.rule) for f in report.findings] == [(1, "missing-lock-timeout"),
                                                           (1, "create-index-not-concurrently")]


def test_the_cli_lints_the_down_files_of_pending_migrations(db, migrations_dir):
    env = {"DATABASE_URL": db.url}
    assert run_dbctl("migrate", "--migrations", str(migrations_dir), env=env).code == 0
    write_pair(migrations_dir, UP, "-- no-transaction\nDROP TABLE avatars;\nVACUUM users;\n")
    result = run_dbctl("lint", "--migrations", str(migrations_dir), env=env)
    assert result.code == 1, result.output
    assert "009_avatars.down.sql:3: no-transaction-not-alone: VACUUM in a -- no-transaction file of 2" in result.out
    assert "2 file(s) checked" in result.out
    given = run_dbctl("lint", str(migrations_dir / "009_avatars.down.sql"))
    assert given.code == 1 and "009_avatars.up.sql" not in given.out, given.output
    # its up is read, so dropping the table it created is not drop-table
    assert [line.split(": ")[1] for line in given.out.splitlines()[:-1]] == ["missing-lock-timeout",
                                                                             "no-transaction-not-alone"]
