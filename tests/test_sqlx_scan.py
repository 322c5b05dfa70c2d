"""dbctl's own lexical scan (source.Scan) against PostgreSQL's parser (pglast), on generated SQL.

The scan decides where statements start (the line an error names), which
statements end a transaction (the warning), whether a file ends outside any
quote (whether text may be appended to it) and how a large file is cut into
messages. PostgreSQL's own parser is the reference for all of it.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import ast, parse_sql, split

from dbctl.engine.source import Scan

identifier = st.sampled_from(["t", "users", "é_table", '"quoted;name"', '"a""b"', "x$1"])
literal = st.sampled_from([
    "'plain'", "'with ; semicolon'", "'it''s'", "E'back\\'slash;'", "$$dollar ; body$$", "$tag$ $$ ; $tag$",
    "U&'d\\0061t'", "B'101'", "X'1F'", "1.5e3", "-- trailing comment ; \n 1", "/* a /* nested ; */ c */ 2",
])
expression = st.one_of(literal, st.builds(lambda a, b: f"({a} || {b})", literal, literal),
                       st.builds(lambda a: f"CASE WHEN true THEN {a} END", literal))
select = st.builds(lambda e, t: f"SELECT {e} AS v FROM (SELECT 1) {t}", expression, st.sampled_from(["s", "s2"]))
statement = st.one_of(
    select,
    st.builds(lambda t: f"CREATE TABLE {t} (id int, note text DEFAULT 'a;b')", identifier),
    st.builds(lambda e: f"INSERT INTO t VALUES (1, {e})", expression),
    st.builds(lambda e: f"DO $body$ BEGIN PERFORM {e}; END $body$", literal),
    st.builds(lambda e: f"CREATE FUNCTION f() RETURNS text LANGUAGE sql BEGIN ATOMIC SELECT {e}; "
                        "SELECT CASE WHEN true THEN 'y' END; END", literal),
    st.builds(lambda e: f"CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT {e}; END", literal),
    st.builds(lambda e: f"CREATE FUNCTION g() RETURNS int LANGUAGE sql AS $fn$ SELECT {e} $fn$", literal),
    st.sampled_from(["BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT", "START TRANSACTION", "SAVEPOINT s",
                     "ROLLBACK TO SAVEPOINT s", "ROLLBACK TO s", "RELEASE s", "COMMIT AND CHAIN",
                     "PREPARE TRANSACTION 'x'", "COMMIT PREPARED 'x'", "ROLLBACK PREPARED 'x'",
                     "CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b)"]),
)
gap = st.sampled_from(["", " ", "\n", "\r\n", "\n-- a comment; with ; semicolons\n", " /* block ; */ ",
                       "/* nested /* ; */ */\n", "\n\n  "])


@st.composite
def scripts(draw):
    parts = []
    for text in draw(st.lists(statement, min_size=1, max_size=5)):
        parts.append(draw(gap) + text + draw(gap) + ";" + draw(st.sampled_from(["", ";", " ;"])))
    return "".join(parts) + draw(gap)


def ends_transaction(node) -> str | None:
    if isinstance(node, ast.TransactionStmt):
        kind = node.kind.name
        if kind == "TRANS_STMT_COMMIT":
            return "COMMIT"
        if kind == "TRANS_STMT_ROLLBACK":
            return "ROLLBACK"
        if kind == "TRANS_STMT_PREPARE":
            return "PREPARE TRANSACTION"
    return None


@settings(max_examples=300, deadline=None)
@given(scripts())
def test_the_scan_splits_statements_where_postgresql_does(sql):
    expected = [(piece.start, sql[piece]) for piece in split(sql, with_parser=True, only_slices=True)]
    for kind in (str, bytes):
        source = sql if kind is str else sql.encode()
        scan = Scan(source)
        found = list(scan)
        assert scan.closed
        got = [(s.start, source[s.start:s.end]) for s in found]
        if kind is bytes:
            got = [(len(source[:start].decode()), text.decode()) for start, text in got]
        assert [(start, text.rstrip(";").rstrip()) for start, text in got] == expected
        assert [s.line for s in found] == [sql[:start].count("\n") + 1 for start, _ in expected]


@settings(max_examples=300, deadline=None)
@given(scripts())
def test_the_scan_finds_the_statements_that_end_a_transaction(sql):
    nodes = [raw.stmt for raw in parse_sql(sql)]
    expected = [ends_transaction(node) for node in nodes]
    got = [s.transaction_control for s in Scan(sql.encode())]
    # END and ABORT are PostgreSQL's spellings of COMMIT and ROLLBACK.
    got = [{"END": "COMMIT", "ABORT": "ROLLBACK"}.get(name, name) for name in got]
    assert got == expected


@given(scripts(), st.sampled_from(["'open", "E'open\\'", '"open', "$q$ open", "/* open", "(1", "(SELECT (1)"]))
@settings(max_examples=100, deadline=None)
def test_a_file_left_open_is_seen_as_open(sql, tail):
    scan = Scan((sql + "SELECT " + tail).encode())
    list(scan)
    assert not scan.closed
