"""`dbctl reset` re-creates the database as it was: encoding, locale, grants, settings, limit, comment.

Real databases made with non-default attributes on the test server; what the
catalogs say before the drop must be what they say after. What cannot be
re-created as it was is refused before anything is dropped.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from psycopg import sql

from conftest import Database, assert_clean_error, run_dbctl
from dbctl.devdata import seeding
from dbctl.engine import postgres

ENCODINGS = [("SQL_ASCII", "C", "C"), ("LATIN1", "C", "C"), ("UTF8", "C.UTF-8", "C.UTF-8"), ("UTF8", "C", "C.UTF-8"),
             ("EUC_JP", "C", "C")]


def attributes(server, name: str) -> postgres.DatabaseAttributes:
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        return postgres.database_attributes(conn, name)


def admin(server, *statements) -> None:
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def roles(pg_server):
    """Two roles of the test's own; databases granting to them are dropped before them."""
    names = [f"r_{uuid.uuid4().hex[:8]}", f"R {uuid.uuid4().hex[:6]}\"q"]  # one needs quoting
    admin(pg_server, *[sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'role-pw-1234'").format(sql.Identifier(n))
                       for n in names])
    yield names
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        for name in names:
            rows = conn.execute("SELECT d.datname FROM pg_database d, aclexplode(d.datacl) a "
                                "WHERE a.grantee = to_regrole(quote_ident(%s))", (name,)).fetchall()
            for (db,) in rows:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def make_database(server, encoding, collate, ctype, icu=False, limit=-1, grants=(), db_settings=(),
                  role_settings=(), comment=None) -> Database:
    name = f"attrs_{uuid.uuid4().hex[:8]}"
    db = sql.Identifier(name)
    provider = sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE 'de-DE'") if icu else sql.SQL("")
    statements = [sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}{} "
                          "CONNECTION LIMIT {}").format(db, encoding, collate, ctype, provider, sql.Literal(limit))]
    if grants:
        statements.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
    for role, privilege, grantable in grants:
        statements.append(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
            sql.SQL(privilege), db, sql.Identifier(role), sql.SQL(" WITH GRANT OPTION" if grantable else "")))
    for setting in db_settings:
        statements.append(sql.SQL("ALTER DATABASE {} ").format(db) + sql.SQL(setting))
    for role, setting in role_settings:
        statements.append(sql.SQL("ALTER ROLE {} IN DATABASE {} ").format(sql.Identifier(role), db)
                          + sql.SQL(setting))
    if comment is not None:
        statements.append(sql.SQL("COMMENT ON DATABASE {} IS {}").format(db, sql.Literal(comment)))
    admin(server, *statements)
    return Database(server, name)


def reset_in_process(url: str) -> None:
    """What `dbctl reset` does before migrating: inspect, check, rehearse, drop and re-create."""
    target = seeding.inspect_target(url)
    seeding.check_can_reset(target)
    with seeding.reset_session(target) as conn:
        seeding.drop_and_create(target, conn)


SETTINGS = ["SET search_path TO \"$user\", public, \"odd, name\"", "SET statement_timeout TO '5s'",
            "SET app.tenant TO 'kiro''s'", "SET work_mem TO '8MB'", "SET timezone TO 'Asia/Tokyo'"]


def test_reset_keeps_encoding_locale_grants_settings_limit_and_comment(pg_server, roles):
    a, b = roles
    db = make_database(pg_server, "SQL_ASCII", "C", "C", limit=7,
                       grants=[(a, "CONNECT", False), (b, "CREATE", True), (b, "CONNECT", False)],
                       db_settings=SETTINGS, role_settings=[(a, "SET work_mem TO '16MB'")], comment="Kiro's data")
    db.query("CREATE TABLE keep_me (x int)")
    before = attributes(pg_server, db.name)
    assert before.encoding == "SQL_ASCII" and not before.default_acl and len(before.settings) == 6
    result = run_dbctl("reset", "--yes", env={"DATABASE_URL": db.url})
    assert result.code == 0, result.output
    after = attributes(pg_server, db.name)
    assert before.differences(after) == [] and after == before
    assert "keep_me" not in db.tables() and db.scalar("SELECT count(*) FROM _sqlx_migrations") == 8
    said = result.out
    for shown in ("encoding SQL_ASCII", "locale C", "connection limit 7", f"{a}: CONNECT", "CREATE WITH GRANT OPTION",
                  "statement_timeout=5s", f"work_mem=16MB (role {a})", "its comment"):
        assert shown in said, (shown, said)
    assert db.scalar("SHOW search_path").decode() == '"$user", public, "odd, name"'
    assert "role-pw-1234" not in result.output and "s3cret-pw" not in result.output


