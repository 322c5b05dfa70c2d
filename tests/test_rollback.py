"""`dbctl rollback` against a real PostgreSQL: down files, the history sqlx reads, refusals, the lock."""

from __future__ import annotations

import psycopg
import pytest

from conftest import assert_clean_error, run_dbctl
from dbctl.engine.postgres import lock_key


@pytest.fixture
def reversible(migrations_dir):
    """The Kiro migrations plus two reversible ones, 009 and 010."""
    (migrations_dir / "009_user_avatars.up.sql").write_text(
        "CREATE TABLE user_avatars (user_id UUID PRIMARY KEY REFERENCES users (id), url TEXT NOT NULL);\n")
    (migrations_dir / "009_user_avatars.down.sql").write_text("DROP TABLE user_avatars;\n")
    (migrations_dir / "010_nicknames.up.sql").write_text(
        "SET lock_timeout = '5s';\nALTER TABLE users ADD COLUMN nickname TEXT;\n")
    (migrations_dir / "010_nicknames.down.sql").write_text("ALTER TABLE users DROP COLUMN nickname;\n")
    return migrations_dir


def dbctl(db, migrations, *args, env=None):
    return run_dbctl(*args, "--migrations", str(migrations), env={"DATABASE_URL": db.url, **(env or {})})


def versions(db) -> list[int]:
    return [r[0] for r in db.query("SELECT version FROM _sqlx_migrations ORDER BY version")]


def has_column(db, table, column) -> bool:
    return bool(db.scalar("SELECT count(*) FROM information_schema.columns WHERE table_name = %s "
                          "AND column_name = %s", (table, column)))


def test_one_step_by_default_then_migrate_applies_it_again(db, reversible):
    assert dbctl(db, reversible, "migrate").code == 0
    result = dbctl(db, reversible, "rollback", env={"DBCTL_ACTOR": "alice"})
    assert result.code == 0, result.output
    assert "reverted 010_nicknames.down.sql" in result.out
    assert "database at version 9" in result.out
    assert versions(db) == list(range(1, 10))
    assert not has_column(db, "users", "nickname")
    assert "user_avatars" in db.tables()
    reverts = db.query("SELECT version, description, actor, runner IS NOT NULL FROM _dbctl_migration_reverts")
    assert reverts == [(10, "nicknames", "alice", True)]
    again = dbctl(db, reversible, "migrate")
    assert again.code == 0 and "applied 1 migration(s)" in again.out
    assert versions(db) == list(range(1, 11)) and has_column(db, "users", "nickname")


def test_to_a_version_reverts_newest_first(db, reversible):
    assert dbctl(db, reversible, "migrate").code == 0
    result = dbctl(db, reversible, "rollback", "--to", "8")
    assert result.code == 0, result.output
    lines = [line for line in result.out.splitlines() if line.startswith("reverted ")]
    assert lines[0].startswith("reverted 010_nicknames.down.sql")
    assert lines[1].startswith("reverted 009_user_avatars.down.sql")
    assert versions(db) == list(range(1, 9))
    assert "user_avatars" not in db.tables()
    verify = dbctl(db, reversible, "verify")
    assert verify.code == 1  # 009 and 010 are pending again


def test_dry_run_shows_the_plan_and_changes_nothing(db, reversible):
    assert dbctl(db, reversible, "migrate").code == 0
    result = dbctl(db, reversible, "rollback", "--steps", "2", "--dry-run")
    assert result.code == 0, result.output
    assert "2 migration(s) would be reverted, nothing was changed" in result.out
    assert "would run 010_nicknames.down.sql and delete version 10" in result.out
    assert "would run 009_user_avatars.down.sql" in result.out
    assert versions(db) == list(range(1, 11)) and has_column(db, "users", "nickname")
    assert "_dbctl_migration_reverts" not in db.tables()


def test_missing_down_file_refuses_before_reverting_anything(db, reversible):
    assert dbctl(db, reversible, "migrate").code == 0
    result = dbctl(db, reversible, "rollback", "--steps", "3")
    assert_clean_error(result, 1, "008_audit_logging_and_rate_limiting.sql has no .down.sql", "nothing was reverted")
    assert versions(db) == list(range(1, 11))
    assert has_column(db, "users", "nickname") and "user_avatars" in db.tables()


