"""A file whose own ROLLBACK (or ABORT) undoes the migration's transaction is never recorded.

sqlx records it as applied (an up file) or reverted (a down file) whatever its
ROLLBACK undid, so its history then contradicts the schema. dbctl asks
PostgreSQL what became of the transaction it opened (pg_xact_status) after the
file ran and before the history change, and refuses: exit 1, one line saying
why and what to do, the attempt recorded, no history change.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_clean_error, create_database, drop_database, run_main
from dbctl.engine.source import LARGE_FILE

REFUSED = "did not record it as applied"
OWN = {"_sqlx_migrations", "_dbctl_migration_attempts"}


def migrate(db, directory):
    return run_main("migrate", "--migrations", str(directory), env={"DATABASE_URL": db.url})


def attempts(db, version: int) -> list[str]:
    return [r[0] for r in db.query(
        "SELECT outcome FROM _dbctl_migration_attempts WHERE version = %s ORDER BY id", (version,))]


LARGE = "".join(f"INSERT INTO r VALUES ({i});\n" for i in range(LARGE_FILE // 20))

# name -> (file, tables that stay: made after the ROLLBACK, outside the migration's transaction)
UNDONE = {
    "begin-rollback": ("BEGIN;\nCREATE TABLE r (id int);\nROLLBACK;\n", set()),
    "rollback-alone": ("CREATE TABLE r (id int);\nROLLBACK;\n", set()),
    "abort-work": ("CREATE TABLE r (id int);\nABORT WORK;\n", set()),
    "rollback-and-chain": ("CREATE TABLE r (id int);\nROLLBACK AND CHAIN;\nCREATE TABLE c (id int);\n", set()),
    "rollback-then-more": ("CREATE TABLE r (id int);\nROLLBACK;\nCREATE TABLE after_r (id int);\n", {"after_r"}),
    "rollback-then-own-transaction": ("CREATE TABLE r (id int);\nROLLBACK;\nBEGIN;\nCREATE TABLE b (id int);\n",
                                      set()),
    "commit-then-rollback": ("CREATE TABLE a (id int);\nCOMMIT;\nCREATE TABLE r (id int);\nROLLBACK;\n", {"a"}),
    "hidden-behind-a-comment-ended-by-cr": ("CREATE TABLE r (id int);\n-- cleanup\rROLLBACK;\n", set()),
    "large-file": ("CREATE TABLE r (id int);\n" + LARGE + "ROLLBACK;\n", set()),
}


@pytest.mark.parametrize("name", list(UNDONE))
def test_migrate_refuses_to_record_a_file_its_own_rollback_undid(db, tmp_path, name):
    body, stays = UNDONE[name]
    (tmp_path / "1_undone.sql").write_text(body)
    (tmp_path / "2_next.sql").write_text("CREATE TABLE next (id int);\n")
    result = migrate(db, tmp_path)
    assert_clean_error(result, 1, "1_undone.sql", REFUSED, "fix it and run dbctl migrate again")
    assert "undoes what precedes it" in result.output  # warned before it ran
    assert db.history() == [] and attempts(db, 1) == ["failed"]
    assert db.tables() - OWN == stays  # nothing of the migration's own transaction, 2_next not run


@pytest.mark.parametrize("body", [
    "BEGIN;\nCREATE TABLE w (id int);\nCOMMIT;\n",  # the file commits itself: recorded, as sqlx records it
    "CREATE TABLE w (id int);\nSAVEPOINT s;\nCREATE TABLE gone (id int);\nROLLBACK TO SAVEPOINT s;\n",
    "CREATE TABLE w (id int);\nSAVEPOINT s;\nROLLBACK WORK TO s;\nRELEASE s;\n",
    "CREATE TABLE w (rollback int, abort int);\nSELECT 'ROLLBACK;' AS \"ROLLBACK\";\n-- ROLLBACK;\n",
])
def test_a_file_that_keeps_its_work_is_recorded(db, tmp_path, body):
    (tmp_path / "1_kept.sql").write_text(body)
    result = migrate(db, tmp_path)
    assert result.code == 0, result.output
    assert [r[0] for r in db.history()] == [1] and "w" in db.tables() and "gone" not in db.tables()


def test_rollback_refuses_to_record_a_down_file_its_own_rollback_undid(db, tmp_path):
    (tmp_path / "1_a.up.sql").write_text("CREATE TABLE a (id int);\n")
    (tmp_path / "1_a.down.sql").write_text("DROP TABLE a;\nROLLBACK;\n")
    assert migrate(db, tmp_path).code == 0
    result = run_main("rollback", "--migrations", str(tmp_path), env={"DATABASE_URL": db.url})
    assert_clean_error(result, 1, "did not record it as reverted", "version 1 is still in the history")
    assert [r[0] for r in db.history()] == [1] and "a" in db.tables()
    assert db.scalar("SELECT count(*) FROM _dbctl_migration_reverts") == 0


statement = st.sampled_from(["CREATE TABLE t{n} (id int)", "BEGIN", "COMMIT", "ROLLBACK", "ABORT", "END",
                             "SAVEPOINT s; ROLLBACK TO SAVEPOINT s", "SAVEPOINT s; ROLLBACK WORK TO s",
                             "SELECT 'ROLLBACK'", "SELECT 1 AS rollback"])
gap = st.sampled_from(["\n", "\r\n", " ", "\n-- ROLLBACK\n", "\n-- c\r", "/* ROLLBACK; */"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(statement, gap), min_size=1, max_size=6))
def test_a_recorded_file_never_rolled_its_own_work_back(pg_server, tmp_path_factory, parts):
    """Whatever the file's transaction statements: never recorded when one of them is a ROLLBACK or ABORT
    (which undid some of what it did); when recorded, every table it made exists; refused for a ROLLBACK
    only when it has one (a file PostgreSQL fails, e.g. SAVEPOINT after the file's own COMMIT, fails
    with PostgreSQL's message, as under sqlx)."""
    texts = [text.format(n=i) for i, (text, _) in enumerate(parts)]
    body = "".join(f"{text};{sep}" for text, (_, sep) in zip(texts, parts))
    directory = tmp_path_factory.mktemp("migrations")
    (directory / "1_generated.sql").write_text(body)
    db = create_database(pg_server, f"t_{uuid.uuid4().hex[:12]}")
    try:
        result = migrate(db, directory)
        rolls_back = any(t in ("ROLLBACK", "ABORT") for t in texts)
        assert "Traceback" not in result.output and "unexpected" not in result.output, result.output
        recorded = [r[0] for r in db.history()] == [1]
        if recorded:
            assert result.code == 0 and not rolls_back, (body, result.output)
            made = {f"t{i}" for i, t in enumerate(texts) if t.startswith("CREATE")}
            assert made <= db.tables(), body
        else:
            assert_clean_error(result, 1)
            assert (REFUSED in result.err) <= rolls_back, (body, result.output)
    finally:
        drop_database(pg_server, db.name)
