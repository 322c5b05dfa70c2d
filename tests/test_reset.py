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
    (migrations_dir / "oops.sql").write_text("SELECT 1;")
    result = run_dbctl("reset", "--yes", "--migrations", str(migrations_dir), env={"DATABASE_URL": db.url})
    assert_clean_error(result, 2, "oops.sql")
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
