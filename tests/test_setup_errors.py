"""PostgreSQL's answers are reported as what they are, at once; only what is transient is retried.

A read-only database, a missing privilege or a search_path naming no schema
end the run with one `Error:` line naming the SQLSTATE and what to do (never
"lost the connection", never after pointless retries). A failing
`-- no-transaction` file is reported with its own error, whatever it did to
the session, at whatever position the failing statement stands (hypothesis).
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from conftest import assert_clean_error, run_dbctl
from dbctl.engine import postgres

TABLE = "CREATE TABLE widgets (id int PRIMARY KEY);\n"


def write(directory, files: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def migrate(directory, url, *extra):
    return run_dbctl("migrate", "--migrations", str(directory), "--database-url", url, *extra)


def assert_reported_once(result, *fragments):
    assert_clean_error(result, 1, *fragments)
    assert "lost the connection" not in result.output and "reconnecting" not in result.output, result.output
    assert "unexpected" not in result.output, result.output


@pytest.fixture
def role(db):
    """A login role that owns nothing in the test database (the password is the server's, masked)."""
    name = f"r_{uuid.uuid4().hex[:8]}"
    with db.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 's3cret-pw'").format(sql.Identifier(name)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db.name),
                                                                          sql.Identifier(name)))
    yield name, db.url.replace("tester:", f"{name}:", 1)
    with db.connect() as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    with psycopg.connect(db.server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_read_only_database_is_reported_at_once(db, tmp_path):
    write(tmp_path / "m", {"1_widgets.sql": TABLE})
    db.query(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(db.name)))
    started = time.monotonic()
    result = migrate(tmp_path / "m", db.url)
    assert time.monotonic() - started < 5, "no retries for an answer that will not change"
    assert_reported_once(result, "read-only", "25006", "primary")


def test_no_create_privilege_on_the_schema(db, role, tmp_path):
    _, url = role  # PostgreSQL 15: only the owner may create in public
    write(tmp_path / "m", {"1_widgets.sql": TABLE})
    result = migrate(tmp_path / "m", url)
    assert_reported_once(result, "permission denied", "42501", "GRANT CREATE")
    assert db.scalar("SELECT to_regclass('_sqlx_migrations')") is None


def test_search_path_naming_no_schema(db, tmp_path):
    write(tmp_path / "m", {"1_widgets.sql": TABLE})
    db.query(sql.SQL("ALTER DATABASE {} SET search_path = nowhere").format(sql.Identifier(db.name)))
    result = migrate(tmp_path / "m", db.url)
    assert_reported_once(result, "3F000", "search_path")


def test_rollback_on_a_read_only_database(db, tmp_path):
    write(tmp_path / "m", {"1_widgets.up.sql": TABLE, "1_widgets.down.sql": "DROP TABLE widgets;\n"})
    assert migrate(tmp_path / "m", db.url).code == 0
    db.query(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(db.name)))
    result = run_dbctl("rollback", "--migrations", str(tmp_path / "m"), "--database-url", db.url)
    assert_reported_once(result, "read-only", "25006")
    assert [v for v, in db.query("SELECT version FROM _sqlx_migrations")] == [1]


def test_verify_and_status_without_read_access(db, role, tmp_path):
    _, url = role
    write(tmp_path / "m", {"1_widgets.sql": TABLE})
    assert migrate(tmp_path / "m", db.url).code == 0
    db.query("REVOKE ALL ON _sqlx_migrations FROM PUBLIC")
    for command in ("verify", "status"):
        result = run_dbctl(command, "--migrations", str(tmp_path / "m"), "--database-url", url)
        assert_reported_once(result, "permission denied", "42501")


def test_read_only_in_a_migration_names_the_cause(db, tmp_path):
    """The history tables exist, so the first write is the migration's own: still named as read-only."""
    write(tmp_path / "m", {"1_widgets.sql": TABLE, "2_more.sql": "CREATE TABLE more (id int);\n"})
    assert migrate(tmp_path / "m", db.url, "--target", "1").code == 0
    db.query(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(db.name)))
    result = migrate(tmp_path / "m", db.url)
    assert_reported_once(result, "2_more.sql", "25006", "read-only")


def test_a_no_transaction_file_that_changes_the_session_reports_its_own_failure(db, role, tmp_path):
    """SET ROLE to a role that may not write the history: the file ran, its row could not be written."""
    name, _ = role
    write(tmp_path / "m", {"1_widgets.sql": TABLE, "2_switch.sql": f"-- no-transaction\nSET ROLE {name};\n"})
    result = migrate(tmp_path / "m", db.url)
    assert_reported_once(result, "2_switch.sql", "history row could not be written", "42501")
    assert [v for v, in db.query("SELECT version FROM _sqlx_migrations")] == [1]


def test_transient_errors_are_exactly_the_listed_ones(db):
    """Errors as PostgreSQL raises them (RAISE ... USING ERRCODE), through dbctl's own connection."""
    def error(sqlstate):
        with postgres.connect(db.url) as conn:
            try:
                conn.execute(f"DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{sqlstate}'; END $$")
            except postgres.Error as exc:
                assert exc.pgcode == sqlstate
                return exc
        raise AssertionError(f"no error for {sqlstate}")

    for sqlstate in ("40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300", "08006", "08001"):
        assert postgres.is_transient(error(sqlstate)), sqlstate
    for sqlstate in ("25006", "42501", "3F000", "42P01", "42601", "22012", "23505", "57014", "XX000"):
        assert not postgres.is_transient(error(sqlstate)), sqlstate
    with postgres.connect(db.url) as conn:  # the server ends the session: libpq's error has no SQLSTATE
        with pytest.raises(postgres.Error) as lost:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert lost.value.pgcode in (None, "57P01") and postgres.is_transient(lost.value)
    assert not postgres.is_transient(ValueError("not a database error"))


