"""Production mode (DBCTL_ENV=production) on a real PostgreSQL: timeouts, the plan, who ran it, no seeds."""

from __future__ import annotations

import pytest

from conftest import MIGRATIONS, assert_clean_error, run_dbctl

# A migration that records the settings it ran under, so the test reads them from the database.
SHOW_SETTINGS = ("CREATE TABLE seen_settings AS SELECT current_setting('lock_timeout') AS lock_timeout, "
                 "current_setting('statement_timeout') AS statement_timeout;\n")


@pytest.fixture
def with_probe(migrations_dir):
    (migrations_dir / "009_seen_settings.sql").write_text(SHOW_SETTINGS)
    return migrations_dir


def migrate(db, migrations, *args, env=None):
    return run_dbctl("migrate", "--migrations", str(migrations), *args, env={"DATABASE_URL": db.url, **(env or {})})


def test_production_migrate_sets_timeouts_prints_the_plan_and_records_the_actor(db, with_probe):
    result = migrate(db, with_probe, env={"DBCTL_ENV": "production", "DBCTL_ACTOR": "deploy-pipeline#42",
                                          "POD_NAME": "database-migration-x7k2p"})
    assert result.code == 0, result.output
    assert "production mode: lock_timeout 5s, statement_timeout 15min, run by deploy-pipeline#42 on " \
           "database-migration-x7k2p" in result.out
    lines = result.out.splitlines()
    plan = lines.index("plan: 9 migration(s) to apply (database at version none)")
    first_applied = next(i for i, line in enumerate(lines) if line.startswith("applied 001_"))
    assert plan < first_applied  # the plan is printed before anything runs
    assert "  will apply 009_seen_settings.sql" in lines
    assert db.query("SELECT lock_timeout, statement_timeout FROM seen_settings") == [("5s", "15min")]
    runs = db.query("SELECT DISTINCT actor, runner FROM _dbctl_migration_attempts")
    assert runs == [("deploy-pipeline#42", "database-migration-x7k2p")]


def test_production_timeouts_can_be_set_explicitly(db, with_probe):
    result = migrate(db, with_probe, "--statement-timeout", "1h",
                     env={"DBCTL_ENV": "production", "DBCTL_LOCK_TIMEOUT": "2s"})
    assert result.code == 0, result.output
    assert db.query("SELECT lock_timeout, statement_timeout FROM seen_settings") == [("2s", "1h")]


def test_development_keeps_postgres_defaults_and_no_plan(db, with_probe):
    result = migrate(db, with_probe, env={"DBCTL_ENV": "development", "DBCTL_ACTOR": "alice"})
    assert result.code == 0, result.output
    assert "production mode" not in result.out and "plan:" not in result.out
    assert db.query("SELECT lock_timeout, statement_timeout FROM seen_settings") == [("0", "0")]
    assert db.query("SELECT DISTINCT actor FROM _dbctl_migration_attempts") == [("alice",)]


def test_an_attempts_table_from_before_the_actor_column_is_upgraded(db):
    # the table exactly as dbctl created it before `actor` existed, with a row in it
    db.query("""CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
        installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL,
        execution_time BIGINT NOT NULL)""")
    db.query("""CREATE TABLE _dbctl_migration_attempts (id BIGSERIAL PRIMARY KEY, version BIGINT NOT NULL,
        description TEXT NOT NULL, checksum BYTEA NOT NULL, attempt INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('success', 'failed', 'retried')), started_at TIMESTAMPTZ NOT NULL,
        duration_ns BIGINT NOT NULL, runner TEXT NOT NULL, dbctl_version TEXT NOT NULL, sqlstate TEXT,
        error_message TEXT, error_position INTEGER, error_line INTEGER)""")
    db.query("INSERT INTO _dbctl_migration_attempts (version, description, checksum, attempt, outcome, started_at, "
             "duration_ns, runner, dbctl_version) VALUES (1, 'initial schema', '\\x00', 1, 'failed', now(), 1, "
             "'old-host', '0.0.1')")
    result = migrate(db, MIGRATIONS, env={"DBCTL_ACTOR": "bob"})
    assert result.code == 0, result.output
    rows = db.query("SELECT runner, actor FROM _dbctl_migration_attempts ORDER BY id")
    assert rows[0] == ("old-host", None)
    assert {r[1] for r in rows[1:]} == {"bob"} and len(rows) == 9


def test_seed_is_refused_in_production_and_writes_nothing(db):
    assert migrate(db, MIGRATIONS).code == 0
    result = run_dbctl("seed", env={"DATABASE_URL": db.url, "DBCTL_ENV": "production"})
    assert_clean_error(result, 1, "refusing to seed in the production environment")
    assert db.scalar("SELECT count(*) FROM users") == 0
    assert "_dbctl_seed_runs" not in db.tables()
    talked_down = run_dbctl("seed", "--env", "development", env={"DATABASE_URL": db.url, "DBCTL_ENV": "production"})
    assert_clean_error(talked_down, 1, "cannot override a protected environment")


def test_reset_is_refused_in_production_and_drops_nothing(db):
    assert migrate(db, MIGRATIONS).code == 0
    result = run_dbctl("reset", "--yes", env={"DATABASE_URL": db.url, "DBCTL_ENV": "production"})
    assert_clean_error(result, 1, "refusing to reset in the production environment")
    assert {"users", "audit_log"} <= db.tables()
    assert len(db.history()) == 8


def test_an_unknown_environment_is_a_usage_error(db):
    result = migrate(db, MIGRATIONS, env={"DBCTL_ENV": "prod"})
    assert_clean_error(result, 2, 'DBCTL_ENV "prod" is not one of')
    assert "_sqlx_migrations" not in db.tables()
