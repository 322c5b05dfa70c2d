"""`dbctl test`: the CI check of a migrations directory, run as a real subprocess on scratch databases.

The first test is this project's own CI run of `dbctl test` on migrations/ (make test runs it).
"""

from __future__ import annotations

import json

from conftest import MIGRATIONS, assert_clean_error, run_dbctl

# Versions released before the linter existed; CI lints what comes after (README: "Testing migrations in CI").
LINT_BASELINE = "8"


def scratch_databases(pg_server) -> list[str]:
    import psycopg

    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dbctl\\_test\\_%'")]


def dbctl_test(pg_server, migrations, *args):
    return run_dbctl("test", "--migrations", str(migrations), "--lint-since", LINT_BASELINE, *args,
                     env={"DBCTL_SCRATCH_URL": pg_server.url("postgres")})


def test_the_repository_migrations_pass(pg_server):
    result = dbctl_test(pg_server, MIGRATIONS)
    assert result.code == 0, result.output
    assert "ok    apply 008_audit_logging_and_rate_limiting.sql" in result.out
    assert "ok    drift: the round-tripped schema equals a straight run of the migrations" in result.out
    assert result.out.rstrip().splitlines()[-1].startswith("passed:")
    assert scratch_databases(pg_server) == []


def test_reversible_migrations_go_down_and_up_again(pg_server, migrations_dir):
    (migrations_dir / "009_avatars.up.sql").write_text(
        "SET lock_timeout = '5s';\nCREATE TABLE user_avatars (user_id UUID PRIMARY KEY REFERENCES users (id));\n"
        "ALTER TABLE users ADD COLUMN avatar_count INTEGER NOT NULL DEFAULT 0;\n")
    (migrations_dir / "009_avatars.down.sql").write_text(
        "SET lock_timeout = '5s';\nDROP TABLE user_avatars;\nALTER TABLE users DROP COLUMN avatar_count;\n")
    result = dbctl_test(pg_server, migrations_dir)
    assert result.code == 0, result.output
    for step in ("roll back 009_avatars.down.sql", "009_avatars.down.sql restores the schema before 009_avatars.up.sql",
                 "009_avatars.up.sql again gives the same schema as the first time"):
        assert f"ok    {step}" in result.out


def test_a_down_file_that_forgets_something_fails(pg_server, migrations_dir):
    (migrations_dir / "009_nick.up.sql").write_text(
        "SET lock_timeout = '5s';\nALTER TABLE users ADD COLUMN nick TEXT;\nCREATE TABLE nick_history (nick TEXT);\n")
    (migrations_dir / "009_nick.down.sql").write_text("DROP TABLE nick_history;\n")
    result = dbctl_test(pg_server, migrations_dir)
    assert_clean_error(result, 1, "migration tests failed", "009_nick.down.sql restores the schema")
    assert "FAIL  009_nick.down.sql restores the schema before 009_nick.up.sql" in result.out
    assert "extra    column public.users.nick" in result.out
    assert scratch_databases(pg_server) == []


def test_a_dangerous_new_migration_fails_the_lint(pg_server, migrations_dir):
    (migrations_dir / "009_index.sql").write_text("CREATE INDEX users_display_name_idx ON users (display_name);\n")
    result = dbctl_test(pg_server, migrations_dir, "--json")
    assert result.code == 1, result.output
    report = json.loads(result.out)
    lint = report["steps"][0]
    assert lint["ok"] is False and "create-index-not-concurrently" in lint["detail"]
    assert all(step["ok"] for step in report["steps"][1:])  # everything else passed


def test_a_broken_migration_fails_and_stops(pg_server, migrations_dir):
    (migrations_dir / "009_typo.sql").write_text("SET lock_timeout = '5s';\nALTER TABLE usres ADD COLUMN x TEXT;\n")
    result = dbctl_test(pg_server, migrations_dir)
    assert_clean_error(result, 1, "apply 009_typo.sql")
    assert 'relation "usres" does not exist' in result.out
    assert "drift:" not in result.out  # no final schema to compare
    assert scratch_databases(pg_server) == []


def test_needs_a_server(migrations_dir):
    assert_clean_error(run_dbctl("test", "--migrations", str(migrations_dir)), 2, "--scratch-url")
