"""A message blames the real cause (README, "Reliability").

A history table of another shape is named (its columns), never a migration file, and no attempt is
recorded against one; a SIGTERM during `drift` speaks of the scratch database; a COPY refusal leaves its
attempt row; a file name holding control characters cannot forge a line of `status` or `migrate`; names
are quoted the SQL way, never with Python's repr (an AST scan of the package holds that).
"""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import MIGRATIONS, REPO, assert_clean_error, dbctl_env, run_dbctl, run_main
from test_signals import wait_for_sleep

SQLX_COLUMNS = {"version": "BIGINT PRIMARY KEY", "description": "TEXT NOT NULL",
                "installed_on": "TIMESTAMPTZ NOT NULL DEFAULT now()", "success": "BOOLEAN NOT NULL",
                "checksum": "BYTEA NOT NULL", "execution_time": "BIGINT NOT NULL"}
OTHER_TYPES = ["TEXT", "INTEGER", "JSONB", "VARCHAR(20)", "TIMESTAMP"]


def shapes():
    """A history table sqlx did not make: a column dropped, retyped, or a required column added."""
    dropped = st.sampled_from(sorted(SQLX_COLUMNS)).map(lambda c: ("drop", c, None))
    retyped = st.tuples(st.sampled_from(sorted(SQLX_COLUMNS)), st.sampled_from(OTHER_TYPES)).map(
        lambda t: ("retype", *t))
    added = st.sampled_from(["owner", "tenant_id", "Mixed Case"]).map(lambda c: ("add", c, "TEXT NOT NULL"))
    return st.lists(st.one_of(dropped, retyped, added), min_size=1, max_size=3, unique_by=lambda t: t[1])


def create_table(db, changes) -> list[str]:
    columns = dict(SQLX_COLUMNS)
    named = []
    for action, column, kind in changes:
        if action == "drop":
            columns.pop(column)
        elif action == "retype":
            if SQLX_COLUMNS[column].split()[0] == kind or (column in ("installed_on",) and kind == "TIMESTAMPTZ"):
                continue
            columns[column] = kind + (" PRIMARY KEY" if column == "version" else "")
        else:
            columns[f'"{column}"'] = kind
        named.append(column)
    body = ", ".join(f"{name} {kind}" for name, kind in columns.items())
    db.query("DROP TABLE IF EXISTS _sqlx_migrations, _dbctl_migration_attempts")
    db.query(f"CREATE TABLE _sqlx_migrations ({body})")
    return named


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=shapes())
def test_a_history_table_of_another_shape_is_blamed_not_a_migration(db, changes):
    named = create_table(db, changes)
    assume(named)  # a "retype" to the type sqlx uses leaves sqlx's table, which migrate would rightly use
    env = {"DATABASE_URL": db.url, "DBCTL_MIGRATIONS": str(MIGRATIONS)}
    for args in (["migrate", "--wait-timeout", "0"], ["migrate", "--dry-run"], ["status"], ["verify"]):
        result = run_main(*args, env=env)
        assert_clean_error(result, 1, "_sqlx_migrations is not the history table sqlx makes")
        error = result.err.strip().splitlines()[-1]
        assert all(column in error for column in named), (changes, error)
        assert ".sql" not in error, error  # no migration file is blamed
    assert db.tables() == {"_sqlx_migrations"}  # nothing applied, no attempts table, no attempt row


