"""Down files run as up files do, and as sqlx's undo runs them: transaction control included.

Each case goes through sqlx 0.8.6's Migrator::undo (tests/sqlx_oracle) on one
database and `dbctl rollback --to 0` on another; they must leave the same
history, schema and data. dbctl's messages must then say what really happened:
a warning before a down file's own COMMIT/ROLLBACK runs, and, after a failure
that follows the file's own COMMIT, that part of it was committed (never
"nothing was applied").
"""

from __future__ import annotations

import pytest

from sqlx_differential import Pair, describe, observe, same, write_directory

UP = "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n"

# name -> (down file, dbctl accepts it, fragments of dbctl's output)
CASES = {
    "rollback-in-down": ("DROP TABLE a;\nROLLBACK;\n", False,
                         ("2: ROLLBACK undoes what precedes it", "dbctl refuses to write the history change",
                          "its own ROLLBACK at line 2 rolled back work of the migration's transaction, so dbctl did "
                          "not record it as reverted", "version 1 is still in the history")),
    "commit-then-failure": ("DROP TABLE a;\nCOMMIT;\nSELECT 1/0;\n", False,
                            ("2: COMMIT ends the migration's transaction", "division by zero",
                             "what precedes its COMMIT at line 2 may have been committed",
                             "version 1 is still in the history")),
    "own-begin-commit": ("BEGIN;\nDROP TABLE a;\nCOMMIT;\n", True, ("3: COMMIT ends the migration's transaction",)),
    "failure-before-commit": ("DELETE FROM a;\nSELECT 1/0;\nCOMMIT;\n", False,
                              ("division by zero", "nothing of 1_a.down.sql was applied")),
    "no-transaction-commit-then-failure": ("-- no-transaction\nDROP TABLE a;\nCOMMIT;\nSELECT 1/0;\n", False,
                                           ("division by zero",)),
    "no-transaction-own-begin-failing": ("-- no-transaction\nBEGIN;\nDROP TABLE a;\nSELECT 1/0;\n", False,
                                         ("1_a.down.sql:4: division by zero", "version 1 is still in the history")),
    "copy-from-stdin": ("COPY a FROM STDIN;\n", False, ("COPY ... FROM STDIN", "nothing was reverted")),
}


@pytest.fixture
def pair(pg_server, sqlx_oracle):
    databases = Pair(pg_server, sqlx_oracle)
    yield databases
    databases.close()


@pytest.mark.parametrize("name", list(CASES))
def test_down_file_as_sqlx_undo_runs_it(name, pair, tmp_path):
    down, accepted, fragments = CASES[name]
    directory = tmp_path / "migrations"
    write_directory(directory, {"1_a.up.sql": UP, "1_a.down.sql": down})
    assert pair.run_sqlx(directory).ok and pair.run_dbctl(directory).ok
    before = observe(pair.dbctl, True, "migrated")
    sqlx, dbctl = pair.undo_sqlx(directory, 0), pair.undo_dbctl(directory, 0)
    if name == "copy-from-stdin":  # sqlx fails on it as it runs; dbctl refuses first: both revert nothing
        assert not sqlx.ok and not dbctl.ok and dbctl.state() == before.state(), describe(sqlx, dbctl)
    elif name == "rollback-in-down":  # sqlx removes the history row of a table still there; dbctl refuses
        assert sqlx.ok and not dbctl.ok and dbctl.state() == before.state(), describe(sqlx, dbctl)
    else:
        assert same(sqlx, dbctl), describe(sqlx, dbctl)
    assert dbctl.ok == accepted, dbctl.message
    assert "unexpected" not in dbctl.message and "Traceback" not in dbctl.message
    for fragment in fragments:
        assert fragment in dbctl.message, dbctl.message
    if not accepted:
        assert len([line for line in dbctl.message.splitlines() if line.startswith("Error:")]) == 1


def test_up_file_failing_after_its_own_commit_says_what_was_committed(pair, tmp_path):
    directory = tmp_path / "migrations"
    write_directory(directory, {"1_a.sql": "CREATE TABLE a (id int);\nCOMMIT;\nSELECT 1/0;\n"})
    sqlx, dbctl = pair.run_sqlx(directory), pair.run_dbctl(directory)
    assert same(sqlx, dbctl), describe(sqlx, dbctl)
    assert not dbctl.ok and "what precedes its COMMIT at line 2 may have been committed" in dbctl.message
    assert "nothing of" not in dbctl.message
