"""`dbctl reset` against a real PostgreSQL: open sessions, names that need quoting, refusals, confirmation."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from conftest import REPO, Database, assert_clean_error, create_database, drop_database, run_dbctl


def exists(server, name: str) -> bool:
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        return conn.execute("SELECT EXISTS (SELECT FROM pg_database WHERE datname = %s)", (name,)).fetchone()[0]


def migrated(db) -> None:
    result = run_dbctl("migrate", env={"DATABASE_URL": db.url})
    assert result.code == 0, result.output


def test_reset_ends_open_sessions_then_migrates_and_seeds(db):
    migrated(db)
    db.query("CREATE TABLE scratch (x int)")  # something the reset must throw away
    idle = db.connect()
    busy = psycopg.connect(db.url)  # inside a transaction, holding a lock on users
    busy.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")

    result = run_dbctl("reset", "--seed", "--yes", env={"DATABASE_URL": db.url})
    assert result.code == 0, result.output
    assert "about to DROP database" in result.out and "2 other session(s) on it will be ended" in result.out
    assert "ended 2 other session(s)" in result.out
    for step in ("dropped and re-created", "migrated: 8 migration(s) applied", "seeded in", "reset "):
        assert step in result.out
    assert "s3cret-pw" not in result.output

    assert "scratch" not in db.tables()
    assert db.scalar("SELECT count(*) FROM _sqlx_migrations") == 8
    assert db.scalar("SELECT count(*) FROM users") == 2
    for conn in (idle, busy):
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        conn.close()


def test_after_reset_and_seed_the_test_users_log_in_with_password123(db):
    argon2 = pytest.importorskip("argon2")
    result = run_dbctl("reset", "--seed", "--yes", env={"DATABASE_URL": db.url})
    assert result.code == 0, result.output
    hasher = argon2.PasswordHasher()
    for email in ("test@example.com", "dev@example.com"):
        stored = db.scalar("SELECT password_hash FROM users WHERE email = %s", (email,))
        assert stored is not None, email
        assert hasher.verify(stored, "password123")


@pytest.mark.parametrize("name", [
    'kiro "dev" db',
    "it's kiro",
    'x" WITH (FORCE); DROP DATABASE "victim',  # what naive quoting would turn into a second statement
])
def test_reset_of_a_database_whose_name_needs_quoting(pg_server, name):
    victim = create_database(pg_server, "victim")
    target = create_database(pg_server, name)
    try:
        assert victim.scalar("SELECT 1") == 1
        result = run_dbctl("reset", "--seed", "--yes", env={"DATABASE_URL": target.url})
        assert result.code == 0, result.output
        assert target.scalar("SELECT count(*) FROM users") == 2
        assert target.scalar("SELECT current_database()") == name
        assert exists(pg_server, "victim")
    finally:
        drop_database(pg_server, name)
        drop_database(pg_server, "victim")


def test_reset_keeps_an_owner_whose_name_needs_quoting(pg_server):
    role = f'kiro "owner" {uuid.uuid4().hex[:6]}'
    name = f"owned_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE ROLE {}").format(psycopg.sql.Identifier(role)))
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {} OWNER {}").format(
            psycopg.sql.Identifier(name), psycopg.sql.Identifier(role)))
    db = Database(pg_server, name)
    try:
        result = run_dbctl("reset", "--yes", env={"DATABASE_URL": db.url})
        assert result.code == 0, result.output
        assert f"owner {role}" in result.out
        assert db.scalar("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()") == role
    finally:
        drop_database(pg_server, name)
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(role)))


def test_reset_creates_a_database_that_does_not_exist_yet(pg_server):
    db = Database(pg_server, f"new_{uuid.uuid4().hex[:8]}")
    try:
        result = run_dbctl("reset", "--yes", env={"DATABASE_URL": db.url})
        assert result.code == 0, result.output
        assert "does not exist yet" in result.out and "created database" in result.out
        assert db.scalar("SELECT count(*) FROM _sqlx_migrations") == 8
        assert db.scalar("SELECT count(*) FROM users") == 0  # no --seed, no data
    finally:
        drop_database(pg_server, db.name)


@pytest.mark.parametrize("env, args", [
    ({"DBCTL_ENV": "production"}, ("--yes",)),
    ({"DBCTL_ENV": "production"}, ("--yes", "--seed", "--env", "development")),
    ({"DBCTL_ENV": "staging"}, ("--yes",)),
    ({}, ("--yes", "--env", "production")),
])
def test_protected_environments_refuse_to_reset_even_with_yes(db, env, args):
    migrated(db)
    result = run_dbctl("reset", *args, env={"DATABASE_URL": db.url, **env})
    assert_clean_error(result, 1, "refusing to reset")
    assert "about to DROP" not in result.out  # refused before even looking at the database
    assert db.scalar("SELECT count(*) FROM _sqlx_migrations") == 8


def test_without_yes_and_without_a_terminal_reset_refuses(db):
    migrated(db)
    db.query("CREATE TABLE keep_me (x int)")
    result = run_dbctl("reset", env={"DATABASE_URL": db.url}, input="")
    assert_clean_error(result, 1, "pass --yes")
    assert "keep_me" in db.tables()


def test_bad_migration_files_are_refused_before_anything_is_dropped(db, migrations_dir):
    migrated(db)
    (migrations_dir / "oops_no_version.sql").write_text("SELECT 1;")  # sqlx refuses *_*.sql without a version
    result = run_dbctl("reset", "--yes", "--migrations", str(migrations_dir), env={"DATABASE_URL": db.url})
    assert_clean_error(result, 2, "oops_no_version.sql")
    assert db.scalar("SELECT count(*) FROM _sqlx_migrations") == 8


def _run_on_terminal(args: list[str], env: dict, answer: str, timeout: float = 60) -> tuple[int, str]:
    """Run dbctl with a pseudo-terminal as stdin and stdout, type `answer` at the prompt."""
    master, slave = pty.openpty()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DBCTL_", "DATABASE_URL", "PG"))}
    proc = subprocess.Popen([sys.executable, "-m", "dbctl", *args], cwd=REPO, env={**full_env, **env},
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
                if not answered and b"to confirm" in output:
                    os.write(master, answer.encode() + b"\n")
                    answered = True
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, output.decode(errors="replace")


def test_on_a_terminal_the_database_name_must_be_typed(db):
    migrated(db)
    db.query("CREATE TABLE keep_me (x int)")
    code, output = _run_on_terminal(["reset"], {"DATABASE_URL": db.url}, answer="not-the-name")
    assert code == 1, output
    assert "does not match" in output and "nothing was dropped" in output
    assert "keep_me" in db.tables()

    code, output = _run_on_terminal(["reset"], {"DATABASE_URL": db.url}, answer=db.name)
    assert code == 0, output
    assert "dropped and re-created" in output
    assert "keep_me" not in db.tables()
    assert db.scalar("SELECT count(*) FROM _sqlx_migrations") == 8


# ---------------------------------------------------------------- privileges and two resets at once

@pytest.fixture
def role(pg_server):
    """A login role of the test's own (dropped afterwards); its URL for a database is role.url(name)."""
    from psycopg import sql

    name = f"r_{uuid.uuid4().hex[:8]}"
    password = "role-pw-1234"

    class Role:
        def __init__(self):
            self.name = name

        def url(self, database: str) -> str:
            return f"postgresql://{name}:{password}@127.0.0.1:{pg_server.port}/{database}"

        def sql(self, statement: str) -> None:
            with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
                conn.execute(sql.SQL(statement).format(role=sql.Identifier(name)))

    r = Role()
    r.sql(f"CREATE ROLE {{role}} LOGIN PASSWORD '{password}'")
    yield r
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        for (db,) in conn.execute("SELECT datname FROM pg_database WHERE pg_get_userbyid(datdba) = %s",
                                  (name,)).fetchall():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def owned_database(pg_server, role, with_tables: bool = True) -> Database:
    from psycopg import sql

    name = f"owned_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(role.name)))
    db = Database(pg_server, name)
    if with_tables:
        with psycopg.connect(role.url(name), autocommit=True) as conn:
            conn.execute("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (1)")
    return db


