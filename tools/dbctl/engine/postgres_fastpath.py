"""The no-op fast path of `dbctl migrate`: is there nothing at all to do?

Most runs of `dbctl migrate` (every `tilt up`, every Job re-run) find the
database already up to date. Importing psycopg 3 alone takes about 0.12 s
here, most of a 0.15 s budget for that run, so this read-only check uses
psycopg2 (the same project's C driver, about 0.02 s to import) and never
imports psycopg 3. It only ever answers "up to date" or "ask the engine":
any doubt (an error, no history tables, anything pending, modified, missing
or dirty) returns None and the full engine in `migrator` decides, with its
lock, waiting, refusals and messages unchanged. Reading without the lock is
safe because history rows only ever appear when their migration committed.

The check runs in a forked child: psycopg2 brings its own copies of libpq and
OpenSSL (about 12 MiB resident), which would otherwise stay in the process
that goes on to apply migrations with psycopg 3 and push its peak RSS past
the Job's budget.
"""

from __future__ import annotations

import os

from dbctl.engine import plan as planning
from dbctl.engine.source import MigrationSet

_READ = """
SELECT set_config('lock_timeout', %s, false) IS NOT NULL AND
       to_regclass('_sqlx_migrations') IS NOT NULL AND to_regclass('_dbctl_migration_attempts') IS NOT NULL
"""
# A lock on the history makes the fast path give up this soon and leave the wait (bounded, and explained)
# to the engine.
MAX_WAIT = 1.0
_HISTORY = "SELECT version, description, checksum, success FROM _sqlx_migrations ORDER BY version"


def up_to_date_version(url: str, migrations: MigrationSet, target: int | None = None,
                       lock_wait: float = MAX_WAIT) -> int | None:
    """The database's version when nothing needs applying or refusing; None when the engine must look.

    Waits at most min(lock_wait, MAX_WAIT) seconds for a lock another session holds on the history."""
    if target is not None and target not in migrations.by_version():
        return None  # the engine explains the bad --target
    if not hasattr(os, "fork"):
        return _check(url, migrations, target, lock_wait)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, never return into the CLI
        try:
            os.close(read_end)
            version = _check(url, migrations, target, lock_wait)
            os.write(write_end, b"" if version is None else str(version).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        data = answer.read()
    os.waitpid(pid, 0)
    return int(data) if data else None


def _check(url: str, migrations: MigrationSet, target: int | None, lock_wait: float) -> int | None:
    try:
        import psycopg2
    except ImportError:  # an install without the fast path still works, a little slower
        return None
    try:
        conn = psycopg2.connect(url, connect_timeout=3, application_name="dbctl migrate (check)",
                                client_encoding="UTF8")  # as the engine and sqlx connect
    except Exception:  # the engine waits, retries and explains connection problems
        return None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(_READ, (f"{max(1, round(min(lock_wait, MAX_WAIT) * 1000))}ms",))
            if not cur.fetchone()[0]:
                return None
            cur.execute(_HISTORY)
            rows = cur.fetchall()
    except Exception:
        return None
    finally:
        conn.close()
    history = [planning.AppliedRow(v, d, bytes(c), s) for v, d, c, s in rows]
    plan = planning.build_plan(migrations.ups, history, {}, target)
    if not planning.judge(plan).ok:  # the same verdict as the engine's; the engine explains it
        return None
    return plan.current_version