# Failing statements of several kinds, each with the SQLSTATE PostgreSQL gives it.
FAILURES = [
    ("SELECT 1/0;", "22012"),
    ("SELECT * FROM no_such_table;", "42P01"),
    ("INSERT INTO widgets VALUES (1), (1);", "23505"),
    ("CREATE INDEX CONCURRENTLY widgets_bad_idx ON widgets ((id / 0));", None),  # alone: 22012; else: 25001
    ("SET ROLE no_such_role;", "22023"),
    ("ALTER TABLE widgets ADD CONSTRAINT c CHECK (id < 0);", "23514"),
]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.integers(0, 3), after=st.integers(0, 2), failure=st.sampled_from(FAILURES),
       wrapped=st.booleans())
@example(before=0, after=0, failure=FAILURES[3], wrapped=False)  # alone: the INVALID index it leaves is named
def test_generated_failing_statement_in_a_no_transaction_file(pg_server, tmp_path_factory, before, after, failure,
                                                              wrapped):
    """The file's own error, its line and SQLSTATE, one line; the history holds only what succeeded."""
    statement, sqlstate = failure
    alone = before == 0 and after == 0 and not wrapped
    if sqlstate is None:
        sqlstate = "22012" if alone else "25001"  # CONCURRENTLY cannot run inside a transaction block
    lines = ["-- no-transaction"] + (["BEGIN;"] if wrapped else [])
    lines += [f"CREATE TABLE extra_{i} (id int);" for i in range(before)]
    failing_line = len(lines) + 1
    lines.append(statement)
    lines += [f"CREATE TABLE later_{i} (id int);" for i in range(after)]
    lines += ["COMMIT;"] if wrapped else []
    directory = tmp_path_factory.mktemp("gen") / "m"
    write(directory, {"1_widgets.sql": TABLE + "INSERT INTO widgets VALUES (7);\n",
                      "2_generated.sql": "\n".join(lines) + "\n"})
    name = f"g_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = pg_server.url(name)
        result = migrate(directory, url)
        leaves_invalid = alone and statement.startswith("CREATE INDEX CONCURRENTLY")
        drop = ["DROP INDEX CONCURRENTLY public.widgets_bad_idx;"] if leaves_invalid else []
        assert_reported_once(result, f"2_generated.sql:{failing_line}:", f"SQLSTATE {sqlstate}", *drop)
        with psycopg.connect(url, autocommit=True) as conn:
            assert [v for v, in conn.execute("SELECT version FROM _sqlx_migrations")] == [1]
            outcomes = conn.execute("SELECT outcome, sqlstate, error_line FROM _dbctl_migration_attempts "
                                    "WHERE version = 2").fetchall()
            assert outcomes == [("failed", sqlstate, failing_line)]
            # One implicit transaction (or the file's own): nothing of it stays.
            left = conn.execute("SELECT count(*) FROM pg_class WHERE relname ~ '^(extra|later)_'").fetchone()[0]
            assert left == 0
            invalid = conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()[0]
            assert invalid == (1 if leaves_invalid else 0)
    finally:
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.parametrize("url", ["postgresql://u:se%ffkret@127.0.0.1:1/db", "postgresql://u:sekret@127.0.0.1:1/d%ffb"])
@pytest.mark.parametrize("command", ["migrate", "status", "verify"])
def test_a_url_that_percent_encodes_non_utf8_bytes_is_one_clean_line(command, url):
    """libpq's parser takes %ff; Python cannot decode it back (psycopg2's make_dsn raised UnicodeDecodeError)."""
    waiting = [] if command == "status" else ["--wait-timeout", "0"]  # status has no wait: it connects once
    result = run_dbctl(command, *waiting, env={"DATABASE_URL": url, "DBCTL_MIGRATIONS": "migrations"})
    assert_clean_error(result, 2, "is malformed", "not UTF-8")
    assert "sekret" not in result.out + result.err


# Values libpq refuses only when it connects (its parser takes them): a usage error at once, however long
# the command may wait for a server, since no server can fix the URL.
@pytest.mark.parametrize("url, says", [
    ("postgresql://u:sekret@127.0.0.1:1/db?sslmode=wrong", 'invalid sslmode value: "wrong"'),
    ("postgresql://u:sekret@127.0.0.1:1/db?target_session_attrs=any-one", "invalid target_session_attrs value"),
    ("postgresql://u:sekret@127.0.0.1:1/db?channel_binding=maybe", "invalid channel_binding value"),
    ("postgresql://u:sekret@127.0.0.1:1/db?keepalives=often", 'for connection option "keepalives"'),
    ("host=a,b hostaddr=127.0.0.1 port=1 dbname=db user=u password=sekret", "could not match 2 host names"),
    ("postgresql://u:sekret@127.0.0.1:1/db?nosuchoption=1", 'invalid URI query parameter: "nosuchoption"'),
])
@pytest.mark.parametrize("command", ["migrate", "status", "verify", "wait"])
def test_an_option_value_libpq_refuses_is_a_usage_error_without_waiting(command, url, says):
    waiting = [] if command == "status" else ["--timeout" if command == "wait" else "--wait-timeout", "600"]
    result = run_dbctl(command, *waiting, env={"DATABASE_URL": url, "DBCTL_MIGRATIONS": "migrations"})
    assert_clean_error(result, 2, "is malformed", says)
    assert "sekret" not in result.out + result.err
    assert "waiting" not in (result.out + result.err).lower()
