"""A corpus of bad input: every case gets one clear line, the right exit code, and an unchanged database.

Each case starts from the Kiro schema applied to a fresh database holding a
user's row, breaks one thing (a file, the URL, the environment, an option),
runs the real `dbctl`, and asserts: exactly one `Error:` line containing the
expected words, the exit code (1 failed/refused, 2 bad usage), no traceback,
no password, and the database exactly as before. dbctl's own attempts log
(`_dbctl_migration_attempts`) is the one table allowed to change: recording a
failed attempt is its job; the cases that fail a migration assert that row.
"""

from __future__ import annotations

import shutil
import socket
import uuid
from dataclasses import dataclass, field
from typing import Callable

import psycopg
import pytest

from conftest import (MIGRATIONS, Database, assert_clean_error, create_database, drop_database, run_dbctl,
                      start_dbctl, wait_for_lock_then_release)
from dbctl.engine import postgres

PASSWORD = "s3cret-pw"


@pytest.fixture(scope="module")
def kiro_template(pg_server):
    """A database with the Kiro schema applied, cloned for every case (fast: a file copy)."""
    template = create_database(pg_server, f"tpl_{uuid.uuid4().hex[:10]}")
    result = run_dbctl("migrate", "--migrations", str(MIGRATIONS), "--database-url", template.url)
    assert result.code == 0, result.output
    template.query("INSERT INTO users (email, password_hash, display_name) "
                   "VALUES ('ada@example.com', '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA', 'Ada')")
    yield template
    drop_database(pg_server, template.name)


@pytest.fixture
def base(pg_server, kiro_template):
    from psycopg import sql

    name = f"bad_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(kiro_template.name)))
    database = Database(pg_server, name)
    yield database
    drop_database(pg_server, name)


def snapshot(db) -> dict:
    """Everything a bad input must not change: schema, history, user data, the list of databases."""
    return {
        "columns": db.query(
            """SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default
               FROM information_schema.columns
               WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
                 AND table_name <> '_dbctl_migration_attempts' ORDER BY 1, 2, 3"""),
        "indexes": db.query(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename <> '_dbctl_migration_attempts' ORDER BY 1"),
        "functions": db.query(
            "SELECT proname, md5(prosrc) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' ORDER BY 1, 2"),
        "history": db.query(
            "SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version"),
        "users": db.query("SELECT email, display_name FROM users ORDER BY email"),
        "databases": db.query("SELECT datname FROM pg_database WHERE datname = %s", (db.name,)),
    }


def failed_attempts(db) -> list[tuple]:
    return db.query("SELECT version, outcome FROM _dbctl_migration_attempts WHERE outcome <> 'success' ORDER BY id")


@dataclass
class Case:
    """Prepare returns the dbctl arguments; `env` may use {url}, {bad_port}."""

    name: str
    code: int
    fragments: tuple[str, ...]
    prepare: Callable
    env: dict = field(default_factory=dict)
    failed_attempt: int | None = None  # a migration that ran and failed: its attempt is recorded


def migrate(d, db):
    return ["migrate", "--migrations", str(d), "--database-url", db.url]


def add(name: str, content: bytes | str, *args: str):
    def prepare(d, db):
        data = content.encode() if isinstance(content, str) else content
        (d / name).write_bytes(data)
        return migrate(d, db) + list(args)
    return prepare


def add_many(files: dict, *args: str):
    def prepare(d, db):
        for name, text in files.items():
            (d / name).write_text(text)
        return migrate(d, db) + list(args)
    return prepare


def with_url(url_of: Callable, *args: str, command: str = "migrate"):
    def prepare(d, db):
        return [command, "--migrations", str(d), "--database-url", url_of(db), *args]
    return prepare


def other_url(db, **parts) -> str:
    s = db.server
    user, password = parts.get("user", s.user), parts.get("password", s.password)
    host, port = parts.get("host", "127.0.0.1"), parts.get("port", s.port)
    return f"postgresql://{user}:{password}@{host}:{port}/{parts.get('database', db.name)}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return: nothing listens there


def change_applied(d, db):
    path = d / "002_indexes.sql"
    path.write_text(path.read_text() + "\n-- a harmless-looking edit\n")
    return migrate(d, db)


def remove_applied(d, db):
    (d / "008_audit_logging_and_rate_limiting.sql").unlink()
    return migrate(d, db)


def dirty_history(d, db):
    # What sqlx leaves behind after a failed migration; the setup is the only change allowed.
    db.query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
             "VALUES (9, 'half done', false, '\\x00', 0)")
    (d / "009_half_done.sql").write_text("CREATE TABLE half_done (id int);\n")
    return migrate(d, db)