def test_reset_keeps_an_icu_locale(pg_server):
    db = make_database(pg_server, "UTF8", "C.UTF-8", "C.UTF-8", icu=True)
    before = attributes(pg_server, db.name)
    assert before.locale_provider == "icu" and before.locale
    reset_in_process(db.url)
    assert attributes(pg_server, db.name) == before


def test_what_cannot_be_re_created_as_it_was_is_refused_before_anything_is_dropped(pg_server, roles):
    """The owner may drop its database, but not re-create another role's setting in it: refuse, keep it."""
    owner, other = roles
    admin(pg_server, sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(owner)))
    db = make_database(pg_server, "LATIN1", "C", "C", role_settings=[(other, "SET work_mem TO '16MB'")])
    admin(pg_server, sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(db.name), sql.Identifier(owner)))
    db.query("CREATE TABLE keep_me (x int)")
    before = attributes(pg_server, db.name)
    url = f"postgresql://{owner}:role-pw-1234@127.0.0.1:{pg_server.port}/{db.name}"
    result = run_dbctl("reset", "--yes", env={"DATABASE_URL": url})
    assert_clean_error(result, 1, "cannot create database", "again as it is", "nothing was dropped")
    assert "keep_me" in db.tables() and attributes(pg_server, db.name) == before
    assert db.scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'dbctl_reset_check_%'") == 0
    admin(pg_server, sql.SQL("DROP DATABASE {}").format(sql.Identifier(db.name)))


@pytest.mark.parametrize("change, refusal", [
    ("IS_TEMPLATE true", "is a template"),
    ("ALLOW_CONNECTIONS false", "does not allow connections"),
])
def test_a_template_or_a_database_without_connections_is_refused(pg_server, change, refusal):
    db = make_database(pg_server, "UTF8", "C.UTF-8", "C.UTF-8")
    admin(pg_server, sql.SQL("ALTER DATABASE {} ").format(sql.Identifier(db.name)) + sql.SQL(change))
    try:
        result = run_dbctl("reset", "--yes", env={"DATABASE_URL": db.url})
        assert_clean_error(result, 1, refusal, "nothing was dropped")
    finally:
        admin(pg_server, sql.SQL("ALTER DATABASE {} IS_TEMPLATE false ALLOW_CONNECTIONS true").format(
                  sql.Identifier(db.name)),
              sql.SQL("DROP DATABASE {}").format(sql.Identifier(db.name)))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(encoding=st.sampled_from(ENCODINGS), icu=st.booleans(), limit=st.sampled_from([-1, 0, 3]),
       grants=st.lists(st.tuples(st.integers(0, 1), st.sampled_from(["CONNECT", "CREATE", "TEMPORARY"]), st.booleans()),
                       max_size=4, unique_by=lambda g: g[:2]),
       db_settings=st.lists(st.sampled_from(SETTINGS), unique=True, max_size=3),
       role_setting=st.booleans(), comment=st.none() | st.text(max_size=20).filter(lambda c: "\x00" not in c))
def test_any_set_of_attributes_comes_back_as_it_was(pg_server, roles, encoding, icu, limit, grants, db_settings,
                                                    role_setting, comment):
    if icu and encoding[0] not in ("UTF8", "LATIN1"):
        icu = False  # ICU needs an encoding it supports
    db = make_database(pg_server, *encoding, icu=icu, limit=limit,
                       grants=[(roles[i], privilege, grantable) for i, privilege, grantable in grants],
                       db_settings=db_settings, role_settings=[(roles[1], "SET work_mem TO '4MB'")] * role_setting,
                       comment=comment)
    try:
        before = attributes(pg_server, db.name)
        reset_in_process(db.url)
        after = attributes(pg_server, db.name)
        assert before.differences(after) == [] and after == before
    finally:
        admin(pg_server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name)))


def test_a_read_only_setting_is_not_kept_and_the_prompt_says_so(pg_server):
    """default_transaction_read_only would stop the reset's own migration: dropped, said before the drop."""
    db = make_database(pg_server, "SQL_ASCII", "C", "C",
                       db_settings=["SET default_transaction_read_only TO on", "SET work_mem TO '8MB'"])
    try:
        result = run_dbctl("reset", "--yes", env={"DATABASE_URL": db.url})
        assert result.code == 0, result.output
        prompt = result.out.split("dropped and re-created")[0]
        assert "not kept, so that it can be migrated: default_transaction_read_only=on" in prompt, result.out
        after = attributes(pg_server, db.name)
        assert after.settings == {(None, "work_mem=8MB")} and after.encoding == "SQL_ASCII"
    finally:
        admin(pg_server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name)))
