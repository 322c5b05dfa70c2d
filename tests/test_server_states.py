"""PostgreSQL states a developer meets, made for real: each dbctl command says the real cause.

States: a read-only database (default_transaction_read_only), a hot standby
(a streaming replica of the test server, made with pg_basebackup -R), a role
at its CONNECTION LIMIT, a role without CREATE on schema public, a role
without SELECT on the tables, a role without CONNECT. For each, `migrate`,
`status`, `verify`, `seed` and `reset` either work (reading a read-only
database is fine) or fail with one `Error:` line naming the cause, exit 1,
quickly (no pointless retries), with the history unchanged and never a
`success = false` row.

A role at its CONNECTION LIMIT and a role without CONNECT are answers that
waiting will not change: `migrate` reports them at once too, rather than
waiting out --wait-timeout.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from conftest import MIGRATIONS, Database, create_database, drop_database, free_port, run_dbctl
from dbctl.devenv import local_postgres as localpg

ROLE_PASSWORD = "state-role-pw"
COMMANDS = ("migrate", "status", "verify", "seed", "reset")


@dataclass
class Expect:
    code: int
    fragments: tuple[str, ...] = ()
    within: float = 15.0  # seconds: a clear refusal is quick


def run(command: str, url: str, migrations: Path) -> tuple[object, float]:
    args = {"migrate": ["migrate", "--wait-timeout", "5"], "status": ["status"], "verify": ["verify"],
            "seed": ["seed"], "reset": ["reset", "--yes"]}[command]
    start = time.monotonic()
    result = run_dbctl(*args, "--migrations", str(migrations), env={"DATABASE_URL": url})
    return result, time.monotonic() - start


def check(result, elapsed: float, expect: Expect) -> None:
    output = result.output
    assert "Traceback" not in output and "unexpected" not in output, output
    assert "lost the connection" not in output, output
    assert ROLE_PASSWORD not in output and "s3cret-pw" not in output, output
    assert result.code == expect.code, output
    if expect.code:
        errors = [line for line in result.err.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, result.err
        for fragment in expect.fragments:
            assert fragment in errors[0], errors[0]
    assert elapsed < expect.within, f"took {elapsed:.1f}s: {output}"


def history(db: Database) -> list[tuple]:
    if db.scalar("SELECT to_regclass('_sqlx_migrations') IS NULL"):
        return []
    return db.query("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")


@pytest.fixture(scope="module")
def pending_migrations(tmp_path_factory):
    """The Kiro migrations plus one not applied yet, so `migrate` has to write."""
    directory = tmp_path_factory.mktemp("states") / "migrations"
    shutil.copytree(MIGRATIONS, directory)
    (directory / "009_after_the_fault.sql").write_text("CREATE TABLE after_the_fault (id int);\n")
    return directory


def migrated_database(server, prefix: str) -> Database:
    db = create_database(server, f"{prefix}_{uuid.uuid4().hex[:8]}")
    result = run_dbctl("migrate", env={"DATABASE_URL": db.url})
    assert result.code == 0, result.output
    return db


@pytest.fixture
def role(pg_server):
    name = f"state_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name),
                                                                           sql.Literal(ROLE_PASSWORD)))
    yield name
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def role_url(server, role: str, database: str) -> str:
    return f"postgresql://{role}:{ROLE_PASSWORD}@127.0.0.1:{server.port}/{database}"


def superuser(server, statement: sql.Composable, database: str = "postgres") -> None:
    with psycopg.connect(server.url(database), autocommit=True) as conn:
        conn.execute(statement)


# ---------------------------------------------------------------- a read-only database

READ_ONLY = "the database is read-only"
READ_ONLY_CASES = {
    "migrate": pytest.param("migrate", Expect(1, (READ_ONLY,))),
    "status": pytest.param("status", Expect(0)),  # reading is fine
    "verify": pytest.param("verify", Expect(1, ("schema not ready", "009_after_the_fault.sql"))),
    "seed": pytest.param("seed", Expect(1, ("schema is not fully migrated",))),
}


@pytest.mark.parametrize("command, expect", list(READ_ONLY_CASES.values()), ids=list(READ_ONLY_CASES))
def test_a_read_only_database(pg_server, pending_migrations, command, expect):
    db = migrated_database(pg_server, "ro")
    try:
        make_read_only(pg_server, db)
        before = history(db)
        check(*run(command, db.url, pending_migrations), expect)
        assert history(db) == before
    finally:
        drop_database(pg_server, db.name)


def make_read_only(pg_server, db) -> None:
    """ALTER DATABASE ... SET default_transaction_read_only = on: new sessions may only read."""
    superuser(pg_server, sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
        sql.Identifier(db.name)))


def test_seeding_a_read_only_database_names_the_cause(pg_server):
    db = migrated_database(pg_server, "ro_seed")
    try:
        make_read_only(pg_server, db)
        check(*run("seed", db.url, MIGRATIONS), Expect(1, (READ_ONLY, "cannot seed")))
        assert db.scalar("SELECT to_regclass('_dbctl_seed_runs') IS NULL")
    finally:
        drop_database(pg_server, db.name)


def test_resetting_a_read_only_database_makes_a_writable_one(pg_server):
    """The setting belongs to the database that reset drops: the new one is an ordinary, writable one."""
    db = migrated_database(pg_server, "ro_reset")
    try:
        make_read_only(pg_server, db)
        check(*run("reset", db.url, MIGRATIONS), Expect(0, within=60))
        assert db.scalar("SHOW default_transaction_read_only") == "off"
        assert db.scalar("SELECT count(*) FROM _sqlx_migrations WHERE success") == 8
    finally:
        drop_database(pg_server, db.name)


# ---------------------------------------------------------------- a hot standby

@pytest.fixture(scope="module")
def standby(pg_server):
    """A streaming replica of the test server (pg_basebackup -R), holding a migrated database."""
    source = migrated_database(pg_server, "primary")
    root = Path(tempfile.mkdtemp(prefix="dbctl-test-standby-"))
    os.chmod(root, 0o755)
    replica = localpg.LocalServer(root / "pg", port=free_port(), user=pg_server.user, password=pg_server.password,
                                  database="postgres", durable=False)
    account = localpg._server_account()
    replica.root.mkdir(parents=True)
    localpg._chown_tree(root, account)
    env_password = {"PGPASSWORD": pg_server.password}
    os.environ.update(env_password)  # pg_basebackup reads it; removed right after
    try:
        result = localpg._run([str(localpg.find_bindir() / "pg_basebackup"), "-h", "127.0.0.1",
                               "-p", str(pg_server.port), "-U", pg_server.user, "-D", str(replica.datadir),
                               "-R", "-X", "stream", "--checkpoint=fast"], account, timeout=120)
    finally:
        os.environ.pop("PGPASSWORD", None)
    assert result.returncode == 0, result.stderr
    localpg.start(replica)
    try:
        with psycopg.connect(replica.url(source.name), autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        yield Database(replica, source.name)
    finally:
        localpg.stop(replica, mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
        drop_database(pg_server, source.name)


HOT_STANDBY_CASES = {
    "migrate": pytest.param("migrate", Expect(1, (READ_ONLY,))),
    "status": pytest.param("status", Expect(0)),
    "verify": pytest.param("verify", Expect(1, ("schema not ready", "009_after_the_fault.sql"))),
    "reset": pytest.param("reset", Expect(1, ("hot standby", "reset it on the primary", "nothing was dropped"))),
}


@pytest.mark.parametrize("command, expect", list(HOT_STANDBY_CASES.values()), ids=list(HOT_STANDBY_CASES))
def test_a_hot_standby(standby, pending_migrations, command, expect):
    before = history(standby)
    check(*run(command, standby.url, pending_migrations), expect)
    assert history(standby) == before and all(row[2] for row in before)


def test_seeding_a_hot_standby_names_the_cause(standby):
    check(*run("seed", standby.url, MIGRATIONS), Expect(1, (READ_ONLY, "cannot seed")))


# ---------------------------------------------------------------- out of connections

@pytest.mark.parametrize("command", [
    *COMMANDS,
])
def test_a_role_at_its_connection_limit(pg_server, pending_migrations, role, command):
    db = migrated_database(pg_server, "conn")
    try:
        superuser(pg_server, sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(db.name),
                                                                              sql.Identifier(role)))
        superuser(pg_server, sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(sql.Identifier(role)))
        before = history(db)
        check(*run(command, role_url(pg_server, role, db.name), pending_migrations),
              Expect(1, ("too many connections",), within=4))
        assert history(db) == before
    finally:
        drop_database(pg_server, db.name)


# ---------------------------------------------------------------- a role without privileges

NO_CREATE_CASES = {
    "migrate": pytest.param("migrate", Expect(1, ("permission denied for schema public",))),
    "status": pytest.param("status", Expect(0)),
    "verify": pytest.param("verify", Expect(1, ("schema not ready",))),
    "seed": pytest.param("seed", Expect(1, ("schema is not fully migrated",))),
    "reset": pytest.param("reset", Expect(1, ("does not own database", "nothing was dropped"))),
}


@pytest.mark.parametrize("command, expect", list(NO_CREATE_CASES.values()), ids=list(NO_CREATE_CASES))
def test_a_role_without_create_on_schema_public(pg_server, pending_migrations, role, command, expect):
    """PostgreSQL 15+: only the database owner may CREATE in public; this role owns nothing."""
    db = create_database(pg_server, f"nocreate_{uuid.uuid4().hex[:8]}")
    try:
        check(*run(command, role_url(pg_server, role, db.name), pending_migrations), expect)
        assert db.tables() == set()
    finally:
        drop_database(pg_server, db.name)


NO_SELECT_CASES = {
    "migrate": pytest.param("migrate", Expect(1, ("permission denied for table",))),
    "status": pytest.param("status", Expect(1, ("permission denied for table", "GRANT SELECT"))),
    "verify": pytest.param("verify", Expect(1, ("permission denied for table", "GRANT SELECT"))),
    "seed": pytest.param("seed", Expect(1, ("permission denied for table", "cannot seed"))),
    "reset": pytest.param("reset", Expect(1, ("does not own database", "nothing was dropped"))),
}


@pytest.mark.parametrize("command, expect", list(NO_SELECT_CASES.values()), ids=list(NO_SELECT_CASES))
def test_a_role_that_may_not_read_the_tables(pg_server, pending_migrations, role, command, expect):
    db = migrated_database(pg_server, "noselect")
    try:
        before = history(db)
        check(*run(command, role_url(pg_server, role, db.name), pending_migrations), expect)
        assert history(db) == before
    finally:
        drop_database(pg_server, db.name)


@pytest.mark.parametrize("command", [
    *COMMANDS,
])
def test_a_role_without_connect(pg_server, pending_migrations, role, command):
    db = migrated_database(pg_server, "noconnect")
    try:
        superuser(pg_server, sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db.name)))
        before = history(db)
        check(*run(command, role_url(pg_server, role, db.name), pending_migrations),
              Expect(1, ("permission denied for database",), within=4))
        assert history(db) == before
    finally:
        drop_database(pg_server, db.name)