def test_an_owner_without_createdb_is_refused_before_anything_is_dropped(pg_server, role):
    """The owner may DROP its database but not CREATE it again: reset would lose it, so it refuses first."""
    db = owned_database(pg_server, role)
    result = run_dbctl("reset", "--yes", env={"DATABASE_URL": role.url(db.name)})
    assert_clean_error(result, 1, "no CREATEDB", "nothing was dropped", f"ALTER ROLE \"{role.name}\" CREATEDB")
    assert "role-pw-1234" not in result.output
    assert exists(pg_server, db.name)
    assert db.scalar("SELECT count(*) FROM keep_me") == 1


def test_a_role_that_does_not_own_the_database_is_refused(pg_server, role):
    role.sql("ALTER ROLE {role} CREATEDB")
    db = create_database(pg_server, f"notmine_{uuid.uuid4().hex[:8]}")  # owned by the test superuser
    try:
        db.query("CREATE TABLE keep_me (x int)")
        result = run_dbctl("reset", "--yes", env={"DATABASE_URL": role.url(db.name)})
        assert_clean_error(result, 1, "does not own database", "nothing was dropped")
        assert "keep_me" in db.tables()
    finally:
        drop_database(pg_server, db.name)


def test_an_owner_with_createdb_resets_and_keeps_owning_it(pg_server, role):
    role.sql("ALTER ROLE {role} CREATEDB")
    db = owned_database(pg_server, role)
    result = run_dbctl("reset", "--yes", env={"DATABASE_URL": role.url(db.name)})
    assert result.code == 0, result.output
    assert "keep_me" not in db.tables() and db.scalar("SELECT count(*) FROM _sqlx_migrations") == 8
    assert db.scalar("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()") == role.name
    assert db.scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'dbctl_reset_check_%'") == 0


