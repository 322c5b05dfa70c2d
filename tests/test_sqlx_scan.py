"""dbctl's own lexical scan (source.Scan) against PostgreSQL's parser (pglast), on generated SQL.

The scan decides where statements start (the line an error names), which
statements end a transaction (the warning), whether a file ends outside any
quote (whether text may be appended to it) and how a large file is cut into
messages. PostgreSQL's own parser is the reference for all of it.
"""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pglast import ast, parse_sql, split
from pglast.parser import ParseError, scan

from dbctl.engine.source import Scan, batches

identifier = st.sampled_from(["t", "users", "é_table", '"quoted;name"', '"a""b"', "x$1", "begin", "atomic", "commit",
                              "rollback", "work", '"end"'])
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
                     "CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b)",
                     # the transaction statements' other spellings, and keywords used as names
                     "ROLLBACK WORK TO SAVEPOINT s", "ROLLBACK TRANSACTION TO s", "ROLLBACK AND CHAIN", "ABORT WORK",
                     "END TRANSACTION", "COMMIT WORK AND NO CHAIN", "PREPARE TRANSACTION $$x$$",
                     "PREPARE transaction AS SELECT 1", "SELECT begin, commit, atomic FROM begin",
                     "CREATE FUNCTION bf(begin int) RETURNS int LANGUAGE sql RETURN begin",
                     "CREATE FUNCTION af(atomic int) RETURNS int LANGUAGE sql RETURN atomic",
                     "CREATE FUNCTION ff() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT begin FROM begin; END",
                     "SELECT E'\\\\' AS a, E'--\\'' AS b, '\\' AS c"]),
)
gap = st.sampled_from(["", " ", "\n", "\r\n", "\n-- a comment; with ; semicolons\n", " /* block ; */ ",
                       "/* nested /* ; */ */\n", "\n\n  ", "\r", "-- lone CR ends a comment\r",
                       "-- CR LF\r\n", "\f\t", "/* -- not a line comment */", "-- /* not a block\n"])


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


def postgres_statements(sql: str) -> list[tuple[int, int | None]]:
    """(offset of the first token, offset of the ending `;` or None) of each statement as PostgreSQL's
    own lexer sees it: its tokens (comments aside) between `;` tokens. For SQL without parentheses or
    routine bodies, where a `;` always ends one. Offsets in characters, as pglast gives token starts."""
    found, first = [], None
    for token in scan(sql):
        if token.name in ("SQL_COMMENT", "C_COMMENT"):
            continue
        if token.name == "ASCII_59":
            if first is not None:
                found.append((first, token.start))
            first = None
            continue
        first = token.start if first is None else first
    if first is not None:
        found.append((first, None))
    return found


# Fragments of SQL, glued with or without blank space: strings next to words (E'', x''), dollar quotes
# next to identifiers ($a$ is a tag, a$ an identifier), comments ended by \n, \r or \r\n, nested blocks.
fragment = st.sampled_from([
    "begin", "BEGIN", "atomic", "commit", "rollback", "end", "e", "E", "x", "a$", "$a$", "$$", "'s'", "'it''s'",
    "E'\\''", "E'\\\\'", "\"q;\"", "\"\"\"\"", "$$ ; $$", "$a$ $$ ; $a$", "$a$ ; $b$ $a$", "-- c ;\n", "-- c ;\r",
    "-- c ;\r\n", "--\r", "/* ; */", "/* /* ; */ */", "/*/ ; */", "/**/", "-", "+", "*", "/", ";", ";", " ; ", "=",
    ".", ",", "::", "1", "é", "ü$",
])
separator = st.sampled_from(["", " ", "\n", "\r", "\r\n", "\t", "\f"])


@st.composite
def soups(draw):
    parts = draw(st.lists(st.tuples(fragment, separator), min_size=1, max_size=30))
    return "".join(f + sep for f, sep in parts)


@settings(max_examples=1500, deadline=None)
@given(soups())
def test_statement_boundaries_agree_with_postgresqls_lexer_on_any_tokens(sql):
    raw = sql.encode()
    try:
        expected = postgres_statements(sql)
    except ParseError:  # PostgreSQL's lexer refuses it (trailing junk after a number...): no reference
        assume(False)
    got = [(s.start, s.end - 1 if sql[s.end - 1:s.end] == ";" else None) for s in Scan(sql)]
    assert got == expected, (sql, got, expected)
    assert [(s.start, s.end) for s in Scan(sql)] == [
        (len(raw[:a].decode()), len(raw[:b].decode())) for a, b in [(s.start, s.end) for s in Scan(raw)]]


@settings(max_examples=300, deadline=None)
@given(scripts(), st.integers(min_value=1, max_value=400))
def test_batches_cover_every_byte_and_cut_only_between_statements(sql, limit):
    raw = sql.encode()
    sent = list(batches(raw, limit))
    assert sent[0].start == 0 and sent[-1].end == len(raw)
    assert all(a.end == b.start for a, b in zip(sent, sent[1:]))
    whole = [sql[piece] for piece in split(sql, with_parser=True, only_slices=True)]
    pieces = [text for b in sent
              for text in (raw[b.start:b.end].decode()[p] for p in split(raw[b.start:b.end].decode(),
                                                                        with_parser=True, only_slices=True))]
    assert pieces == whole  # each message holds whole statements, and together all of them
    for b in sent:
        assert b.line == raw[:b.start].count(b"\n") + 1


@settings(max_examples=500, deadline=None)
@given(st.one_of(scripts(), soups(), st.builds(str.__add__, soups(), st.sampled_from(["'open", "$b$ open", "/* open"]))),
       st.integers(min_value=1, max_value=64))
def test_a_large_file_scanned_a_window_at_a_time_splits_as_scanned_whole(sql, window):
    """Files over LARGE_FILE are scanned from their descriptor a window at a time (memory follows the
    largest statement): any window gives the statements, lines and `closed` of the whole."""
    import os
    import tempfile

    from dbctl.engine.source import FileImage

    raw = sql.encode()
    with tempfile.TemporaryFile() as f:
        f.write(raw)
        f.flush()
        image = FileImage(os.dup(f.fileno()), len(raw))
        windowed, whole = Scan(image, window=window), Scan(raw)
        assert list(windowed) == list(whole)
        assert windowed.closed == whole.closed