def test_sigterm_during_drift_speaks_of_the_scratch_database(db, tmp_path):
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "001_slow.sql").write_text("CREATE TABLE t (id int);\nSELECT pg_sleep(30);\n")
    db.query("CREATE TABLE t (id int)")
    db.query("CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, "
             "installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, "
             "execution_time BIGINT NOT NULL)")
    from dbctl.engine.source import load_migrations

    checksum = load_migrations(migrations).ups[0].checksum
    db.query("INSERT INTO _sqlx_migrations VALUES (1, 'slow', now(), true, %s, 0)", (checksum,))
    proc = subprocess.Popen([sys.executable, "-m", "dbctl", "drift", "--migrations", str(migrations)], cwd=REPO,
                            env=dbctl_env({"DATABASE_URL": db.url}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_sleep(db, "the replay", "AND datname LIKE 'dbctl_drift_%%'")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, out + err
    line = err.strip().splitlines()[-1]
    assert line.startswith("Error: interrupted by SIGTERM while dbctl drift worked in its scratch database"), line
    assert "no other database was changed" in line
    assert "stay applied" not in line and "applying" not in line, line
    assert db.scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'dbctl_drift_%%'") == 0


def test_a_copy_refusal_leaves_its_attempt_row(db, migrations_dir):
    (migrations_dir / "009_copy.sql").write_text("CREATE TABLE copy_t (id int);\nCOPY copy_t FROM STDIN;\n")
    result = run_dbctl("migrate", "--migrations", str(migrations_dir), env={"DATABASE_URL": db.url})
    assert_clean_error(result, 1, "009_copy.sql:2", "COPY ... FROM STDIN")
    rows = db.query("SELECT version, outcome, error_line, error_message FROM _dbctl_migration_attempts "
                    "WHERE version = 9")
    assert [(v, o, line) for v, o, line, _ in rows] == [(9, "failed", 2)] and "COPY" in rows[0][3]
    assert "copy_t" not in db.tables()
    status = json.loads(run_dbctl("status", "--json", "--migrations", str(migrations_dir),
                                  env={"DATABASE_URL": db.url}).out)
    entry = next(m for m in status["migrations"] if m["version"] == 9)
    assert entry["state"] == "failed" and "COPY" in entry["last_attempt"]["error"]


CONTROL = st.sampled_from(["\n", "\r", "\r\n", "\x1b[2J", "\x1b]0;owned\x07", "\x85", "\u2028", "\t", "\x7f",
                           "\x0b"])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(control=CONTROL, tail=st.sampled_from(["10       forged             applied", "x", ""]))
def test_a_file_name_cannot_forge_a_line(db, tmp_path_factory, control, tail):
    directory = tmp_path_factory.mktemp("m")
    (directory / "001_first.sql").write_text("SELECT 1;\n")
    (directory / f"002_evil{control}{tail}.sql").write_text("SELECT 2;\n")
    env = {"DATABASE_URL": db.url, "DBCTL_MIGRATIONS": str(directory)}
    db.query("DROP TABLE IF EXISTS _sqlx_migrations, _dbctl_migration_attempts")
    for args in (["migrate", "--wait-timeout", "0"], ["status"], ["verify", "--table", "_sqlx_migrations"]):
        result = run_main(*args, env=env)
        assert result.code in (0, 1), result.output
        for line in result.output.splitlines():
            assert "\x1b" not in line and "\r" not in line and "\x85" not in line and "\u2028" not in line, line
            assert not line.startswith("10 "), result.output  # no forged row
        assert "002_evil" not in result.output or "\\" in result.output  # the name shown escaped
    status = run_main("status", env=env).out.splitlines()
    assert len([line for line in status if line[:2] in ("1 ", "2 ")]) == 2, status


def test_reset_names_the_database_the_sql_way(db):
    assert run_dbctl("migrate", env={"DATABASE_URL": db.url}).code == 0
    result = run_dbctl("reset", "--yes", env={"DATABASE_URL": db.url})
    assert result.code == 0, result.output
    assert f'about to DROP database "{db.name}"' in result.out and f"'{db.name}'" not in result.output


def _repr_uses(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FormattedValue) and node.conversion == ord("r"):
            yield node.lineno, "!r"
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "repr":
            yield node.lineno, "repr()"
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "format"
              and isinstance(node.func.value, ast.Constant) and "!r" in str(node.func.value.value)):
            yield node.lineno, "'{!r}'.format"


@pytest.mark.parametrize("path", sorted((REPO / "tools" / "dbctl").rglob("*.py")), ids=lambda p: p.name)
def test_no_name_is_printed_in_python_repr(path):
    """Messages quote names with dbctl.text.quoted (SQL's quotes, control characters escaped)."""
    assert list(_repr_uses(path)) == [], f"{path}: use dbctl.text.quoted instead"
