"""`tilt ci -- --no-cluster` for real: the whole no-cluster graph comes up green, on a copy of the project.

PostgreSQL is the embedded server of `dbctl dev postgres` in a private directory on a free port;
the backend is `dbctl serve`, ready when its /readyz answers; Redis is redis-server.
"""

from __future__ import annotations

import re
import shutil

import psycopg
import pytest

from conftest import require
from dbctl.devenv import local_postgres as localpg
from tilt_env import TiltEnv

TRIGGERS = ["db-migrate", "db-seed", "db-reset", "db-status", "dev-setup", "health-check"]


@pytest.fixture
def tilt(tilt_bin):
    require(tilt_bin.exists(), "Tilt is not built (scripts/build-tilt)")
    require(shutil.which("redis-server") is not None, "redis-server is not installed (apt-get install redis-server)")
    env = TiltEnv(tilt_bin)
    yield env
    env.down()
    env.remove()


def lines_of(output: str, resource: str) -> list[str]:
    """Tilt's log lines of one resource (prefixed `name │`, long names cut to 12 characters and `…`)."""
    prefix = resource if len(resource) <= 13 else resource[:12] + "…"
    return [line.split("│", 1)[1].strip() for line in output.splitlines()
            if re.match(rf"\s*{re.escape(prefix)} │", line)]


def test_tilt_ci_brings_up_the_no_cluster_graph(tilt):
    proc = tilt.run("ci", "--timeout", "3m", "--", "--no-cluster", timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "SUCCESS. All workloads are healthy." in out

    assert any(line.startswith("[readiness probe: success] ready: postgresql://kiro:****@127.0.0.1:")
               for line in lines_of(out, "postgres"))
    assert any("Ready to accept connections" in line for line in lines_of(out, "redis"))
    migration = lines_of(out, "database-migration")
    assert "applied 8 migration(s)" in " ".join(migration), migration
    backend = lines_of(out, "backend")
    # The probe asks /readyz, whose body is one line: Tilt prints a probe's body line by line.
    probe_lines = [line for line in backend if line.startswith("[readiness probe: success]")]
    assert probe_lines == ["[readiness probe: success] ready: schema at version 8, every migration applied"], backend
    assert any('"GET /readyz HTTP/1.1" 200' in line for line in backend)
    # Manual resources never run in tilt ci: no trigger, no seed Job.
    for name in ["database-seed", *TRIGGERS]:
        assert lines_of(out, name) == [], name
    assert "kiro:kiro@" not in out  # the password never reaches Tilt's log

    # Tilt stopped the embedded server when it finished.
    assert not tilt.pg_running()
    # What it left in the database: every migration applied, no seed data.
    localpg.start(tilt.server)
    try:
        with psycopg.connect(tilt.server.url(), autocommit=True) as conn:
            history = conn.execute("SELECT version, success FROM _sqlx_migrations ORDER BY version").fetchall()
            users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    finally:
        localpg.stop(tilt.server)
    assert history == [(v, True) for v in range(1, 9)]
    assert users == 0
