"""The command line as people and Jobs use it: exit codes, one-line errors, masked passwords."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import pytest

from conftest import MIGRATIONS, assert_clean_error, free_port, run_dbctl, wait_for_port


def test_no_database_url_is_a_usage_error():
    result = run_dbctl("migrate")
    assert_clean_error(result, 2, "no database URL: set DATABASE_URL or pass --database-url")


def test_wrong_scheme_is_a_usage_error():
    result = run_dbctl("status", "--database-url", "mysql://kiro:s3cret-pw@localhost/kiro")
    assert_clean_error(result, 2, 'scheme "mysql" is not PostgreSQL')


def test_malformed_port_is_a_usage_error():
    result = run_dbctl("status", "--database-url", "postgresql://kiro:s3cret-pw@localhost:99999x/kiro")
    assert_clean_error(result, 2, "is malformed", "postgresql://kiro:****@localhost:99999x/kiro")


def test_wrong_password_is_masked_and_fails_fast(pg_server, db):
    url = db.url.replace(pg_server.password, "wrong-pw")
    start = time.monotonic()
    result = run_dbctl("migrate", "--wait-timeout", "30", env={"DATABASE_URL": url})
    assert_clean_error(result, 1, "PostgreSQL rejected the credentials", "postgresql://tester:****@127.0.0.1")
    assert "wrong-pw" not in result.output
    assert time.monotonic() - start < 20  # not retried for the whole wait: a password does not fix itself
    assert db.tables() == set()


def test_unknown_role_fails(pg_server, db):
    url = f"postgresql://nobody_here:x-pw@127.0.0.1:{pg_server.port}/{db.name}"
    assert_clean_error(run_dbctl("status", env={"DATABASE_URL": url}), 1)


def test_missing_database_fails_after_the_wait(pg_server):
    url = pg_server.url("no_such_database")
    result = run_dbctl("migrate", "--wait-timeout", "1", env={"DATABASE_URL": url})
    assert_clean_error(result, 1, "does not exist", "gave up after 1s")


def test_server_down_fails_after_the_wait():
    url = f"postgresql://kiro:s3cret-pw@127.0.0.1:{free_port()}/kiro"
    result = run_dbctl("migrate", "--wait-timeout", "1", env={"DATABASE_URL": url})
    assert_clean_error(result, 1, "nothing is listening at postgresql://kiro:****@127.0.0.1", "gave up after 1s")


def test_unknown_host_fails():
    url = "postgresql://kiro:s3cret-pw@no-such-host.invalid:5432/kiro"
    result = run_dbctl("migrate", "--wait-timeout", "0", env={"DATABASE_URL": url})
    assert_clean_error(result, 1, "unknown host in postgresql://kiro:****@no-such-host.invalid:5432/kiro")


def test_bad_migration_file_is_refused_before_connecting(tmp_path):
    (tmp_path / "first_table.sql").write_text("SELECT 1;")
    # The URL points nowhere: the file problem must be reported first, without waiting.
    result = run_dbctl("migrate", "--migrations", str(tmp_path),
                       env={"DATABASE_URL": f"postgresql://x:s3cret-pw@127.0.0.1:{free_port()}/x"})
    assert_clean_error(result, 2, "first_table.sql: expected an integer version prefix")


def test_debug_shows_the_traceback():
    result = run_dbctl("--debug", "migrate")
    assert result.code != 0
    assert "Traceback" in result.err and "ConfigError" in result.err


def test_unknown_option_is_exit_2():
    result = run_dbctl("migrate", "--no-such-option")
    assert result.code == 2 and "No such option" in result.err and "Traceback" not in result.err


def test_verify_fails_before_and_passes_after_migrate(db):
    env = {"DATABASE_URL": db.url}
    before = run_dbctl("verify", env=env)
    assert_clean_error(before, 1, "schema not ready", "8 pending migration(s)", "missing tables: users")
    as_json = run_dbctl("verify", "--json", env=env)
    assert as_json.code == 1
    report = json.loads(as_json.out)
    assert report["ok"] is False and report["pending"] == list(range(1, 9))
    assert run_dbctl("migrate", env=env).code == 0
    after = run_dbctl("verify", env=env)
    assert after.code == 0 and "schema verified: version 8" in after.out
    report = json.loads(run_dbctl("verify", "--json", env=env).out)
    assert report["ok"] is True and report["current_version"] == 8 and report["missing_tables"] == []


def test_verify_requires_the_named_tables(db):
    env = {"DATABASE_URL": db.url}
    assert run_dbctl("migrate", env=env).code == 0
    result = run_dbctl("verify", "--table", "users", "--table", "no_such_table", env=env)
    assert_clean_error(result, 1, "missing tables: no_such_table")
    env_tables = run_dbctl("verify", env={**env, "DBCTL_CRITICAL_TABLES": "users,artists"})
    assert env_tables.code == 0


def test_status_shows_states_and_tables(db, migrations_dir):
    env = {"DATABASE_URL": db.url}
    assert run_dbctl("migrate", "--target", "6", "--migrations", str(migrations_dir), env=env).code == 0
    result = run_dbctl("status", "--migrations", str(migrations_dir), env=env)
    assert result.code == 0, result.output
    assert "postgresql://tester:****@127.0.0.1" in result.out
    lines = result.out.splitlines()
    assert any(line.startswith("6 ") and "applied" in line for line in lines)
    assert any(line.startswith("7 ") and "pending" in line for line in lines)
    assert any(line.split()[1:2] == ["users"] for line in lines)  # the tables section
    data = json.loads(run_dbctl("status", "--json", "--migrations", str(migrations_dir), env=env).out)
    states = {m["version"]: m["state"] for m in data["migrations"]}
    assert states == {**{v: "applied" for v in range(1, 7)}, 7: "pending", 8: "pending"}
    assert data["current_version"] == 6 and data["up_to_date"] is False
    assert "s3cret-pw" not in json.dumps(data)

    (migrations_dir / "002_indexes.sql").write_text("-- changed\n")
    (migrations_dir / "004_audit_compliance.sql").unlink()
    data = json.loads(run_dbctl("status", "--json", "--migrations", str(migrations_dir), env=env).out)
    states = {m["version"]: m["state"] for m in data["migrations"]}
    assert states[2] == "modified" and states[4] == "missing"


def test_new_creates_the_next_file(tmp_path):
    shutil.copytree(MIGRATIONS, tmp_path / "m")
    result = run_dbctl("new", "add", "user", "avatars", "--migrations", str(tmp_path / "m"))
    assert result.code == 0, result.output
    assert (tmp_path / "m" / "009_add_user_avatars.sql").exists()
    assert "dbctl lint" in result.out
    reversible = run_dbctl("new", "-r", "add_genres", "--migrations", str(tmp_path / "m"))
    assert reversible.code == 0
    assert (tmp_path / "m" / "010_add_genres.up.sql").exists() and (tmp_path / "m" / "010_add_genres.down.sql").exists()


def test_wait_returns_when_postgres_is_up(db):
    result = run_dbctl("wait", "--timeout", "5", env={"DATABASE_URL": db.url})
    assert result.code == 0 and "PostgreSQL is ready" in result.out and "s3cret-pw" not in result.out


@pytest.fixture
def redis_port():
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    return free_port()


def _start_redis(port: int, password: str | None = None) -> subprocess.Popen:
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if password:
        args += ["--requirepass", password]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_wait_for_redis_that_starts_late(db, redis_port):
    holder = []
    threading.Timer(1.0, lambda: holder.append(_start_redis(redis_port, "r3dis-pw"))).start()
    try:
        result = run_dbctl("wait", "--timeout", "20", "--redis-url", f"redis://:r3dis-pw@127.0.0.1:{redis_port}/0",
                           env={"DATABASE_URL": db.url})
        assert result.code == 0, result.output
        assert "Redis is ready: redis://:****@127.0.0.1" in result.out
        assert "r3dis-pw" not in result.output
    finally:
        time.sleep(0.1)
        for proc in holder:
            proc.terminate()
            proc.wait()


def test_wait_for_redis_with_wrong_password_says_so(redis_port):
    proc = _start_redis(redis_port, "r3dis-pw")
    try:
        wait_for_port(redis_port)
        result = run_dbctl("wait", "--no-postgres", "--timeout", "5",
                           "--redis-url", f"redis://:wrong-pw@127.0.0.1:{redis_port}")
        assert_clean_error(result, 1, "Redis refused")
        assert "wrong-pw" not in result.output
    finally:
        proc.terminate()
        proc.wait()


def test_wait_for_redis_gives_up(redis_port):
    result = run_dbctl("wait", "--no-postgres", "--timeout", "1", "--redis-url", f"redis://127.0.0.1:{redis_port}")
    assert_clean_error(result, 1, "not reachable after 1s")


