"""`dbctl drift` against a real PostgreSQL: hand-made changes are found, catalog noise is not."""

from __future__ import annotations

import json

import pytest

from conftest import MIGRATIONS, assert_clean_error, run_dbctl
from dbctl.checks.drift import check_drift
from dbctl.engine.migrator import MigrateOptions, migrate
from dbctl.engine.source import load_migrations


def quiet(_message):
    pass


def migrated(db, directory=MIGRATIONS, target=None):
    migrations = load_migrations(directory)
    migrate(db.url, migrations, MigrateOptions(target=target), say=quiet, warn=quiet)
    return migrations


def scratch_databases(db) -> list[str]:
    return [r[0] for r in db.query("SELECT datname FROM pg_database WHERE datname LIKE 'dbctl\\_drift\\_%'")]


def found(report) -> set[tuple[str, str, str]]:
    return {(d.kind, d.change, d.name) for d in report.differences}


def test_no_drift_right_after_migrate(db):
    migrated(db)
    result = run_dbctl("drift", "--database-url", db.url)
    assert result.code == 0, result.output
    assert "no drift" in result.out
    assert "versions 1..8" in result.out
    assert "s3cret-pw" not in result.output
    assert scratch_databases(db) == []  # the scratch database is gone


def test_added_column_index_changed_default_and_dropped_constraint_are_reported(db):
    migrations = migrated(db)
    db.query("ALTER TABLE users ADD COLUMN nickname TEXT")
    db.query("CREATE INDEX ON artists (image_url)")
    db.query("ALTER TABLE dnp_lists ALTER COLUMN name SET DEFAULT 'Blocked'")
    db.query("ALTER TABLE dnp_entries DROP CONSTRAINT dnp_entries_note_check")
    report = check_drift(db.url, migrations)
    assert found(report) == {
        ("column", "extra", "public.users.nickname"),
        ("index", "extra", "public.artists: CREATE INDEX ON public.artists USING btree (image_url)"),
        ("column", "changed", "public.dnp_lists.name"),
        ("constraint", "missing", "public.dnp_entries: CHECK (char_length(note) <= 500)"),
    }
    changed = next(d for d in report.differences if d.change == "changed")
    assert changed.attribute == "default"
    assert changed.expected == "'My DNP list'::text" and changed.actual == "'Blocked'::text"

    result = run_dbctl("drift", "--database-url", db.url)
    assert_clean_error(result, 1, "schema drift: 4 difference(s)")
    assert "extra    column public.users.nickname" in result.out
    as_json = run_dbctl("drift", "--json", "--database-url", db.url)
    assert as_json.code == 1
    data = json.loads(as_json.out)
    assert data["drift"] is True and len(data["differences"]) == 4
    assert scratch_databases(db) == []


