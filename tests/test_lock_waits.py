"""Every database wait is bounded and names who it waits for (README, "Reliability").

A real session holds `LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE` in an open transaction. Each
command that reads the history gives up after its limit with one `Error:` line naming that session (pid,
application, state, for how long), exit 1, the migration lock released; /health answers 503 naming it, and
150 concurrent requests share one database check (connections counted in pg_stat_activity).
"""

from __future__ import annotations

import concurrent.futures
import threading

import click
import pytest

from conftest import MIGRATIONS, SEEDS, assert_clean_error, leaf_commands, run_dbctl
from dbctl.cli.main import cli
from test_health import Served

HOLDER = "hostile-holder"

# command -> arguments (the limit given the way a user gives it); every one reads the history.
READERS = {
    "migrate (fast path, then the engine)": ["migrate", "--lock-wait-timeout", "2"],
    "migrate --lock-timeout (the engine only)": ["migrate", "--lock-timeout", "2s"],
    "migrate --dry-run": ["migrate", "--dry-run", "--lock-wait-timeout", "2"],
    "migrate, DBCTL_LOCK_WAIT_TIMEOUT": ["migrate"],
    "rollback --dry-run": ["rollback", "--dry-run", "--lock-wait-timeout", "2"],
    "status": ["status", "--lock-wait-timeout", "2"],
    "status --json": ["status", "--json", "--lock-wait-timeout", "2"],
    "verify": ["verify", "--lock-wait-timeout", "2"],
    "verify --json": ["verify", "--json", "--lock-wait-timeout", "2"],
    "seed": ["seed", "--lock-wait-timeout", "2", "--seeds", str(SEEDS)],
    "drift": ["drift", "--lock-wait-timeout", "2"],
}
ENV = {"migrate, DBCTL_LOCK_WAIT_TIMEOUT": {"DBCTL_LOCK_WAIT_TIMEOUT": "2"}}

# Commands that take a database URL but do not read the history under a lock, and why.
NOT_READERS = {
    "wait": "only connects",
    "serve": "its /health is tested below",
    "reset": "drops the database (ending the holder's session), then migrates with migrate's limits",
    "lint": "lints every file instead when the database cannot be read: test_lint_does_not_hang_on_a_locked_history",
    "test": "scratch databases only",
    "new": "never connects",
}


@pytest.fixture
def held(db):
    """A migrated database whose history table another session holds locked, and that session's pid."""
    assert run_dbctl("migrate", "--migrations", str(MIGRATIONS), env={"DATABASE_URL": db.url}).code == 0
    conn = db.connect(application_name=HOLDER)
    conn.execute("BEGIN")
    conn.execute("LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    yield pid
    conn.close()


def test_every_command_with_a_database_url_is_covered():
    commands = {" ".join(path) for path, command in leaf_commands(cli)
                if any(isinstance(p, click.Option) and "--database-url" in p.opts for p in command.params)}
    listed = {args[0] for args in READERS.values()} | set(NOT_READERS)
    assert commands - listed == set(), f"commands with a database URL not in READERS or NOT_READERS: {commands - listed}"


@pytest.mark.parametrize("name", sorted(READERS))
def test_a_locked_history_ends_the_wait_in_one_line_naming_the_holder(db, held, name):
    result = run_dbctl(*READERS[name], "--migrations", str(MIGRATIONS),
                       env={"DATABASE_URL": db.url, **ENV.get(name, {})}, timeout=90)
    assert_clean_error(result, 1, "gave up after 2s waiting for a lock", f"pid {held}", f'"{HOLDER}"',
                       "idle in transaction", "AccessExclusiveLock on _sqlx_migrations",
                       f"pg_terminate_backend({held})")
    # the migration lock is not kept: nobody holds an advisory lock once it has given up
    assert db.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0


def test_lint_does_not_hang_on_a_locked_history(db, held):
    result = run_dbctl("lint", "--migrations", str(MIGRATIONS), env={"DATABASE_URL": db.url}, timeout=90)
    assert result.code in (0, 1) and "Traceback" not in result.output, result.output
    assert "gave up after 10s waiting for a lock" in result.err and f"pid {held}" in result.err, result.err
    assert "linting every file instead" in result.err


def test_production_mode_bounds_the_read_by_its_lock_timeout(db, held):
    result = run_dbctl("migrate", "--migrations", str(MIGRATIONS),
                       env={"DATABASE_URL": db.url, "DBCTL_ENV": "production"}, timeout=90)
    assert_clean_error(result, 1, "gave up after 5s waiting for a lock", f"pid {held}")


def test_once_the_holder_is_gone_the_same_commands_work(db, held):
    db.query(f"SELECT pg_terminate_backend({held})")
    for args in (["migrate"], ["status"], ["verify"]):
        result = run_dbctl(*args, "--migrations", str(MIGRATIONS), env={"DATABASE_URL": db.url})
        assert result.code == 0, result.output


def test_health_names_the_holder_and_150_requests_share_one_check(db, held):
    served = Served(db.url, MIGRATIONS)
    try:
        status, body = served.get()
        assert status == 503
        assert any(f"pid {held}" in p and HOLDER in p for p in body["problems"]), body

        peak = [0]
        stop = threading.Event()

        def count_checks():
            with db.connect() as conn:
                while not stop.is_set():
                    n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbctl-health'"
                                     ).fetchone()[0]
                    peak[0] = max(peak[0], n)

        counter = threading.Thread(target=count_checks)
        counter.start()
        with concurrent.futures.ThreadPoolExecutor(150) as pool:
            answers = list(pool.map(lambda _: served.get(), range(150)))
        stop.set()
        counter.join()
        assert all(code == 503 for code, _ in answers)
        assert all(any(f"pid {held}" in p for p in body["problems"]) for _, body in answers)
        # one check in flight; a finished check's backend may still be listed for a moment while it exits
        assert peak[0] <= 2, f"{peak[0]} health checks were connected at once"
    finally:
        served.stop()