def verify_pending(d, db):
    (d / "009_pending.sql").write_text("CREATE TABLE pending (id int);")
    return ["verify", "--migrations", str(d), "--database-url", db.url]


def bad_yaml(text: str, *args: str):
    def prepare(d, db):
        path = d.parent / "options.yaml"
        path.write_text(text)
        return ["render", "migration-job", "--options", str(path), *args]
    return prepare


def render(*args: str):
    return lambda d, db: ["render", "migration-job", *args]


CASES = [
    # --- broken SQL: the migration runs, fails, and leaves nothing behind but its attempt record
    Case("syntax error", 1, ("009_broken.sql:2", "syntax error"),
         add("009_broken.sql", "-- a table\nCREATE TABLE broken (id int;\n"), failed_attempt=9),
    Case("typo in a later statement", 1, ("009_typo.sql:2", 'syntax error at or near "SELEC"'),
         add("009_typo.sql", "CREATE TABLE typo_first (id int);\nSELEC 1;\n"), failed_attempt=9),
    Case("unterminated string", 1, ("009_quote.sql", "unterminated quoted string"),
         add("009_quote.sql", "CREATE TABLE quote_first (id int);\nSELECT 'abc;\n"), failed_attempt=9),
    Case("unknown table", 1, ("009_alter.sql:2", 'relation "no_such_table" does not exist'),
         add("009_alter.sql", "CREATE TABLE alter_first (id int);\nALTER TABLE no_such_table ADD COLUMN x int;\n"),
         failed_attempt=9),
    Case("object already exists", 1, ("009_again.sql", 'relation "users" already exists'),
         add("009_again.sql", "CREATE TABLE users (id int);\n"), failed_attempt=9),
    Case("constraint violated by existing data", 1, ("009_notnull.sql", "null values"),
         add("009_notnull.sql", "ALTER TABLE users ADD COLUMN nickname text NOT NULL;\n"), failed_attempt=9),
    Case("statement timeout", 1, ("009_slow.sql", "statement timeout"),
         add("009_slow.sql", "CREATE TABLE slow_first (id int);\nSELECT pg_sleep(5);\n",
             "--statement-timeout", "200ms"), failed_attempt=9),
    Case("COPY FROM STDIN in a migration", 1, ("009_copy.sql:2", "COPY ... FROM STDIN"),
         add("009_copy.sql", "CREATE TABLE copy_t (id int);\nCOPY copy_t FROM STDIN;\n"), failed_attempt=9),
    # --- files that are refused before connecting
    Case("duplicate versions", 2, ("share version 9",),
         add_many({"009_one.sql": "CREATE TABLE one (id int);", "009_two.sql": "CREATE TABLE two (id int);"})),
    Case("name without a version", 2, ("add_things.sql", "integer version prefix"),
         add("add_things.sql", "CREATE TABLE things (id int);")),
    Case("hidden file with a migration-like name", 2, (".009_x.sql", "integer version prefix"),
         add(".009_x.sql", "SELECT 1;")),
    Case("version beyond BIGINT", 2, ("99999999999999999999_huge.sql", "integer version prefix"),
         add("99999999999999999999_huge.sql", "SELECT 1;")),
    Case("NUL byte in a file", 2, ("009_nul.sql:2", "NUL byte"),
         add("009_nul.sql", b"CREATE TABLE nul_t (id int);\nDROP TABLE nul_t;\0DROP TABLE users;")),
    Case("non-UTF-8 file", 2, ("009_latin1.sql:2", "not valid UTF-8"),
         add("009_latin1.sql", "-- ok\nINSERT INTO artists (canonical_name) VALUES ('caf\xe9');\n".encode("latin-1"))),
    Case("missing migrations directory", 2, ("does not exist", "--migrations"),
         lambda d, db: ["migrate", "--migrations", str(d / "nowhere"), "--database-url", db.url]),
    # --- the history and the files disagree: refused, nothing applied
    Case("changed applied file", 1, ("002_indexes.sql", "changed after it was applied"), change_applied),
    Case("missing applied file", 1, ("version 8", "missing"), remove_applied),
    Case("dirty history row", 1, ("version 9", "success = false"), dirty_history),
    # --- where and how to connect
    Case("no database URL", 2, ("DATABASE_URL",),
         lambda d, db: ["migrate", "--migrations", str(d)]),
    Case("URL of another scheme", 2, ('scheme "mysql"',),
         with_url(lambda db: f"mysql://root:{PASSWORD}@127.0.0.1/{db.name}")),
    Case("malformed URL", 2, ("malformed", "notaport"),
         with_url(lambda db: f"postgresql://u:{PASSWORD}@127.0.0.1:notaport/{db.name}", "--wait-timeout", "1")),
    Case("wrong password", 1, ("rejected the credentials",),
         with_url(lambda db: other_url(db, password="wrong-pw-123"))),
    Case("unknown user", 1, ("rejected the credentials",),
         with_url(lambda db: other_url(db, user="nobody_here"))),
    Case("unknown database", 1, ("does not exist", "gave up after 1s"),
         with_url(lambda db: other_url(db, database="no_such_db"), "--wait-timeout", "1")),
    Case("unknown host", 1, ("unknown host",),
         with_url(lambda db: other_url(db, host="no-such-host.invalid"), "--wait-timeout", "1")),
    Case("server down", 1, ("nothing is listening", "gave up after 1s"),
         with_url(lambda db: other_url(db, port=closed_port()), "--wait-timeout", "1")),
    Case("status with a wrong password", 1, ("rejected the credentials",),
         with_url(lambda db: other_url(db, password="wrong-pw-123"), command="status")),
    Case("verify with the server down", 1, ("nothing is listening",),
         with_url(lambda db: other_url(db, port=closed_port()), command="verify")),
    # --- options
    Case("bad --lock-timeout", 2, ("--lock-timeout",), add("009_t.sql", "CREATE TABLE t9 (id int);",
                                                          "--lock-timeout", "5 parsecs")),
    Case("--target that is no version", 2, ("--target 42",), lambda d, db: migrate(d, db) + ["--target", "42"]),
    Case("--wait-timeout not a number", 2, ("--wait-timeout",),
         lambda d, db: migrate(d, db) + ["--wait-timeout", "soon"]),
    Case("unknown option", 2, ("--frobnicate",), lambda d, db: migrate(d, db) + ["--frobnicate"]),
    Case("unknown command", 2, ("migrat",), lambda d, db: ["migrat"]),
    Case("new without letters", 2, ("no letters or digits",),
         lambda d, db: ["new", "--migrations", str(d), "!!!"]),
    Case("verify with a pending migration", 1, ("schema not ready", "009_pending.sql"), verify_pending),
    # --- seed and reset where they must not run
    Case("seed in production", 1, ("refusing to seed", "production"),
         lambda d, db: ["seed", "--migrations", str(d), "--database-url", db.url], env={"DBCTL_ENV": "production"}),
    Case("reset in production", 1, ("refusing to reset", "production"),
         lambda d, db: ["reset", "--yes", "--migrations", str(d), "--database-url", db.url],
         env={"DBCTL_ENV": "production"}),
    Case("reset in production, --env cannot talk it down", 1, ("cannot override",),
         lambda d, db: ["reset", "--yes", "--env", "development", "--migrations", str(d), "--database-url", db.url],
         env={"DBCTL_ENV": "production"}),
    Case("reset without --yes off a terminal", 1, ("--yes",),
         lambda d, db: ["reset", "--migrations", str(d), "--database-url", db.url]),
    Case("unknown environment", 2, ('"prod"',),
         lambda d, db: ["seed", "--migrations", str(d), "--database-url", db.url], env={"DBCTL_ENV": "prod"}),
    # --- render options
    Case("render: bad image", 2, ("bad image!!",), render("--image", "bad image!!")),
    Case("render: bad namespace", 2, ("Bad_NS",), render("--namespace", "Bad_NS")),
    Case("render: bad memory quantity", 2, ("12XB",), render("--memory", "12XB")),
    Case("render: broken YAML", 2, ("options.yaml",), bad_yaml("image: [unclosed\n")),
    Case("render: YAML that is not a mapping", 2, ("options.yaml",), bad_yaml("- just\n- a list\n")),
    Case("render: unknown YAML option", 2, ("imagee",), bad_yaml("imagee: kiro-backend:dev\n")),
    Case("render: missing options file", 2, ("options.yaml",),
         lambda d, db: ["render", "migration-job", "--options", str(d.parent / "options.yaml")]),
]


