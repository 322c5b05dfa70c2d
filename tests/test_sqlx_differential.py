"""The differential corpus (tests/sqlx_corpus.py): every directory through real sqlx and through dbctl.

For each directory, sqlx 0.8.6's Migrator (tests/sqlx_oracle) migrates one fresh
database and `dbctl migrate` another; they must agree on accepting or refusing,
on the `_sqlx_migrations` rows (version, description, success, checksum), on
the schema (drift's catalog snapshot) and on the data, after a failure too.
When both accept, each then runs on the other's database: a no-op that accepts
the history. Cases with `difference` are the documented exceptions (README,
"Differences from sqlx"): the decision still agrees, and dbctl commits nothing.
"""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from sqlx_corpus import CASES, Case
from sqlx_differential import Pair, dbctl_list, describe, observe, same, sqlx_list, write_directory

BY_NAME = {case.name: case for case in CASES}


def test_the_corpus_is_big_enough_and_names_are_unique():
    assert len(CASES) >= 50
    assert len(BY_NAME) == len(CASES)


def test_every_difference_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Differences from sqlx", 1)
    assert len(section) == 2, "README.md needs a 'Differences from sqlx' section"
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section[1].split("\n## ", 1)[0], re.M))
    used = {case.difference for case in CASES if case.difference}
    assert used <= rows, f"differences used by the corpus but not in the README table: {sorted(used - rows)}"


@pytest.fixture
def pair(pg_server, sqlx_oracle):
    databases = Pair(pg_server, sqlx_oracle)
    yield databases
    databases.close()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_sqlx_and_dbctl_agree(case: Case, pair, sqlx_oracle, tmp_path):
    directory = tmp_path / "migrations"
    write_directory(directory, case.files)
    if case.setup:
        pair.setup(case.setup)

    sqlx_resolved, dbctl_resolved = sqlx_list(sqlx_oracle, directory), dbctl_list(directory)
    if not case.difference or case.difference.startswith("rollback-"):
        assert dbctl_resolved == sqlx_resolved, "the files are read differently"

    before = observe(pair.dbctl, True, "fresh")
    sqlx, dbctl = pair.run_sqlx(directory), pair.run_dbctl(directory)
    check(case, sqlx, dbctl, before)

    if case.then is not None:
        write_directory(directory, case.then)
        before = dbctl
        sqlx, dbctl = pair.run_sqlx(directory), pair.run_dbctl(directory)
        check(case, sqlx, dbctl, before)

    if sqlx.ok and dbctl.ok:
        # Each accepts the other's history: a second run on the other's database changes nothing.
        again = pair.run_sqlx(directory, db=pair.dbctl)
        assert again.ok and again.state() == dbctl.state(), describe(again, dbctl)
        again = pair.run_dbctl(directory, db=pair.sqlx)
        assert again.ok and again.state() == sqlx.state(), describe(sqlx, again)

    if case.undo_to is not None:
        before = dbctl
        sqlx, dbctl = pair.undo_sqlx(directory, case.undo_to), pair.undo_dbctl(directory, case.undo_to)
        check(case, sqlx, dbctl, before)


def check(case: Case, sqlx, dbctl, before) -> None:
    """The two agree; for a documented difference, each does what the README's row says."""
    if case.difference is None or same(sqlx, dbctl):
        assert same(sqlx, dbctl), describe(sqlx, dbctl)
        return
    unchanged = before.state()
    if case.difference == "rollback-without-down":
        # sqlx reverts what has a down file and skips the rest; dbctl refuses and reverts nothing.
        assert sqlx.ok and not dbctl.ok, describe(sqlx, dbctl)
        assert "has no .down.sql" in dbctl.message
    elif case.difference == "own-rollback":
        # sqlx records the file its own ROLLBACK undid; dbctl refuses to write that history.
        assert sqlx.ok and not dbctl.ok and "did not record it as applied" in dbctl.message, describe(sqlx, dbctl)
        assert dbctl.history == [row for row in sqlx.history if row[0] < 1], describe(sqlx, dbctl)
        return
    elif case.difference == "rollback-duplicate-down":
        # sqlx's undo runs both down files of the version; dbctl refuses and reverts nothing.
        assert not dbctl.ok and "both revert it" in dbctl.message, describe(sqlx, dbctl)
    else:
        # sqlx commits the files before the one it fails on; dbctl refuses before running any.
        assert not sqlx.ok and not dbctl.ok, describe(sqlx, dbctl)
    assert dbctl.state() == unchanged, describe(sqlx, dbctl)