def test_failing_down_file_leaves_its_migration_applied(db, reversible):
    (reversible / "010_nicknames.down.sql").write_text("ALTER TABLE users DROP COLUMN nickname;\nSELECT 1/0;\n")
    assert dbctl(db, reversible, "migrate").code == 0
    result = dbctl(db, reversible, "rollback")
    assert_clean_error(result, 1, "010_nicknames.down.sql:2", "division by zero", "still in the history")
    assert versions(db) == list(range(1, 11))
    assert has_column(db, "users", "nickname")  # the DROP COLUMN was rolled back with the rest


def test_no_transaction_down_file(db, migrations_dir):
    (migrations_dir / "009_lookup.up.sql").write_text(
        "-- no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS artists_image_idx ON artists (image_url);\n")
    (migrations_dir / "009_lookup.down.sql").write_text(
        "-- no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS artists_image_idx;\n")
    assert dbctl(db, migrations_dir, "migrate").code == 0
    result = dbctl(db, migrations_dir, "rollback")
    assert result.code == 0, result.output
    assert db.scalar("SELECT to_regclass('artists_image_idx')") is None
    assert versions(db) == list(range(1, 9))


def test_usage_errors(db, reversible):
    assert dbctl(db, reversible, "migrate").code == 0
    assert_clean_error(dbctl(db, reversible, "rollback", "--to", "8", "--steps", "1"), 2, "not both")
    assert_clean_error(dbctl(db, reversible, "rollback", "--to", "42"), 2, "--to 42 is not an applied version")
    assert_clean_error(dbctl(db, reversible, "rollback", "--steps", "0"), 2, "'--steps': 0 is not in the range")
    assert versions(db) == list(range(1, 11))


def test_nothing_applied(db, reversible):
    result = dbctl(db, reversible, "rollback")
    assert result.code == 0 and "nothing to roll back" in result.out


def test_waits_for_the_migration_lock_and_gives_up(db, reversible):
    assert dbctl(db, reversible, "migrate").code == 0
    with psycopg.connect(db.url, autocommit=True, application_name="other-migrator") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(db.name),))
        result = dbctl(db, reversible, "rollback", "--lock-wait-timeout", "1")
    assert_clean_error(result, 1, "gave up waiting for the migration lock", "other-migrator")
    assert versions(db) == list(range(1, 11))


def test_down_file_for_a_changed_up_file_warns(db, reversible):
    assert dbctl(db, reversible, "migrate").code == 0
    (reversible / "010_nicknames.up.sql").write_text(
        "SET lock_timeout = '5s';\nALTER TABLE users ADD COLUMN nickname VARCHAR(40);\n")
    result = dbctl(db, reversible, "rollback")
    assert result.code == 0, result.output
    assert "010_nicknames.up.sql changed since it was applied" in result.err


def test_version_zero_is_a_version_like_any_other(db, tmp_path):
    """sqlx's versions are i64: 0 is kept by --to 0 and reverted by a target below it, and reported as 0."""
    folder = tmp_path / "zero"
    folder.mkdir()
    (folder / "0_setup.up.sql").write_text("CREATE TABLE zero_t (id int);\n")
    (folder / "0_setup.down.sql").write_text("DROP TABLE zero_t;\n")
    (folder / "1_more.up.sql").write_text("CREATE TABLE one_t (id int);\n")
    (folder / "1_more.down.sql").write_text("DROP TABLE one_t;\n")
    applied = dbctl(db, folder, "migrate")
    assert applied.code == 0 and "database at version 1" in applied.out, applied.output
    kept = dbctl(db, folder, "rollback", "--to", "0")
    assert kept.code == 0 and "database at version 0" in kept.out, kept.output
    assert versions(db) == [0] and db.tables() >= {"zero_t"} and "one_t" not in db.tables()
    assert_clean_error(dbctl(db, folder, "rollback", "--to", "5"), 2, "--to 5 is not an applied version")
    gone = dbctl(db, folder, "rollback", "--to", "-1")
    assert gone.code == 0 and "database at version none" in gone.out, gone.output
    assert versions(db) == [] and "zero_t" not in db.tables()