def test_a_busy_template1_does_not_stop_a_reset(pg_server):
    """The database is re-created from template0 with its own encoding and locale (tests/test_reset_attributes.py),
    so a session on template1 no longer matters; what cannot be re-created is refused by the rehearsal there."""
    db = create_database(pg_server, f"busy_{uuid.uuid4().hex[:8]}")
    try:
        db.query("CREATE TABLE keep_me (x int)")
        with psycopg.connect(pg_server.url("template1"), autocommit=True):
            result = run_dbctl("reset", "--yes", env={"DATABASE_URL": db.url})
        assert result.code == 0, result.output
        assert "keep_me" not in db.tables()
    finally:
        drop_database(pg_server, db.name)


def test_a_reset_while_another_holds_the_reset_lock_is_refused(pg_server, db):
    """Deterministic half of two resets at once: the lock is held (as a running reset holds it)."""
    from dbctl.engine.postgres import lock_key

    migrated(db)
    db.query("CREATE TABLE keep_me (x int)")
    with psycopg.connect(pg_server.url("postgres"), autocommit=True, application_name="the other reset") as other:
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key(f"dbctl reset {db.name}"),))
        result = run_dbctl("reset", "--yes", env={"DATABASE_URL": db.url})
    assert_clean_error(result, 1, f"another dbctl reset of database \"{db.name}\" is running", "the other reset",
                       "nothing was dropped")
    assert "keep_me" in db.tables()
    assert run_dbctl("reset", "--yes", env={"DATABASE_URL": db.url}).code == 0  # released: it runs
    assert "keep_me" not in db.tables()


def test_two_resets_at_once_one_succeeds_and_the_other_refuses(db):
    """Two real processes started together. Each reset holds its lock from before the DROP to after the
    seed (about a second), so the second one normally meets it; on a starved machine they may run one
    after the other, which is also correct. Never `unexpected`, never a lost or half-built database."""
    migrated(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBCTL_", "DATABASE_URL", "PG"))}
    env["DATABASE_URL"] = db.url
    procs = [subprocess.Popen([sys.executable, "-m", "dbctl", "reset", "--yes", "--seed"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 1], [0, 0]), results
    for code, out, err in results:
        assert "unexpected" not in err and "Traceback" not in err, err
        if code == 1:
            errors = [line for line in err.splitlines() if line.startswith("Error:")]
            assert len(errors) == 1 and "another dbctl reset of database" in errors[0], err
    assert db.scalar("SELECT count(*) FROM _sqlx_migrations") == 8
    assert db.scalar("SELECT count(*) FROM users") == 2
