"""Every view of the history agrees (README, "Reliability"): one function (dbctl.engine.plan.judge) decides.

Hypothesis generates histories where each version is applied, dirty (success = false, as sqlx writes it),
modified, missing, pending or newer (applied beyond every file), writes them into a real database, and asks
every command: `status --json` (up_to_date, each state), `verify --json` (the init container), `migrate
--dry-run`, `seed`'s readiness check, `/health`'s check_health, and migrate's one-read no-op check. They must all give
the same verdict, and status must show each version in the state it was given.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_main
from dbctl.devdata import seeding
from dbctl.devenv.health_server import check_health
from dbctl.engine import postgres
from dbctl.engine.migrator import up_to_date_plan
from dbctl.engine.source import load_migrations

STATES = ["applied", "dirty", "modified", "missing", "pending", "newer"]
READY_STATES = {"applied"}
TABLES = ["_sqlx_migrations"]  # the critical table: the verdict here is about the history only


def histories():
    """A list of states, one per version 1..n; `newer` versions are put after every file's version."""
    return st.lists(st.sampled_from(STATES), min_size=1, max_size=7)


def lay_out(tmp_path, db, states: list[str]):
    """Files and history rows for `states`; returns (migrations dir, {version: expected state})."""
    directory = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
    directory.mkdir()
    ordered = [s for s in states if s != "newer"] + [s for s in states if s == "newer"]
    with db.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS _sqlx_migrations, _dbctl_migration_attempts")
        conn.execute(postgres.HISTORY_DDL)
        conn.execute(postgres.ATTEMPTS_DDL)
    expected = {}
    rows = []
    for version, state in enumerate(ordered, start=1):
        has_file = state not in ("missing", "newer")
        if state == "missing" and version == len(ordered):
            state = "newer"  # no file above it: a missing newest version is a newer one
        if has_file:
            (directory / f"{version:03d}_v{version}.sql").write_text(f"SELECT {version};\n")
        if state != "pending":
            rows.append((version, state))
        expected[version] = state
    migrations = load_migrations(directory)
    files = migrations.by_version()
    with db.connect() as conn:
        for version, state in rows:
            checksum = b"\x00" * 48 if state == "modified" or version not in files else files[version].checksum
            conn.execute("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
                         "VALUES (%s, %s, %s, %s, 0)", (version, f"v{version}", state != "dirty", checksum))
    # newer versions count as such only above every file; a "missing" below the newest stays missing
    newest_file = max(files, default=None)
    newest_row = max((v for v, _ in rows), default=None)
    for version, state in expected.items():
        if state in ("missing", "newer"):
            expected[version] = "newer" if newest_file is None or version > newest_file else "missing"
        if state == "pending" and newest_row is not None and version < newest_row:
            expected[version] = "out-of-order"  # pending, older than the newest row
    return directory, expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(states=histories())
def test_every_command_gives_the_same_verdict(tmp_path, db, states):
    directory, expected = lay_out(tmp_path, db, states)
    env = {"DATABASE_URL": db.url, "DBCTL_MIGRATIONS": str(directory)}
    ready = set(expected.values()) <= READY_STATES

    status = run_main("status", "--json", env=env)
    assert status.code == 0, status.output
    report = json.loads(status.out)
    shown = {m["version"]: m["state"] for m in report["migrations"]}
    # newer and missing are both "missing" to status: applied with no file
    assert shown == {v: ("missing" if s == "newer" else s) for v, s in expected.items()}, (states, report)
    assert report["up_to_date"] is ready, (expected, report["problems"])
    assert (report["problems"] == []) is ready

    verify = run_main("verify", "--json", "--table", TABLES[0], env=env)
    assert (verify.code == 0) is ready, (expected, verify.output)
    assert json.loads(verify.out)["ok"] is ready

    dry_run = run_main("migrate", "--dry-run", "--wait-timeout", "0", env=env)
    migrate_ready = dry_run.code == 0 and "0 migration(s) would be applied" in dry_run.out
    assert migrate_ready is ready, (expected, dry_run.output)
    refuses = set(expected.values()) - {"applied", "pending", "out-of-order"}
    assert (dry_run.code == 1) is bool(refuses), (expected, dry_run.output)

    migrations = load_migrations(directory)
    with postgres.connect(db.url) as conn:
        assert (seeding.pending_migrations(conn, migrations) == []) is ready, expected
        assert (up_to_date_plan(conn, migrations) is not None) is ready, expected

    health = check_health(db.url, str(directory), tables=TABLES)
    # a running older backend stays ready when the only difference is newer versions (README, Health endpoint)
    assert health.ok is (set(expected.values()) <= {"applied", "newer"}), (expected, health.problems)
    if not ready and not health.ok:
        assert set(health.problems) <= set(report["problems"]) | {p for p in health.problems if "missing tables" in p}


def test_a_dirty_row_is_not_applied_anywhere(tmp_path, db):
    """The reported case: a success = false row made status say applied and up_to_date, and seed load data."""
    directory, _ = lay_out(tmp_path, db, ["applied", "dirty"])
    env = {"DATABASE_URL": db.url, "DBCTL_MIGRATIONS": str(directory)}
    text = run_main("status", env=env)
    row = next(line for line in text.out.splitlines() if line.startswith("2 "))
    assert " dirty " in row and " applied " not in row
    assert "Problem:    _sqlx_migrations marks version 2 as failed (success = false)" in text.out
    assert json.loads(run_main("status", "--json", env=env).out)["up_to_date"] is False
    seed = run_main("seed", env=env)
    assert seed.code == 1 and "marks version 2 as failed" in seed.err, seed.output


@pytest.mark.parametrize("state", ["missing", "newer"])
def test_seed_says_what_is_wrong_with_an_applied_version_without_a_file(tmp_path, db, state):
    states = ["applied", "missing", "applied"] if state == "missing" else ["applied", "newer"]
    directory, _ = lay_out(tmp_path, db, states)
    seed = run_main("seed", env={"DATABASE_URL": db.url, "DBCTL_MIGRATIONS": str(directory)})
    assert seed.code == 1
    assert "is applied but has no file" in seed.err and "not applied" not in seed.err, seed.err
