"""With `tilt up -- --no-cluster` running (one session for this module, on a copy of the project):
each trigger by `tilt trigger`, each button clicked through Tilt's API server, a migration file
added while Tilt runs. Assertions read Tilt's own state and logs, and the database.
"""

from __future__ import annotations

import json
import shutil
import urllib.request

import psycopg
import pytest

from conftest import require
from tilt_env import SERVICES, TiltEnv

TRIGGERS = ["db-migrate", "db-seed", "db-reset", "db-status", "dev-setup", "health-check"]


@pytest.fixture(scope="module")
def tilt(tilt_bin):
    require(tilt_bin.exists(), "Tilt is not built (scripts/build-tilt)")
    require(shutil.which("redis-server") is not None, "redis-server is not installed (apt-get install redis-server)")
    env = TiltEnv(tilt_bin)
    try:
        env.up("--no-cluster")
        yield env
    finally:
        env.down()
        env.remove()


def query(tilt: TiltEnv, sql: str, database: str | None = None) -> list[tuple]:
    with psycopg.connect(tilt.server.url(database), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def history(tilt: TiltEnv) -> list[int]:
    return [v for (v,) in query(tilt, "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")]


def users(tilt: TiltEnv) -> int:
    return query(tilt, "SELECT count(*) FROM users")[0][0]


def wipe_database(tilt: TiltEnv) -> None:
    """What a developer's accident looks like: the database gone and re-created empty."""
    query(tilt, "DROP DATABASE kiro WITH (FORCE)", "postgres")
    query(tilt, "CREATE DATABASE kiro", "postgres")


def backend_health(tilt: TiltEnv) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{tilt.backend_port}/health", timeout=10) as response:
        return json.load(response)


def test_tilt_up_starts_the_services_and_runs_no_trigger(tilt):
    for name in SERVICES:
        builds = tilt.builds(name)
        assert builds and not builds[0].get("error"), (name, builds)
    for name in ["database-seed", *TRIGGERS]:
        assert tilt.builds(name) == [], name  # manual: nothing ran at startup
    assert history(tilt) == list(range(1, 9))
    assert backend_health(tilt)["schema"]["ok"] is True


def test_db_status(tilt):
    build, log = tilt.trigger("db-status")
    assert not build.get("error"), log
    assert "initial schema" in log and "audit logging and rate limiting" in log
    assert "pending" not in log
    assert "kiro:kiro@" not in log  # password masked


def test_db_migrate_applies_what_is_pending(tilt):
    wipe_database(tilt)
    build, log = tilt.trigger("db-migrate")
    assert not build.get("error"), log
    assert "applied 8 migration(s)" in log
    assert history(tilt)[:8] == list(range(1, 9))
    again, log = tilt.trigger("db-migrate")
    assert not again.get("error") and "nothing to apply" in log


def test_db_seed_loads_the_development_data(tilt):
    build, log = tilt.trigger("db-seed")
    assert not build.get("error"), log
    assert "seeded in" in log
    assert users(tilt) > 0


def test_db_reset_needs_a_second_trigger(tilt):
    tilt.trigger("db-seed")
    seeded = users(tilt)
    assert seeded > 0
    first, log = tilt.trigger("db-reset")
    assert "failed: exit status 1" in first.get("error", ""), first  # the resource turns red, nothing dropped
    assert "trigger it again within 60s" in log
    assert users(tilt) == seeded
    second, log = tilt.trigger("db-reset")
    assert not second.get("error"), log
    assert 'dropped and re-created database "kiro"' in log and "tilt trigger db-seed" in log
    assert users(tilt) == 0 and history(tilt)[:8] == list(range(1, 9))


def test_dev_setup_and_health_check(tilt):
    for name in ("dev-setup", "health-check"):
        build, log = tilt.trigger(name)
        assert not build.get("error"), log
        assert "answered 200" in log and "checks passed" in log and "FAIL" not in log, log
        if name == "dev-setup":
            assert "ok   tool tilt" in log and "ok   tool PostgreSQL server" in log, log


# ---------------------------------------------------------------- buttons (Tilt's UIButton + Cmd)

def test_status_and_health_buttons(tilt):
    code, log = tilt.click("btn-db-status")
    assert code == 0 and "initial schema" in log, log
    code, log = tilt.click("btn-health-check")
    assert code == 0 and "answered 200" in log, log


def test_migrate_button(tilt):
    wipe_database(tilt)
    code, log = tilt.click("btn-db-migrate")
    assert code == 0 and "applied 8 migration(s)" in log, log
    assert history(tilt)[:8] == list(range(1, 9))


def test_seed_button(tilt):
    code, log = tilt.click("btn-db-seed")
    assert code == 0 and "seeded in" in log, log
    assert users(tilt) > 0


@pytest.mark.parametrize("seed_after", [True, False])  # in this order: the second run drops the seeded data
def test_reset_button_with_its_seed_checkbox(tilt, seed_after):
    code, log = tilt.click("btn-db-reset", {"DBCTL_RESET_SEED": seed_after})
    assert code == 0, log
    assert 'dropped and re-created database "kiro"' in log
    assert ("seeded in" in log) == seed_after
    assert (users(tilt) > 0) == seed_after
    assert history(tilt)[:8] == list(range(1, 9))


# ---------------------------------------------------------------- files changed while Tilt runs

def test_a_new_migration_file_reruns_the_migration(tilt):
    before = tilt.last_build("database-migration")
    log_before = tilt.logs("database-migration")
    (tilt.project / "migrations" / "009_tilt_watched.sql").write_text("CREATE TABLE tilt_watched (id int);\n")
    build = tilt.wait_for_build("database-migration", before)
    log = tilt.logs("database-migration")[len(log_before):]
    assert not build.get("error"), log
    assert "009_tilt_watched.sql" in log and "applied 1 migration(s)" in log
    assert history(tilt) == list(range(1, 10))
    assert query(tilt, "SELECT to_regclass('public.tilt_watched') IS NOT NULL")[0][0] is True


def test_a_broken_migration_turns_the_resource_red_until_removed(tilt):
    broken = tilt.project / "migrations" / "010_broken.sql"
    before = tilt.last_build("database-migration")
    broken.write_text("ALTER TABLE no_such_table ADD COLUMN x int;\n")
    build = tilt.wait_for_build("database-migration", before)
    assert "exit status 1" in build.get("error", ""), build
    log = tilt.logs("database-migration")
    assert "010_broken.sql" in log and "no_such_table" in log and "Traceback" not in log
    assert 10 not in history(tilt)

    broken.unlink()
    build = tilt.wait_for_build("database-migration", build["spanID"])
    assert not build.get("error"), build
