"""The differential corpus: migration directories that sqlx (the oracle) and dbctl must treat alike.

Each Case is a directory written from a dict {file name: content}; content is
text (written as UTF-8), bytes (written as they are), None (a subdirectory)
or Link(target) (a symbolic link). `then` is a second state of the directory,
applied to the same databases afterwards (a file changed, removed or added);
`undo_to` reverts to that version afterwards (sqlx's undo, dbctl rollback --to).
`setup` is SQL run on both fresh databases first.

`difference` names a row of the README's "Differences from sqlx" table: for
those cases the two agree on accepting or refusing, and dbctl commits nothing
where sqlx commits part of the run (tests/test_sqlx_differential.py checks
exactly that, and that the row exists).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Link:
    target: str


@dataclass(frozen=True)
class Case:
    name: str
    files: dict
    then: dict | None = None
    undo_to: int | None = None
    setup: str | None = None
    difference: str | None = None
    notes: str = ""
    tags: tuple = field(default=())


T = "CREATE TABLE {0} (id int PRIMARY KEY, note text);\n"


def table(name: str) -> str:
    return T.format(name)


CASES = [
    # ------------------------------------------------------------ naming
    Case("version-zero", {"0_setup.sql": table("setup"), "1_next.sql": table("next")}),
    Case("negative-version", {"-5_neg.sql": table("neg"), "1_pos.sql": table("pos")}),
    Case("plus-sign", {"+7_plus.sql": table("plus")}),
    Case("minus-zero", {"-0_mzero.sql": table("mzero"), "1_a.sql": table("a")}),
    Case("leading-zeros", {"0001_a.sql": table("a"), "002_b.sql": table("b"), "10_c.sql": table("c")}),
    Case("bigint-max", {"1_a.sql": table("a"), "9223372036854775807_max.sql": table("max")}),
    Case("bigint-min", {"-9223372036854775808_min.sql": table("min")}),
    Case("bigint-overflow", {"1_a.sql": table("a"), "9223372036854775808_over.sql": table("over")}),
    Case("unicode-description", {"1_café_über_日本_😀.sql": table("uni")}),
    Case("empty-description", {"1_.sql": table("a"), "2_.up.sql": table("b"), "2_.down.sql": "DROP TABLE b;"}),
    Case("double-suffix", {"1_x.sql.sql": table("a"), "2_y.up.up.sql": table("b"), "2_y.down.sql": "DROP TABLE b;",
                           "3_z.up.sql.up.sql": table("c")}),
    Case("spaces-and-dots", {"1_with space.and.dots.sql": table("a"), "2_trailing_.sql": table("b")}),
    Case("hidden-file-with-underscore", {".1_hidden.sql": table("hidden"), "1_a.sql": table("a")}),
    Case("hidden-files-without-underscore", {".gitkeep": "", ".hidden.sql": "garbage", "1_a.sql": table("a")}),
    Case("files-that-are-not-migrations", {"schema.sql": "garbage", "README.md": "x", "notes.txt": "x",
                                           "1_a.sql": table("a"), "1_b.sql.bak": "garbage", "2_x.SQL": "garbage",
                                           "3_y.sql~": "garbage"}),
    Case("not-an-integer-prefix", {"v1_init.sql": table("a")}),
    Case("empty-prefix", {"_init.sql": table("a")}),
    Case("directory-named-like-a-migration", {"2_dir.sql": None, "1_a.sql": table("a")}),
    Case("symbolic-link", {"shared.txt": table("linked"), "1_link.sql": Link("shared.txt")}),
    Case("broken-link", {"1_a.sql": table("a"), "2_gone.sql": Link("nowhere.sql")}),
    Case("empty-file", {"1_empty.sql": "", "2_next.sql": table("next")}),
    Case("whitespace-only", {"1_blank.sql": "  \n\n\t\n"}),
    Case("comment-only", {"1_comment.sql": "-- nothing to do yet\n/* really */\n"}),
    Case("empty-down", {"1_a.up.sql": table("a"), "1_a.down.sql": ""}, undo_to=0),
    Case("orphan-down", {"1_a.sql": table("a"), "2_b.down.sql": "DROP TABLE b;"}),
    Case("down-for-a-simple-migration", {"1_a.sql": table("a"), "1_a.down.sql": "DROP TABLE a;"}, undo_to=0),
    Case("duplicate-down-files", {"1_a.up.sql": table("a"), "1_a.down.sql": "DROP TABLE a;",
                                  "1_b.down.sql": "DROP TABLE IF EXISTS a;"}, undo_to=0,
         difference="rollback-duplicate-down"),
    Case("duplicate-versions", {"1_a.sql": table("a"), "1_b.sql": table("b")}, difference="duplicate-versions"),
    Case("duplicate-versions-leading-zero", {"01_a.sql": table("a"), "1_b.sql": table("b")},
         difference="duplicate-versions"),
    # ------------------------------------------------------------ encodings
    Case("bom", {"1_bom.sql": "\ufeff" + table("bom")}),
    Case("bom-after-a-good-file", {"1_ok.sql": table("ok"), "2_bom.sql": "\ufeff" + table("bom")}),
    Case("bom-before-no-transaction", {"1_bom.sql": "\ufeff-- no-transaction\n" + table("bom")}),
    Case("crlf", {"1_crlf.sql": "CREATE TABLE crlf (id int);\r\nCREATE TABLE crlf2 (id int);\r\n"}),
    Case("crlf-no-transaction", {"1_t.sql": table("t"),
                                 "2_idx.sql": "-- no-transaction\r\nCREATE INDEX CONCURRENTLY t_note ON t (note);\r\n"}),
    Case("nul-byte", {"1_ok.sql": table("ok"), "2_nul.sql": b"CREATE TABLE nul (id int);\0DROP TABLE ok;"},
         difference="nul-byte"),
    Case("nul-byte-in-down-file", {"1_a.up.sql": table("a"), "1_a.down.sql": b"DROP TABLE a;\0"}),
    Case("invalid-utf8", {"1_ok.sql": table("ok"), "2_latin1.sql": b"SELECT 'caf\xe9';"}),
    Case("invalid-utf8-in-down-file", {"1_a.up.sql": table("a"), "1_a.down.sql": b"-- caf\xe9\nDROP TABLE a;"}),
    Case("unicode-content", {"1_u.sql": table("u") + "INSERT INTO u VALUES (1, 'zoë 😀 日本');\n-- ünïcödé\n"}),
    # ------------------------------------------------------------ transaction control and bodies
    Case("begin-commit-wrapper", {"1_w.sql": "BEGIN;\n" + table("w") + "COMMIT;\n", "2_next.sql": table("next")}),
    Case("start-transaction-end", {"1_w.sql": "START TRANSACTION;\n" + table("w") + "END;\n"}),
    Case("rollback-in-file", {"1_r.sql": "BEGIN;\n" + table("r") + "ROLLBACK;\n"}, difference="own-rollback"),
    Case("rollback-then-more", {"1_r.sql": table("r") + "ROLLBACK;\n" + table("after_r"), "2_next.sql": table("n")},
         difference="own-rollback"),
    Case("rollback-to-savepoint-is-not-a-rollback",
         {"1_s.sql": table("s") + "SAVEPOINT a;\nINSERT INTO s VALUES (1);\nROLLBACK WORK TO a;\n"}),
    Case("commit-then-failure", {"1_c.sql": table("c1") + "COMMIT;\n" + table("c1")}),
    Case("savepoints", {"1_s.sql": table("s") + "SAVEPOINT a;\nINSERT INTO s VALUES (1);\n"
                        "ROLLBACK TO SAVEPOINT a;\nINSERT INTO s VALUES (2);\nRELEASE SAVEPOINT a;\n"}),
    Case("begin-atomic", {"1_f.sql": "CREATE FUNCTION one() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n"
                          "  SELECT 1;\nEND;\nCREATE TABLE after_f (id int DEFAULT one());\n"}),
    Case("begin-atomic-with-case", {"1_f.sql": "CREATE OR REPLACE FUNCTION sign_of(x int) RETURNS text LANGUAGE sql\n"
                                    "BEGIN ATOMIC\n  SELECT CASE WHEN x < 0 THEN 'neg' ELSE 'pos' END;\nEND;\n"
                                    "CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\n"}),
    Case("begin-atomic-no-transaction", {"1_f.sql": "-- no-transaction\nCREATE FUNCTION two() RETURNS int "
                                         "LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 2;\nEND;\n"}),
    Case("do-blocks", {"1_d.sql": table("d") + "DO $$ BEGIN INSERT INTO d VALUES (1); END $$;\n"
                       "DO $body$ BEGIN IF true THEN INSERT INTO d VALUES (2); END IF; END $body$;\n"}),
    Case("plpgsql-function-with-semicolons", {"1_f.sql": "CREATE FUNCTION f() RETURNS trigger AS $$\nBEGIN\n"
                                              "  NEW.x := 1; RETURN NEW;\nEND;\n$$ LANGUAGE plpgsql;\n"}),
    Case("copy-to-stdout", {"1_c.sql": table("c") + "COPY c TO STDOUT;\n"}),
    Case("prepare-transaction", {"1_p.sql": table("p") + "PREPARE TRANSACTION 'x';\n"}),
    Case("vacuum-in-transactional-file", {"1_v.sql": table("v") + "VACUUM v;\n"}),
    Case("session-setting-carries-on", {"1_s.sql": "CREATE SCHEMA app;\nSET search_path = app;\n",
                                        "2_t.sql": table("in_app")}),
    # ------------------------------------------------------------ -- no-transaction
    Case("no-transaction-one-statement", {"1_t.sql": table("t"),
                                          "2_i.sql": "-- no-transaction\nCREATE INDEX CONCURRENTLY t_n ON t (note);\n"}),
    Case("no-transaction-two-concurrently", {"1_t.sql": table("t"), "2_i.sql":
                                             "-- no-transaction\nCREATE INDEX CONCURRENTLY t_n ON t (note);\n"
                                             "CREATE INDEX CONCURRENTLY t_i ON t (id, note);\n"}),
    Case("no-transaction-several-plain", {"1_ab.sql": "-- no-transaction\n" + table("a") + table("b")}),
    Case("no-transaction-fails-second", {"1_ab.sql": "-- no-transaction\n" + table("a") + table("a")}),
    Case("no-transaction-with-commit", {"1_ab.sql": "-- no-transaction\n" + table("a") + "COMMIT;\n" + table("a")}),
    Case("no-transaction-vacuum", {"1_t.sql": table("t"), "2_v.sql": "-- no-transaction\nVACUUM t;\n"}),
    Case("no-transaction-directive-not-first", {"1_t.sql": table("t"), "2_i.sql":
                                                "\n-- no-transaction\nCREATE INDEX CONCURRENTLY t_n ON t (note);\n"}),
    Case("no-transaction-directive-without-space", {"1_t.sql": table("t"), "2_i.sql":
                                                    "--no-transaction\nCREATE INDEX CONCURRENTLY t_n ON t (note);\n"}),
    Case("no-transaction-enum-value", {"1_e.sql": "CREATE TYPE mood AS ENUM ('ok');\n",
                                       "2_v.sql": "-- no-transaction\nALTER TYPE mood ADD VALUE 'great';\n"}),
    # ------------------------------------------------------------ failures
    Case("fails-first-migration", {"1_bad.sql": "CREATE TABLE a (id int;\n", "2_b.sql": table("b")}),
    Case("fails-middle-migration", {"1_a.sql": table("a"), "2_bad.sql": "SELECT 1/0;\n", "3_c.sql": table("c")}),
    Case("fails-last-migration", {"1_a.sql": table("a"), "2_b.sql": table("b"), "3_bad.sql": "DROP TABLE nope;\n"}),
    Case("fails-first-statement", {"1_a.sql": "DROP TABLE nope;\n" + table("a") + table("b")}),
    Case("fails-middle-statement", {"1_a.sql": table("a") + "INSERT INTO a VALUES (1), (1);\n" + table("b")}),
    Case("fails-last-statement", {"1_a.sql": table("a") + table("b") + "SELECT 1/0;\n"}),
    Case("syntax-error-late", {"1_a.sql": table("a") + table("b") + "CREATE TABLE c (;\n"}),
    Case("unterminated-string", {"1_a.sql": table("a") + "SELECT 'open;\n"}),
    Case("unterminated-comment", {"1_a.sql": table("a") + "/* open /* nested */\n"}),
    Case("unterminated-dollar-quote", {"1_a.sql": table("a") + "DO $x$ BEGIN END $y$;\n"}),
    Case("open-parenthesis-at-end", {"1_a.sql": table("a") + "SELECT (1\n"}),
    Case("no-final-semicolon", {"1_a.sql": "CREATE TABLE a (id int)", "2_b.sql": "CREATE TABLE b (id int) -- end"}),
    Case("dirty-history", {"1_a.sql": table("a")},
         setup="CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, "
               "installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, "
               "execution_time BIGINT NOT NULL); INSERT INTO _sqlx_migrations VALUES (9, 'x', now(), false, '', 0);"),
    # ------------------------------------------------------------ reversible sets and later states
    Case("reversible-pair", {"1_a.up.sql": table("a"), "1_a.down.sql": "DROP TABLE a;",
                             "2_b.up.sql": table("b"), "2_b.down.sql": "DROP TABLE b;"}, undo_to=0),
    Case("reversible-partial-undo", {"1_a.up.sql": table("a"), "1_a.down.sql": "DROP TABLE a;",
                                     "2_b.up.sql": table("b"), "2_b.down.sql": "DROP TABLE b;"}, undo_to=1),
    Case("reversible-no-transaction-down", {"1_t.up.sql": table("t") + "CREATE INDEX t_n ON t (note);\n",
                                            "1_t.down.sql": "-- no-transaction\nDROP INDEX CONCURRENTLY t_n;\n"},
         undo_to=0),
    Case("reversible-failing-down", {"1_a.up.sql": table("a"), "1_a.down.sql": "DROP TABLE a;",
                                     "2_b.up.sql": table("b"), "2_b.down.sql": "DROP TABLE nope;"}, undo_to=0),
    Case("reversible-with-a-simple-between", {"1_a.up.sql": table("a"), "1_a.down.sql": "DROP TABLE a;",
                                              "2_b.sql": table("b"), "3_c.up.sql": table("c"),
                                              "3_c.down.sql": "DROP TABLE c;"}, undo_to=0,
         difference="rollback-without-down"),
    Case("changed-after-apply", {"1_a.sql": table("a")}, then={"1_a.sql": table("a") + "-- edited\n"}),
    Case("changed-after-apply-with-an-earlier-pending", {"1_a.sql": table("a"), "2_b.sql": table("b")},
         then={"0_early.sql": table("early"), "1_a.sql": table("a"), "2_b.sql": table("b") + "-- edited\n"},
         difference="changed-checksum-order"),
    Case("missing-after-apply", {"1_a.sql": table("a"), "2_b.sql": table("b")}, then={"1_a.sql": table("a")}),
    Case("out-of-order", {"1_a.sql": table("a"), "3_c.sql": table("c")},
         then={"1_a.sql": table("a"), "2_b.sql": table("b"), "3_c.sql": table("c")}),
    Case("renamed-description-only", {"1_a.sql": table("a")}, then={"1_renamed.sql": table("a")}),
]
