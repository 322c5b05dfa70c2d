"""Each trigger's command, taken from the Tiltfile in no-cluster mode, run for real.

The extension is evaluated with free ports; its own `postgres` serve_cmd starts a private embedded
PostgreSQL (KIRO_PG_DIR/KIRO_PG_PORT in a temporary directory), and the commands run exactly as Tilt
would run them: the resource's argv, its dir and its env.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, free_port
from tilt_harness import evaluate

EXTENSION = REPO / "tilt_extensions" / "db_migrations" / "Tiltfile"


class Env:
    def __init__(self, root: Path):
        self.root = root
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.backend_port = free_port()
        self.vars = {k: v for k, v in os.environ.items() if not k.startswith(("DBCTL_", "DATABASE_URL", "PG"))}
        self.vars.update(KIRO_PG_DIR=str(root / "pg"), KIRO_PG_PORT=str(self.pg_port))
        tiltfile = root / "Tiltfile"
        tiltfile.write_text(
            f"load({str(EXTENSION)!r}, 'db_migrations')\n"
            f"db_migrations(no_cluster=True, dbctl={[str(Path(sys.executable).parent / 'dbctl')]!r},\n"
            f"              redis_port={self.redis_port}, backend_port={self.backend_port}, project_dir={str(REPO)!r})\n")
        self.graph = evaluate(tiltfile, env=self.vars)
        self.procs: list[subprocess.Popen] = []

    def resource(self, name):
        return self.graph.resources[name]

    def run(self, name: str, extra_env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        """The resource's `cmd`, as Tilt runs it."""
        res = self.resource(name)
        return subprocess.run(res.cmd, cwd=res.dir, env={**self.vars, **res.env, **(extra_env or {})},
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def serve(self, name: str) -> subprocess.Popen:
        """The resource's `serve_cmd`, then wait until its readiness probe passes."""
        res = self.resource(name)
        proc = subprocess.Popen(res.serve_cmd, cwd=res.serve_dir, env={**self.vars, **res.serve_env},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 90
        while not self._ready(res.readiness_probe.fields):
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited: {proc.stdout.read()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} never became ready")
            time.sleep(0.3)
        return proc

    def _ready(self, probe: dict) -> bool:
        import socket
        import urllib.request

        if probe["exec"] is not None:
            return subprocess.run(probe["exec"].fields["command"], env=self.vars, capture_output=True).returncode == 0
        if probe["tcp_socket"] is not None:
            f = probe["tcp_socket"].fields
            try:
                socket.create_connection((f["host"], f["port"]), timeout=1).close()
                return True
            except OSError:
                return False
        f = probe["http_get"].fields
        try:
            with urllib.request.urlopen(f"{f['scheme']}://{f['host']}:{f['port']}{f['path']}", timeout=2) as r:
                return 200 <= r.status < 400
        except OSError:
            return False

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.fixture(scope="module")
def env():
    root = Path(tempfile.mkdtemp(prefix="dbctl-tilt-"))
    os.chmod(root, 0o755)  # the server may run as `postgres`
    e = Env(root)
    e.serve("postgres")
    yield e
    e.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def empty_database(env):
    """Each test starts from an empty database (the tests share one server)."""
    from psycopg import sql

    from dbctl.devenv import local_postgres as localpg
    from dbctl.engine import postgres

    server = localpg.LocalServer(Path(env.vars["KIRO_PG_DIR"]), env.pg_port)
    with postgres.connect(server.url("postgres")) as conn:
        conn.autocommit = True
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(server.database)))
        conn.execute(postgres.create_database_sql(server.database))


def test_startup_migration_then_status_shows_history(env):
    first = env.run("database-migration")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "applied 8 migration(s)" in first.stdout
    status = env.run("db-status")
    assert status.returncode == 0, status.stderr
    for line in ("initial schema", "audit logging and rate limiting"):
        assert line in status.stdout
    assert "applied" in status.stdout and "pending" not in status.stdout
    assert "kiro:kiro" not in status.stdout + status.stderr  # password masked


def test_db_migrate_applies_a_new_migration_file(env, migrations_dir):
    assert env.run("database-migration").returncode == 0
    (migrations_dir / "009_add_user_nickname.sql").write_text("ALTER TABLE users ADD COLUMN nickname TEXT;\n")
    moved = {"DBCTL_MIGRATIONS": str(migrations_dir)}
    result = env.run("db-migrate", moved)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "applied 1 migration(s)" in result.stdout and "version 9" in result.stdout
    status = env.run("db-status", moved)
    assert "add user nickname" in status.stdout
    again = env.run("db-migrate", moved)
    assert again.returncode == 0 and "nothing to apply" in again.stdout


def test_db_migrate_fails_red_on_a_broken_migration(env, migrations_dir):
    (migrations_dir / "010_broken.sql").write_text("ALTER TABLE no_such_table ADD COLUMN x INT;\n")
    result = env.run("db-migrate", {"DBCTL_MIGRATIONS": str(migrations_dir)})
    assert result.returncode == 1
    assert "Error:" in result.stderr and "010_broken.sql" in result.stderr and "Traceback" not in result.stderr


def test_db_reset_refuses_without_confirmation_then_resets(env):
    assert env.run("database-migration").returncode == 0
    refused = env.run("db-reset")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Error:" in refused.stderr and "trigger it again" in refused.stderr
    still = env.run("db-status")
    assert "applied" in still.stdout  # nothing was dropped
    confirmed = env.run("db-reset")
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert "dropped and re-created" in confirmed.stdout
    assert "tilt trigger db-seed" in confirmed.stdout  # seeding is offered
    assert "initial schema" in env.run("db-status").stdout


def test_db_reset_button_is_confirmed_and_can_seed(env):
    button = env.graph.cmds["btn-db-reset"]
    proc = subprocess.run(button["args"], cwd=button["dir"], capture_output=True, text=True, timeout=180,
                          env={**env.vars, **dict(v.split("=", 1) for v in button["env"]), "DBCTL_RESET_SEED": "1"},
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dropped and re-created" in proc.stdout and "seed" in proc.stdout.lower()


def test_db_seed_loads_the_dev_data(env):
    assert env.run("database-migration").returncode == 0
    result = env.run("db-seed")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "seed" in result.stdout.lower()


def test_health_check_and_dev_setup(env):
    assert env.run("database-migration").returncode == 0
    down = env.run("health-check")
    assert down.returncode == 1
    assert "FAIL backend" in down.stdout and "fix:" in down.stdout
    if "redis" in env.graph.resources:
        env.serve("redis")
    env.serve("backend")
    up = env.run("health-check")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "ok   PostgreSQL" in up.stdout and "ok   migrations" in up.stdout and "answered 200" in up.stdout
    setup = env.run("dev-setup")
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "tool PostgreSQL server" in setup.stdout
