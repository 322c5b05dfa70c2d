"""`dbctl lint`: each rule on real SQL parsed by pglast, ignores, which files, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import MIGRATIONS, assert_clean_error, run_dbctl
from dbctl.checks.lint import RULES, lint_migrations
from dbctl.engine.source import load_migrations, read_migration


def lint_sql(tmp_path: Path, sql: str, name: str = "009_change.sql", busy=()) -> list[tuple[int, str]]:
    path = tmp_path / name
    path.write_text(sql)
    report = lint_migrations([read_migration(path)], busy)
    return [(f.line, f.rule) for f in report.findings]


LOCKED = "SET lock_timeout = '5s';\n"


@pytest.mark.parametrize("sql, expected", [
    ("CREATE INDEX users_name_idx ON users (display_name);", "create-index-not-concurrently"),
    ("ALTER TABLE users ADD COLUMN age INTEGER NOT NULL;", "add-not-null-without-default"),
    ("ALTER TABLE users ADD COLUMN token UUID DEFAULT gen_random_uuid();", "add-column-volatile-default"),
    ("ALTER TABLE users ADD COLUMN seq BIGSERIAL;", "add-column-volatile-default"),
    ("ALTER TABLE users ALTER COLUMN display_name TYPE VARCHAR(50);", "alter-column-type"),
    ("ALTER TABLE users ALTER COLUMN display_name SET NOT NULL;", "set-not-null"),
    ("ALTER TABLE users ADD CONSTRAINT name_len CHECK (length(display_name) < 80);", "add-constraint-without-not-valid"),
    ("ALTER TABLE dnp_lists ADD FOREIGN KEY (user_id) REFERENCES users (id);", "add-constraint-without-not-valid"),
    ("ALTER TABLE users ADD CONSTRAINT one_name UNIQUE (display_name);", "add-unique-constraint"),
    ("ALTER TABLE users DROP COLUMN totp_secret;", "drop-column"),
    ("DROP TABLE login_attempts;", "drop-table"),
    ("ALTER TABLE users RENAME COLUMN display_name TO name;", "rename-column"),
    ("ALTER TABLE users RENAME TO accounts;", "rename-table"),
])
def test_each_rule_fires_on_an_existing_table(tmp_path, sql, expected):
    assert lint_sql(tmp_path, LOCKED + "-- the change\n" + sql) == [(3, expected)]


def test_the_safe_forms_are_clean(tmp_path):
    sql = LOCKED + """
ALTER TABLE users ADD COLUMN age INTEGER;
ALTER TABLE users ADD COLUMN plan TEXT NOT NULL DEFAULT 'free';
ALTER TABLE users ADD COLUMN joined TIMESTAMPTZ DEFAULT now();
ALTER TABLE users ADD CONSTRAINT name_len CHECK (length(display_name) < 80) NOT VALID;
ALTER TABLE users VALIDATE CONSTRAINT name_len;
ALTER TABLE users ADD CONSTRAINT one_name UNIQUE USING INDEX users_name_key;
ALTER TABLE users ALTER COLUMN plan SET DEFAULT 'trial';
"""
    assert lint_sql(tmp_path, sql) == []
    concurrent = "-- no-transaction\n-- on its own: sqlx sends the file as one query\n" \
                 "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON users (age);\n"
    assert lint_sql(tmp_path, concurrent) == []


def test_concurrently_inside_a_transaction_would_fail(tmp_path):
    assert lint_sql(tmp_path, "CREATE INDEX CONCURRENTLY i ON users (age);\n") == [(1, "needs-no-transaction")]


def test_missing_lock_timeout_is_reported_once_at_the_first_lock(tmp_path):
    sql = "CREATE TABLE t (a int);\nALTER TABLE users ADD COLUMN age INTEGER;\nALTER TABLE artists ADD COLUMN x TEXT;\n"
    assert lint_sql(tmp_path, sql) == [(2, "missing-lock-timeout")]
    with_set_config = "SELECT set_config('lock_timeout', '5s', false);\nALTER TABLE users ADD COLUMN age INTEGER;\n"
    assert lint_sql(tmp_path, with_set_config) == []
    set_after = "ALTER TABLE users ADD COLUMN age INTEGER;\nSET lock_timeout = '5s';\n"
    assert lint_sql(tmp_path, set_after) == [(1, "missing-lock-timeout")]


def test_tables_created_in_the_same_file_are_new_and_empty(tmp_path):
    sql = """CREATE TABLE avatars (user_id UUID, url TEXT);
