"""`dbctl lint` on column type changes and new columns, proven against the real PostgreSQL.

For each change the linter's verdict (rewrite, index rebuild, nothing) is compared
with what the server did: a rewritten table or a rebuilt index gets a new
relfilenode. Types are learned from an earlier migration file beside the linted
one, as for a database where 001 is applied and 002 is not.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbctl.checks.lint import _VOLATILE, REINDEX, REWRITE, lint_migrations
from dbctl.engine.source import read_migration

# timestamp <-> timestamptz keeps the table only when the session's TimeZone is UTC (PostgreSQL's
# TimestampTimestampTzRequiresRewrite); the linter cannot know the session's zone, so it assumes one.
SESSION_ZONE = "America/New_York"


def lint_verdict(directory: Path, old: str, new: str) -> str | None:
    """REWRITE, REINDEX or None: what lint says about `ALTER COLUMN c TYPE new` on a `c old` column."""
    (directory / "001_create.sql").write_text(f"CREATE TABLE t (c {old});\nCREATE INDEX t_c ON t (c);\n")
    change = directory / "002_change.sql"
    change.write_text(f"SET lock_timeout = '5s';\nALTER TABLE t ALTER COLUMN c TYPE {new};\n")
    findings = lint_migrations([read_migration(change)]).findings
    assert all(f.rule == "alter-column-type" for f in findings), [f.describe() for f in findings]
    if not findings:
        return None
    return REWRITE if REWRITE in findings[0].message else REINDEX if REINDEX in findings[0].message else "?"


def server_verdict(conn: psycopg.Connection, old: str, new: str) -> str | None:
    """What PostgreSQL did, from the relfilenodes of the table and of the index on the column;
    'error' when it refuses the change (no cast), so there is nothing to compare."""
    files = "SELECT relname, relfilenode FROM pg_class WHERE relname IN ('t', 't_c')"
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(f"CREATE TABLE t (c {old})")
            conn.execute("CREATE INDEX t_c ON t (c)")
            before = dict(conn.execute(files).fetchall())
            conn.execute(f"ALTER TABLE t ALTER COLUMN c TYPE {new}")
            after = dict(conn.execute(files).fetchall())
    except psycopg.errors.DatatypeMismatch:
        return "error"
    if before["t"] != after["t"]:
        assert before["t_c"] != after["t_c"]  # a rewritten table always gets new index files
        return REWRITE
    return REINDEX if before["t_c"] != after["t_c"] else None


@pytest.fixture
def conn(db):
    with db.connect() as connection:
        connection.execute(f"SET TimeZone = '{SESSION_ZONE}'")
        yield connection


CHANGES = [  # (old, new, what PostgreSQL 15 does)
    ("varchar(10)", "varchar(20)", None), ("varchar(10)", "varchar", None), ("varchar", "text", None),
    ("varchar(10)", "text", None), ("text", "varchar", None), ("character varying(5)", "text", None),
    ("varchar(20)", "varchar(10)", REWRITE), ("varchar", "varchar(10)", REWRITE), ("text", "varchar(10)", REWRITE),
    ("numeric(10,2)", "numeric(12,2)", None), ("numeric(10,2)", "numeric", None), ("numeric(5)", "numeric(9,0)", None),
    ("decimal(10,2)", "numeric(10,3)", REWRITE), ("numeric", "numeric(10,2)", REWRITE),
    ("numeric(10,2)", "numeric(9,2)", REWRITE),
    ("varbit(5)", "bit varying(10)", None), ("varbit(5)", "varbit", None), ("varbit", "varbit(5)", REWRITE),
    ("bit(5)", "varbit", REINDEX), ("bit(5)", "varbit(10)", REWRITE), ("bit(5)", "bit(10)", REWRITE),
    ("char(5)", "bpchar", None), ("char(5)", "char(10)", REWRITE), ("char(5)", "text", REWRITE),
    ("varchar(5)", "bpchar", REINDEX), ("text", "bpchar", REINDEX), ("text", "char(5)", REWRITE),
    ("timestamp(3)", "timestamp", None), ("timestamp", "timestamp(6)", None), ("timestamp", "timestamp(3)", REWRITE),
    ("timestamptz(0)", "timestamp(3) with time zone", None), ("timestamp", "timestamptz", REWRITE),
    ("timestamptz", "timestamp", REWRITE), ("time(2)", "time(4)", None), ("timetz(4)", "time(2) with time zone", REWRITE),
    ("interval(3)", "interval", None), ("interval", "interval(3)", REWRITE),
    ("interval day", "interval hour to minute", None), ("interval hour to minute", "interval day", REWRITE),
    ("interval day to second(2)", "interval minute to second(4)", None),
    ("interval(3)", "interval minute to second(2)", REWRITE), ("interval year to month", "interval day", None),
    ("cidr", "inet", None), ("inet", "cidr", REWRITE),
    ("integer", "bigint", REWRITE), ("bigint", "int", REWRITE), ("smallint", "int2", None), ("int4", "int4", None),
    ('text COLLATE "C"', "text", REINDEX), ("text", 'text COLLATE "C"', REINDEX),
    ('varchar(5) COLLATE "C"', 'varchar(9) COLLATE "C"', None), ('text COLLATE "C"', 'varchar COLLATE "POSIX"', REINDEX),
    ("varchar(10)[]", "varchar(20)[]", REWRITE), ("text[]", "text[]", None), ("varchar(10)[]", "text[]", REWRITE),
    ("varchar(10)", "varchar(20) USING c", None), ("int4", "int8 USING c + 1", REWRITE),
]


@pytest.mark.parametrize("old, new, expected", CHANGES, ids=[f"{o}->{n}" for o, n, _ in CHANGES])
def test_type_change_verdicts_match_the_server(conn, tmp_path, old, new, expected):
    assert server_verdict(conn, old, new) == expected, "the expectation in this table is wrong"
    assert lint_verdict(tmp_path, old, new) == expected


def test_a_type_change_on_a_column_the_migrations_do_not_know_is_assumed_a_rewrite(tmp_path):
    change = tmp_path / "002_change.sql"
    change.write_text("SET lock_timeout = '5s';\nALTER TABLE users ALTER COLUMN name TYPE text;\n")
    [finding] = lint_migrations([read_migration(change)]).findings
    assert finding.rule == "alter-column-type" and "unknown type" in finding.message and REWRITE in finding.message


def test_types_follow_renames_and_earlier_changes(tmp_path):
    (tmp_path / "001_a.sql").write_text("CREATE TABLE t (c varchar(10));\n")
    (tmp_path / "002_b.sql").write_text("ALTER TABLE t RENAME COLUMN c TO d;\nALTER TABLE t RENAME TO u;\n"
                                        "ALTER TABLE u ALTER COLUMN d TYPE varchar(30);\n")
    change = tmp_path / "003_c.sql"
    change.write_text("SET lock_timeout = '5s';\nALTER TABLE u ALTER COLUMN d TYPE varchar(20);\n")
    [finding] = lint_migrations([read_migration(change)]).findings
    assert "from varchar(30) to varchar(20)" in finding.message
    change.write_text("SET lock_timeout = '5s';\nALTER TABLE u ALTER COLUMN d TYPE text;\n")
    assert lint_migrations([read_migration(change)]).ok


# -- generated pairs -----------------------------------------------------------------------------------
_INTERVAL_FIELDS = ["", " year", " month", " day", " hour", " minute", " second", " year to month",
                    " day to hour", " day to minute", " day to second", " hour to minute", " hour to second",
                    " minute to second"]


def _sized(name: str, low: int, high: int):
    return st.one_of(st.just(name), st.integers(low, high).map(lambda n: f"{name}({n})"))


def _interval():
    def spell(fields: str, precision: int | None) -> str:
        if precision is None:
            return f"interval{fields}"
        return f"interval({precision})" if not fields else f"interval{fields}({precision})"

    return st.builds(spell, st.sampled_from(_INTERVAL_FIELDS), st.none() | st.integers(0, 6)).filter(
        lambda t: "(" not in t or t.startswith("interval(") or "second(" in t)


def _numeric():
    return st.one_of(st.just("numeric"), st.integers(1, 20).map(lambda p: f"numeric({p})"),
                     st.integers(1, 20).flatmap(lambda p: st.integers(0, p).map(lambda s: f"numeric({p},{s})")))


FAMILIES = {
    "varchar": _sized("varchar", 1, 40), "char": _sized("char", 1, 40) | st.just("bpchar"), "text": st.just("text"),
    "numeric": _numeric(), "varbit": _sized("varbit", 1, 40), "bit": st.integers(1, 40).map(lambda n: f"bit({n})"),
    "timestamp": _sized("timestamp", 0, 6), "timestamptz": _sized("timestamptz", 0, 6), "time": _sized("time", 0, 6),
    "interval": _interval(), "int2": st.just("int2"), "int4": st.just("int4"), "int8": st.just("int8"),
}
RELATED = [{"varchar", "char", "text"}, {"numeric", "int2", "int4", "int8"}, {"varbit", "bit"},
           {"timestamp", "timestamptz"}, {"time"}, {"interval"}]


@st.composite
def type_pairs(draw):
    """Mostly pairs from one family of related types (where the interesting cases are), some from anywhere."""
    first = draw(st.sampled_from(sorted(FAMILIES)))
    related = next(group for group in RELATED if first in group)
    second = draw(st.sampled_from(sorted(related)) if draw(st.integers(0, 4)) else st.sampled_from(sorted(FAMILIES)))
    return draw(FAMILIES[first]), draw(FAMILIES[second])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=type_pairs())
def test_generated_type_changes_match_the_server(conn, tmp_path, pair):
    old, new = pair
    actual = server_verdict(conn, old, new)
    if actual != "error":  # PostgreSQL has no cast between them: migrate fails, lint has nothing to say
        assert lint_verdict(tmp_path, old, new) == actual, f"{old} -> {new}"


# -- ADD COLUMN ----------------------------------------------------------------------------------------
NEW_COLUMNS = [  # (column definition, does PostgreSQL rewrite the table)
    ("x int", False), ("x int DEFAULT 0", False), ("x text NOT NULL DEFAULT 'free'", False),
    ("x timestamptz DEFAULT now()", False), ("x timestamptz DEFAULT current_timestamp", False),
    ("x text DEFAULT lower('X')", False), ("x timestamptz DEFAULT clock_timestamp()", True),
    ("x float8 DEFAULT random()", True), ("x uuid DEFAULT gen_random_uuid()", True),
    ("x text DEFAULT md5(random()::text)", True), ("x text DEFAULT timeofday()", True),
    ("x bigint DEFAULT nextval('s')", True), ("x bigserial", True), ("x int GENERATED ALWAYS AS IDENTITY", True),
    ("x int GENERATED ALWAYS AS (a * 2) STORED", True), ("x bigint DEFAULT txid_current()", False),
]


@pytest.mark.parametrize("column, rewrites", NEW_COLUMNS, ids=[c for c, _ in NEW_COLUMNS])
def test_add_column_rewrites_exactly_when_lint_says(conn, tmp_path, column, rewrites):
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE TABLE t (a int); INSERT INTO t VALUES (1); CREATE SEQUENCE s")
        before = conn.execute("SELECT relfilenode FROM pg_class WHERE relname = 't'").fetchone()
        conn.execute(f"ALTER TABLE t ADD COLUMN {column}")
        after = conn.execute("SELECT relfilenode FROM pg_class WHERE relname = 't'").fetchone()
    assert (before != after) == rewrites, "the expectation in this table is wrong"
    change = tmp_path / "002_add.sql"
    change.write_text(f"SET lock_timeout = '5s';\nALTER TABLE t ADD COLUMN {column};\n")
    rules = [f.rule for f in lint_migrations([read_migration(change)]).findings]
    assert rules == (["add-column-volatile-default"] if rewrites else [])


def test_the_volatile_function_list_matches_the_catalog(conn):
    """Every listed function PostgreSQL itself has is volatile there (extension ones are not installed)."""
    rows = conn.execute("SELECT proname, provolatile FROM pg_proc WHERE proname = ANY(%s)", (sorted(_VOLATILE),))
    found = dict(rows.fetchall())
    assert found and set(found.values()) == {"v"}, found