def test_type_nullability_views_functions_enums_triggers_and_extensions(db):
    migrations = migrated(db)
    db.query("ALTER TABLE health_checks ALTER COLUMN component TYPE VARCHAR(50)")
    db.query("ALTER TABLE users ALTER COLUMN display_name SET NOT NULL")
    db.query("CREATE VIEW active_users AS SELECT id FROM users WHERE email_verified")
    db.query("CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS "
             "$$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END; $$")
    db.query("ALTER TYPE job_status ADD VALUE 'cancelled'")
    db.query("DROP TRIGGER artists_updated_at ON artists")
    db.query("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    report = check_drift(db.url, migrations)
    names = {(d.kind, d.change, d.name, d.attribute) for d in report.differences}
    assert ("column", "changed", "public.health_checks.component", "type") in names
    assert ("column", "changed", "public.users.display_name", "nullable") in names
    assert ("view", "extra", "public.active_users", None) in names
    assert ("function", "changed", "public.set_updated_at()", "definition") in names
    assert ("enum", "changed", "public.job_status", "labels") in names
    assert ("trigger", "missing", "public.artists.artists_updated_at", None) in names
    assert ("extension", "extra", "pg_trgm", None) in names
    # pg_trgm's own functions and operators belong to the extension: one line, not hundreds
    assert not [d for d in report.differences if d.kind == "function" and "trgm" in d.name]
    assert len(report.differences) == 7


def test_generated_names_and_column_order_are_not_drift(db):
    migrations = migrated(db)
    # the same index and constraint under other generated-looking names
    db.query("ALTER INDEX users_created_at_idx RENAME TO users_created_at_idx1")
    db.query("ALTER TABLE users RENAME CONSTRAINT users_email_key TO users_email_key1")
    db.query("ALTER TABLE dnp_entries RENAME CONSTRAINT dnp_entries_note_check TO dnp_entries_note_check2")
    # the same column, now last in the table instead of in the middle
    db.query("ALTER TABLE health_checks DROP COLUMN details")
    db.query("ALTER TABLE health_checks ADD COLUMN details JSONB NOT NULL DEFAULT '{}'::jsonb")
    report = check_drift(db.url, migrations)
    assert report.differences == [], [d.describe() for d in report.differences]


def test_an_explicit_name_changed_by_hand_is_reported(db, migrations_dir):
    (migrations_dir / "009_lookup.sql").write_text("CREATE INDEX artist_lookup ON artists (canonical_name);\n")
    migrations = migrated(db, migrations_dir)
    db.query("ALTER INDEX artist_lookup RENAME TO artist_lookup_by_name")
    report = check_drift(db.url, migrations)
    assert [(d.kind, d.change, d.expected, d.actual) for d in report.differences] == [
        ("index", "renamed", "artist_lookup", "artist_lookup_by_name")]


def test_pending_migrations_are_left_out_and_said(db):
    migrations = migrated(db, target=7)
    report = check_drift(db.url, migrations)
    assert report.differences == []
    assert report.versions == list(range(1, 8))
    assert any("008_audit_logging_and_rate_limiting.sql" in note and "dbctl migrate" in note
               for note in report.notes)


def test_missing_file_of_an_applied_migration_is_refused(db, migrations_dir):
    migrated(db, migrations_dir)
    (migrations_dir / "008_audit_logging_and_rate_limiting.sql").unlink()
    result = run_dbctl("drift", "--database-url", db.url, "--migrations", str(migrations_dir))
    assert_clean_error(result, 1, "version(s) 8 are applied but their files are missing")
    assert scratch_databases(db) == []


def test_scratch_database_is_dropped_when_replay_fails(db, migrations_dir):
    migrated(db, migrations_dir)
    # the file changed after it was applied and no longer runs: the replay fails, the scratch goes anyway
    (migrations_dir / "006_health_check_table.sql").write_text("CREATE TABLE broken (;\n")
    result = run_dbctl("drift", "--database-url", db.url, "--migrations", str(migrations_dir))
    assert_clean_error(result, 1, "replaying the migrations in a scratch database failed", "006_health_check_table")
    assert scratch_databases(db) == []


@pytest.fixture
def plain_role(db):
    name = f"plain_{db.name}"
    db.query(f"CREATE ROLE {name} LOGIN PASSWORD 's3cret-pw' NOCREATEDB")
    db.query(f"GRANT ALL ON DATABASE {db.name} TO {name}")
    db.query(f"ALTER DATABASE {db.name} OWNER TO {name}")
    yield name
    db.query(f"ALTER DATABASE {db.name} OWNER TO CURRENT_USER")
    db.query(f"DROP OWNED BY {name} CASCADE")
    db.query(f"DROP ROLE {name}")


def test_without_createdb_it_says_to_use_scratch_url(db, plain_role):
    server = db.server
    url = f"postgresql://{plain_role}:s3cret-pw@127.0.0.1:{server.port}/{db.name}"
    assert run_dbctl("migrate", "--database-url", url).code == 0
    result = run_dbctl("drift", "--database-url", url)
    assert_clean_error(result, 1, "cannot create a scratch database", "--scratch-url")
    with_scratch = run_dbctl("drift", "--database-url", url, "--scratch-url", server.url("postgres"))
    assert with_scratch.code == 0, with_scratch.output
    assert "no drift" in with_scratch.out


def test_no_database_url_is_a_usage_error():
    assert_clean_error(run_dbctl("drift"), 2, "no database URL")


def test_dev_setup_summary_line_and_status_hint(db):
    from dbctl.checks.drift import summary

    migrations = migrated(db)
    assert summary(db.url, migrations) == (True, "none: the schema is exactly what the migrations make")
    db.query("ALTER TABLE users ADD COLUMN nickname TEXT")
    same, text = summary(db.url, migrations)
    assert same is False and text.startswith("1 difference(s), first: extra column public.users.nickname")
    status = run_dbctl("status", "--database-url", db.url)
    assert status.code == 0 and "dbctl drift compares this schema" in status.out