CREATE INDEX avatars_url_idx ON avatars (url);
ALTER TABLE avatars ADD COLUMN size INTEGER NOT NULL;
ALTER TABLE avatars ALTER COLUMN url SET NOT NULL;
ALTER TABLE avatars ADD CONSTRAINT avatars_user_fk FOREIGN KEY (user_id) REFERENCES users (id);
ALTER TABLE avatars RENAME COLUMN url TO href;
DROP TABLE avatars;
"""
    assert lint_sql(tmp_path, sql) == []


def test_busy_tables(tmp_path):
    sql = LOCKED + "ALTER TABLE users ADD COLUMN age INTEGER;\n"
    assert lint_sql(tmp_path, sql, busy={"users"}) == [(2, "lock-on-busy-table")]
    assert lint_sql(tmp_path, sql, busy={"artists"}) == []


def test_line_numbers_skip_comments_and_count_multibyte_text(tmp_path):
    sql = "-- Änderung für Benutzer: ünïcödé\n/* a\n block */\n" + LOCKED + "\n\nDROP TABLE login_attempts;\n"
    assert lint_sql(tmp_path, sql) == [(7, "drop-table")]


def test_ignore_comment_silences_named_rules_only(tmp_path):
    sql = ("-- dbctl-lint: ignore drop-column, rename-column -- the app stopped reading them in v2.3\n" + LOCKED
           + "ALTER TABLE users DROP COLUMN totp_secret;\nALTER TABLE users RENAME COLUMN display_name TO name;\n"
           + "DROP TABLE login_attempts;\n")
    path = tmp_path / "009_cleanup.sql"
    path.write_text(sql)
    report = lint_migrations([read_migration(path)])
    assert [f.rule for f in report.findings] == ["drop-table"]
    assert sorted(f.rule for f in report.ignored) == ["drop-column", "rename-column"]
    path.write_text("-- dbctl-lint: ignore-all\n" + sql)
    assert lint_migrations([read_migration(path)]).ok


def test_the_kiro_migrations_as_one_run_on_an_empty_database_are_clean():
    report = lint_migrations(load_migrations(MIGRATIONS).ups)
    assert report.ok, report.format_text()
    assert len(report.files) == 8


def test_008_on_its_own_is_flagged_for_what_it_does_to_audit_log():
    """Applied to a populated database, 008 locks audit_log: the reason CI lints after a baseline."""
    m = read_migration(MIGRATIONS / "008_audit_logging_and_rate_limiting.sql")
    report = lint_migrations([m])
    assert sorted({f.rule for f in report.findings}) == [
        "add-constraint-without-not-valid", "create-index-not-concurrently", "missing-lock-timeout"]
    assert all("audit_log" in f.message for f in report.findings)


def test_cli_exit_codes_text_and_json(tmp_path):
    bad = tmp_path / "009_drop.sql"
    bad.write_text(LOCKED + "ALTER TABLE users DROP COLUMN totp_secret;\n")
    result = run_dbctl("lint", str(bad))
    assert result.code == 1, result.output
    assert f"{bad}:2: drop-column: users.totp_secret dropped" in result.out
    assert "instead: stop using the column" in result.out
    data = json.loads(run_dbctl("lint", "--json", str(bad)).out)
    assert data["ok"] is False
    assert data["findings"][0] == {"file": str(bad), "line": 2, "rule": "drop-column",
                                   "message": data["findings"][0]["message"], "safely": RULES["drop-column"].safely}
    good = tmp_path / "010_fine.sql"
    good.write_text("CREATE TABLE t (a int);\nCREATE INDEX ON t (a);\n")
    ok = run_dbctl("lint", str(good))
    assert ok.code == 0 and "no dangerous changes" in ok.out


def test_unknown_rule_in_ignore_comment_and_parse_errors(tmp_path):
    typo = tmp_path / "009_x.sql"
    typo.write_text("-- dbctl-lint: ignore drop-colum\nALTER TABLE users DROP COLUMN x;\n")
    assert_clean_error(run_dbctl("lint", str(typo)), 2, 'unknown lint rule "drop-colum"')
    broken = tmp_path / "010_y.sql"
    broken.write_text("SELECT 1;\nCREATE TABLE t (;\n")
    result = run_dbctl("lint", str(broken))
    assert result.code == 1 and "parse-error" in result.out
    assert_clean_error(run_dbctl("lint", "--since", "x"), 2)


def test_by_default_only_files_not_applied_yet(db, migrations_dir):
    assert run_dbctl("migrate", "--migrations", str(migrations_dir), env={"DATABASE_URL": db.url}).code == 0
    (migrations_dir / "009_avatars.sql").write_text("CREATE INDEX users_created_idx2 ON users (created_at);\n")
    result = run_dbctl("lint", "--migrations", str(migrations_dir), env={"DATABASE_URL": db.url})
    assert result.code == 1, result.output
    assert "009_avatars.sql:1: missing-lock-timeout" in result.out
    assert "009_avatars.sql:1: create-index-not-concurrently" in result.out
    assert "1 file(s) checked (files not applied to the database yet)" in result.out
    assert "008_" not in result.out


def test_busy_tables_from_the_database_size_estimate(db, migrations_dir):
    assert run_dbctl("migrate", "--migrations", str(migrations_dir), env={"DATABASE_URL": db.url}).code == 0
    db.query("INSERT INTO health_checks (component, status) SELECT 'c' || g, 'ok' FROM generate_series(1, 500) g")
    db.query("ANALYZE health_checks")
    (migrations_dir / "009_hc.sql").write_text(LOCKED + "ALTER TABLE health_checks ADD COLUMN note TEXT;\n")
    env = {"DATABASE_URL": db.url}
    busy = run_dbctl("lint", "--migrations", str(migrations_dir), "--busy-rows", "100", env=env)
    assert busy.code == 1 and "lock-on-busy-table" in busy.out
    quiet = run_dbctl("lint", "--migrations", str(migrations_dir), "--busy-rows", "1000", env=env)
    assert quiet.code == 0, quiet.output


def test_without_a_database_all_files_as_one_run_and_a_note(migrations_dir):
    result = run_dbctl("lint", "--migrations", str(migrations_dir))
    assert result.code == 0, result.output
    assert "8 file(s) checked" in result.out
    assert "no DATABASE_URL" in result.err
    since = run_dbctl("lint", "--migrations", str(migrations_dir), "--since", "7")
    assert since.code == 1 and "008_audit_logging_and_rate_limiting.sql:3" in since.out


def test_new_reminds_of_lint(migrations_dir):
    result = run_dbctl("new", "add", "avatars", "--migrations", str(migrations_dir))
    assert result.code == 0
    assert "dbctl lint && dbctl migrate" in result.out


def test_ignore_comment_reasons(tmp_path):
    for comment in ("-- dbctl-lint: ignore drop-table (archived in ticket 42)",
                    "-- dbctl-lint: ignore drop-table -- archived in ticket 42",
                    "-- dbctl-lint: ignore drop-table: archived"):
        assert lint_sql(tmp_path, f"{comment}\n{LOCKED}DROP TABLE login_attempts;\n") == [], comment
