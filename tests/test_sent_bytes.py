"""What is sent to PostgreSQL is exactly what was checksummed: migrations, down files and seeds.

The checksum is taken when a directory is loaded and the bytes are sent later
(after the lock wait, after other migrations). A file edited, truncated or
replaced in between must never have other bytes executed than the ones its
history row names, and must never kill dbctl (a truncated file under a memory
map raises SIGBUS). Files above LARGE_FILE are read again when sent; the small
ones are kept in memory since the load, so they are sent as checksummed.

Two ways to change a file between load and send, both real: in-process, the
directory is loaded, the file changed, then the engine run on what was loaded;
as a real `dbctl` process, the test holds the migration lock, changes the file
while dbctl says it waits for it, then releases it.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (MIGRATIONS, assert_clean_error, create_database, drop_database, start_dbctl,
                      wait_for_lock_then_release)
from dbctl.engine.postgres import lock_key
from dbctl.engine.source import LARGE_FILE

PAD = "x" * 200
ROWS = LARGE_FILE // 230 + 200  # enough rows of ~230 bytes for a file over LARGE_FILE


def rows_sql(table: str, rows: int = ROWS) -> str:
    return "".join(f"INSERT INTO {table} VALUES ({i}, '{PAD}');\n" for i in range(rows))


def large_migration(shape: str) -> str:
    """A migration over LARGE_FILE: many statements (sent in batches), one statement (sent whole), or
    -- no-transaction (sent whole, outside a transaction)."""
    create = "CREATE TABLE big (id int PRIMARY KEY, pad text);\n"
    if shape == "batched":
        return create + rows_sql("big")
    values = ",\n".join(f"({i}, '{PAD}')" for i in range(ROWS))
    if shape == "one statement":
        return f"INSERT INTO seeded_elsewhere VALUES {values};\n"
    return f"-- no-transaction\n{create}INSERT INTO big VALUES {values};\n"


def change(path, kind: str, at: float = 0.5, payload: bytes = b"DROP TABLE users; -- ") -> None:
    """Change a file as editors, git and truncating tools do."""
    size = path.stat().st_size
    offset = int(size * at)
    if kind == "truncate":
        os.truncate(path, offset)
    elif kind == "overwrite":  # in place, same inode and size (an editor writing over the file)
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(payload)
    elif kind == "append":
        with open(path, "ab") as f:
            f.write(b"\nDROP TABLE users;\n")
    elif kind == "replace":  # a new file renamed over the old one (git checkout, most editors)
        new = path.with_name(path.name + ".new")
        new.write_bytes(path.read_bytes()[:offset] + payload + path.read_bytes()[offset:])
        os.replace(new, path)
    elif kind == "truncate-then-rewrite":  # truncated and written again with other bytes (`>` in a shell)
        data = path.read_bytes()
        os.truncate(path, 0)
        path.write_bytes(data[:offset] + payload + data[offset + len(payload):])


def kept_as_checksummed(kind: str) -> bool:
    """Changes after which the bytes dbctl reads are still the checksummed ones: appended bytes lie past
    the size it read, and a file replaced by rename is a new file (dbctl holds the old one open)."""
    return kind in ("append", "replace")


def history(db) -> dict[int, bytes]:
    if db.scalar("SELECT to_regclass('_sqlx_migrations')") is None:
        return {}
    return {v: bytes(c) for v, c in db.query("SELECT version, checksum FROM _sqlx_migrations")}


def attempts(db, version: int) -> list[str]:
    return [r[0] for r in db.query(
        "SELECT outcome FROM _dbctl_migration_attempts WHERE version = %s ORDER BY id", (version,))]


def table_rows(db, table: str) -> int | None:
    if db.scalar("SELECT to_regclass(%s)", (table,)) is None:
        return None
    return db.scalar(f"SELECT count(*) FROM {table}")


# ---------------------------------------------------------------- in-process: load, change, run

@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.sampled_from(["batched", "no-transaction"]),
       kind=st.sampled_from(["truncate", "overwrite", "append", "replace", "truncate-then-rewrite"]),
       at=st.floats(min_value=0.0, max_value=0.999),
       payload=st.sampled_from([b"COMMIT;", b"';", b"\n", b"X", b"DROP TABLE users; -- ", b"$$"]))
def test_a_migration_changed_between_load_and_send_runs_as_checksummed_or_not_at_all(
        pg_server, tmp_path_factory, shape, kind, at, payload):
    from dbctl.engine.migrator import migrate
    from dbctl.engine.source import load_migrations
    from dbctl.errors import MigrationFailed

    directory = tmp_path_factory.mktemp("migrations")
    path = directory / "1_big.sql"
    path.write_text(large_migration(shape))
    original = hashlib.sha384(path.read_bytes()).digest()
    db = create_database(pg_server, f"t_{uuid.uuid4().hex[:12]}")
    try:
        migrations = load_migrations(directory)
        change(path, kind, at, payload)
        try:
            migrate(db.url, migrations, say=lambda _: None, warn=lambda _: None)
            applied = True
        except MigrationFailed as exc:
            applied = False
            assert "changed on disk while dbctl was running" in str(exc), str(exc)
            assert "nothing of 1_big.sql was applied" in str(exc)
        if kind_sends_the_same_bytes := kept_as_checksummed(kind):
            assert applied
        if applied:  # what ran is the checksummed file, all of it, and the history says so
            assert history(db) == {1: original}
            assert table_rows(db, "big") == ROWS and "users" not in db.tables()
        else:
            assert not kind_sends_the_same_bytes and history(db) == {} and table_rows(db, "big") is None
            assert attempts(db, 1) == ["failed"]
    finally:
        drop_database(pg_server, db.name)


def test_a_small_migration_edited_after_load_runs_as_it_was_checksummed(db, tmp_path):
    """Small files are held in memory from the load: the old bytes run, and the history names them."""
    from dbctl.engine.migrator import migrate
    from dbctl.engine.source import load_migrations

    path = tmp_path / "1_small.sql"
    path.write_text("CREATE TABLE small (id int);\n")
    original = hashlib.sha384(path.read_bytes()).digest()
    migrations = load_migrations(tmp_path)
    path.write_text("CREATE TABLE other (id int);\n")
    migrate(db.url, migrations, say=lambda _: None, warn=lambda _: None)
    assert history(db) == {1: original} and "small" in db.tables() and "other" not in db.tables()


# ---------------------------------------------------------------- real dbctl, changed while it waits

def reversible_large(directory) -> None:
    (directory / "1_big.up.sql").write_text("CREATE TABLE big (id int PRIMARY KEY, pad text);\n" + rows_sql("big"))
    # A down file over LARGE_FILE: many DELETEs, then the DROP.
    (directory / "1_big.down.sql").write_text(
        "".join(f"DELETE FROM big WHERE id = {i} AND pad = '{PAD}';\n" for i in range(ROWS))
        + "DROP TABLE big;\n")


def run_while_changed(db, args: list[str], path, kind: str, env: dict | None = None):
    """Start the real dbctl with the migration lock held, change `path` while it waits, release."""
    holder = psycopg.connect(db.url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(db.name),))
    proc = start_dbctl(*args, "--lock-wait-timeout", "120", env={"DATABASE_URL": db.url, **(env or {})})
    seen = wait_for_lock_then_release(proc, holder, lambda: change(path, kind, 0.5))
    out, err = proc.communicate(timeout=300)
    from conftest import Result

    return Result(proc.returncode, seen + out, err)


@pytest.mark.parametrize("kind", ["truncate", "overwrite", "truncate-then-rewrite"])
def test_migrate_refuses_a_large_file_changed_while_it_waits_and_never_dies_of_sigbus(db, tmp_path, kind):
    path = tmp_path / "1_big.sql"
    path.write_text(large_migration("batched"))
    result = run_while_changed(db, ["migrate", "--migrations", str(tmp_path)], path, kind)
    assert result.code >= 0, f"killed by signal {-result.code}: {result.output}"
    assert_clean_error(result, 1, "1_big.sql changed on disk while dbctl was running",
                       "nothing of 1_big.sql was applied")
    assert history(db) == {} and table_rows(db, "big") is None and attempts(db, 1) == ["failed"]


@pytest.mark.parametrize("kind", ["truncate", "overwrite"])
def test_rollback_refuses_a_large_down_file_changed_while_it_waits(db, tmp_path, kind):
    from conftest import run_dbctl

    reversible_large(tmp_path)
    assert run_dbctl("migrate", "--migrations", str(tmp_path), env={"DATABASE_URL": db.url}).code == 0
    before = history(db)
    path = tmp_path / "1_big.down.sql"
    result = run_while_changed(db, ["rollback", "--migrations", str(tmp_path)], path, kind)
    assert result.code >= 0, f"killed by signal {-result.code}: {result.output}"
    assert_clean_error(result, 1, "1_big.down.sql changed on disk while dbctl was running",
                       "version 1 is still in the history")
    assert history(db) == before and table_rows(db, "big") == ROWS


@pytest.mark.parametrize("kind", ["truncate", "overwrite", "append"])
def test_seed_refuses_a_large_seed_file_changed_while_it_waits(db, tmp_path, kind):
    from conftest import run_dbctl

    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "1_t.sql").write_text("CREATE TABLE seeded (id int PRIMARY KEY, pad text);\n")
    assert run_dbctl("migrate", "--migrations", str(migrations), env={"DATABASE_URL": db.url}).code == 0
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    path = seeds / "1_rows.sql"
    path.write_text("".join(f"INSERT INTO seeded VALUES ({i}, '{PAD}') ON CONFLICT DO NOTHING;\n"
                            for i in range(ROWS)))
    result = run_while_changed(db, ["seed", "--migrations", str(migrations), "--seeds", str(seeds)], path, kind,
                               env={"DBCTL_ENV": "development"})
    assert result.code >= 0, f"killed by signal {-result.code}: {result.output}"
    if kept_as_checksummed(kind):  # appended bytes are past what was read and checksummed: not run
        assert result.code == 0, result.output
        assert table_rows(db, "seeded") == ROWS
        return
    assert_clean_error(result, 1, "1_rows.sql changed on disk while dbctl was running",
                       "no seed rows were written")
    assert table_rows(db, "seeded") == 0
    assert db.scalar("SELECT outcome FROM _dbctl_seed_runs ORDER BY id DESC LIMIT 1") == "failed"


def test_the_kiro_migrations_are_small_enough_to_be_held_from_the_load():
    """The real migrations are read whole at load (no FileImage): nothing to re-check when they are sent."""
    assert all(p.stat().st_size <= LARGE_FILE for p in MIGRATIONS.glob("*.sql"))