def test_corpus_is_large_enough():
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, base, tmp_path):
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, directory)
    args = case.prepare(directory, base)
    before = snapshot(base)
    attempts_before = failed_attempts(base)
    result = run_dbctl(*args, env=case.env)
    assert_clean_error(result, case.code, *case.fragments)
    assert PASSWORD not in result.output
    assert snapshot(base) == before, f"{case.name}: the database changed"
    new_attempts = failed_attempts(base)[len(attempts_before):]
    if case.failed_attempt is None:
        assert new_attempts == [], new_attempts
    else:
        assert new_attempts and {v for v, _ in new_attempts} == {case.failed_attempt}
        assert new_attempts[-1][1] == "failed"


def test_lock_held_past_the_timeout(base, tmp_path):
    """Another runner holds the migration lock: give up after --lock-wait-timeout, name the holder, apply nothing."""
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, directory)
    (directory / "009_waits.sql").write_text("CREATE TABLE waits (id int);\n")
    before = snapshot(base)
    with base.connect(application_name="the other runner") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (postgres.lock_key(base.name),))
        result = run_dbctl(*migrate(directory, base), "--lock-wait-timeout", "1")
    assert_clean_error(result, 1, "gave up waiting for the migration lock after 1s", "the other runner")
    assert snapshot(base) == before
    assert failed_attempts(base) == []


