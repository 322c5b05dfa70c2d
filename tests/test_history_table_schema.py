"""One history table: dbctl never makes a second `_sqlx_migrations`, whatever the search_path finds first.

CREATE TABLE IF NOT EXISTS looks only in the schema it would create the table
in (the first schema of the search_path that exists). A database migrated by
sqlx as role kiro, with the history in public, gains a schema named kiro
("$user", first on the default search_path): the next run would make an empty
history there and apply everything again. dbctl looks at every schema first and
refuses, naming both, with the fix. Real roles, schemas and sqlx's own Migrator.
"""

from __future__ import annotations

import subprocess
import uuid
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from conftest import assert_clean_error, run_main

PASSWORD = "s3cret-pw"  # the session's password: never printed (assert_clean_error checks)


@pytest.fixture
def role(db):
    """A login role (not a superuser) that may create in the database and in schema public."""
    name = f"kiro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(PASSWORD)))
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(db.name), sql.Identifier(name)))
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
    with psycopg.connect(db.server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def url_as(db, role: str) -> str:
    return f"postgresql://{quote(role)}:{quote(PASSWORD)}@127.0.0.1:{db.server.port}/{db.name}"


def migrate(url: str, directory):
    return run_main("migrate", "--migrations", str(directory), env={"DATABASE_URL": url})


def history_tables(db) -> list[str]:
    return [r[0] for r in db.query("SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                   "WHERE c.relname = '_sqlx_migrations' ORDER BY 1")]


@pytest.fixture
def directory(tmp_path):
    (tmp_path / "1_users.sql").write_text("CREATE TABLE users (id int);\n")
    (tmp_path / "2_items.sql").write_text("CREATE TABLE items (id int);\n")
    return tmp_path


def schema_for(db, role: str) -> None:
    db.query(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(role), sql.Identifier(role))
             .as_string(None))


@pytest.mark.parametrize("first", ["sqlx", "dbctl"])
def test_a_schema_named_after_the_role_does_not_get_a_second_history(db, role, directory, first, request):
    url = url_as(db, role)
    if first == "sqlx":  # a database only sqlx had migrated
        oracle = request.getfixturevalue("sqlx_oracle")
        proc = subprocess.run([str(oracle), "run", str(directory), url], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    else:
        assert migrate(url, directory).code == 0
    assert history_tables(db) == ["public"]
    schema_for(db, role)
    (directory / "3_more.sql").write_text("CREATE TABLE more (id int);\n")  # work to do: the engine runs

    result = migrate(url, directory)
    assert_clean_error(result, 1, "public._sqlx_migrations", f"second one in schema {role}",
                       "put public first on the search_path", "nothing was applied")
    assert history_tables(db) == ["public"]  # nothing made in the role's schema
    assert [r[0] for r in db.query(f"SELECT tablename FROM pg_tables WHERE schemaname = '{role}'")] == []

    # The fix the line gives: public first on the search_path. Then nothing is applied again.
    db.query(f'ALTER ROLE "{role}" SET search_path = public, "$user"')
    again = migrate(url, directory)
    assert again.code == 0, again.output
    assert history_tables(db) == ["public"] and [r[0] for r in db.history()] == [1, 2, 3]


def test_two_history_tables_are_refused_naming_both(db, role, directory):
    url = url_as(db, role)
    assert migrate(url, directory).code == 0
    schema_for(db, role)
    db.query(f'CREATE TABLE "{role}"._sqlx_migrations (LIKE public._sqlx_migrations)')
    (directory / "3_more.sql").write_text("CREATE TABLE more (id int);\n")
    result = migrate(url, directory)
    assert_clean_error(result, 1, "2 history tables", f"{role}._sqlx_migrations and public._sqlx_migrations",
                       "drop the other")
    assert db.scalar(f'SELECT count(*) FROM "{role}"._sqlx_migrations') == 0


def test_a_history_in_a_schema_off_the_search_path_is_refused(db, directory):
    db.query('CREATE SCHEMA "App Schema"')
    db.query('CREATE TABLE "App Schema"._sqlx_migrations (version bigint)')
    result = migrate(db.url, directory)
    assert_clean_error(result, 1, '"App Schema"._sqlx_migrations', "second one in schema public")
    assert history_tables(db) == ["App Schema"] and "users" not in db.tables()


def test_the_usual_single_history_is_accepted(db, role, directory):
    url = url_as(db, role)
    schema_for(db, role)  # the role's schema exists from the start: the history goes there, once
    assert migrate(url, directory).code == 0 and migrate(url, directory).code == 0
    assert history_tables(db) == [role]