def test_table_lock_held_past_lock_timeout(base, tmp_path):
    """A long transaction holds the table: lock_timeout fails the migration (after retries), nothing half-done."""
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, directory)
    (directory / "009_alter_users.sql").write_text(
        "CREATE TABLE alter_users_first (id int);\nALTER TABLE users ADD COLUMN nickname text;\n")
    before = snapshot(base)
    with base.connect() as blocker:
        blocker.autocommit = False
        blocker.execute("LOCK TABLE users IN ACCESS SHARE MODE")
        result = run_dbctl(*migrate(directory, base), "--lock-timeout", "100ms")
        blocker.rollback()
    assert_clean_error(result, 1, "009_alter_users.sql:2", "lock timeout", "after 3 attempts")
    assert snapshot(base) == before
    assert [o for _, o in failed_attempts(base)] == ["retried", "retried", "failed"]


def test_no_traceback_even_for_an_unforeseen_error_but_debug_shows_it(base, tmp_path):
    """--debug is the one way to see a traceback."""
    result = run_dbctl("migrate", "--migrations", str(tmp_path / "nowhere"), "--database-url", base.url, "--debug")
    assert result.code != 0
    assert "Traceback" in result.err


def test_held_lock_released_mid_wait_then_applies(base, tmp_path):
    """The same lock, released while dbctl waits: it goes on and applies (the timeout case above is not a fluke)."""
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, directory)
    (directory / "009_after_wait.sql").write_text("CREATE TABLE after_wait (id int);\n")
    holder = base.connect()
    holder.execute("SELECT pg_advisory_lock(%s)", (postgres.lock_key(base.name),))
    proc = start_dbctl(*migrate(directory, base), "--lock-wait-timeout", "60")
    try:
        first = wait_for_lock_then_release(proc, holder)
        out, err = proc.communicate(timeout=120)
    finally:
        holder.close()
        proc.kill()
    assert proc.returncode == 0, first + out + err
    assert "waiting for the migration lock" in first
    assert "after_wait" in base.tables()
