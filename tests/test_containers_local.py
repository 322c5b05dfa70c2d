"""Each container's command and environment, taken from the rendered YAML, run here against a real PostgreSQL.

`render.local_command` reads the container from the rendered manifests and
supplies only what the cluster would: the Secret's values (pointing at the
test database), /app as this checkout, and the pod name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO, free_port, require
from dbctl.devenv import local_postgres as localpg
from dbctl.k8s import render

POD = "database-migration-x7k2p"


def run_container(workload: str, container: str, url: str, *, overrides=None, timeout: float = 180,
                  pod_name: str = POD) -> subprocess.CompletedProcess:
    command, env = render.local_command(workload, container, database_url=url, app_dir=REPO, pod_name=pod_name,
                                        overrides=overrides)
    return subprocess.run(command, env=_pod_env(env), capture_output=True, text=True, timeout=timeout)


def _pod_env(env: dict) -> dict:
    # Only what the pod has (plus PATH for the interpreter): nothing from this shell leaks in.
    return {"PATH": os.environ["PATH"], **env}


def redis_command(port: int, data_dir: Path) -> list[str]:
    """The redis Deployment's own command line, on a local port and directory, listening on loopback only."""
    (container,) = render.redis_deployment(render.RenderOptions())["spec"]["template"]["spec"]["containers"]
    command = list(container["command"])
    for name, value in (("--port", str(port)), ("--dir", str(data_dir)), ("--bind", "127.0.0.1")):
        command[command.index(name) + 1] = value
    return command


@contextmanager
def redis_server(port: int):
    """A real redis-server started with the Deployment's settings; waits until it answers PING."""
    require(shutil.which("redis-server") is not None,
            "redis-server is not installed (Debian: apt-get install redis-server)")
    data_dir = Path(tempfile.mkdtemp(prefix="dbctl-redis-"))
    proc = subprocess.Popen(redis_command(port, data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 10
        while redis_cli(port, "ping") != "PONG":
            assert proc.poll() is None, f"redis-server refused the rendered settings:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout.strip()


def init_container(url: str, redis_port: int) -> tuple[list[str], dict]:
    """The backend's init container, its Redis URL pointed at a local port."""
    command, env = render.local_command("backend", "wait-and-verify", database_url=url, app_dir=REPO)
    command[command.index("--redis-url") + 1] = f"redis://127.0.0.1:{redis_port}"
    return command, _pod_env(env)


def test_the_commands_come_from_the_rendered_yaml(db):
    command, env = render.local_command("database-migration", "migrate", database_url=db.url, app_dir=REPO,
                                        pod_name=POD)
    (job,) = [d for d in render.migration_documents(render.RenderOptions()) if d["metadata"]["name"] == "database-migration"]
    rendered = job["spec"]["template"]["spec"]["containers"][0]
    assert command[3:] == rendered["command"][1:] and rendered["command"][0] == "dbctl"
    assert set(env) == {e["name"] for e in rendered["env"]}
    assert env["DATABASE_URL"] == db.url and env["PGPASSWORD"] == "s3cret-pw"
    assert env["DBCTL_MIGRATIONS"] == str(REPO / "migrations") and env["POD_NAME"] == POD


def test_migration_job_command_migrates_a_fresh_database(db):
    result = run_container("database-migration", "migrate", db.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "applied 8 migration(s)" in result.stdout
    assert [row[0] for row in db.history()] == list(range(1, 9))
    assert {"users", "artists", "dnp_entries", "user_sessions"} <= db.tables()
    runners = {r[0] for r in db.query("SELECT DISTINCT runner FROM _dbctl_migration_attempts")}
    assert runners == {POD}  # POD_NAME from the downward API names who ran it
    assert "s3cret-pw" not in result.stdout + result.stderr

    again = run_container("database-migration", "migrate", db.url)
    assert again.returncode == 0 and "nothing to apply" in again.stdout


def test_the_backend_has_one_init_container():
    containers = [c for (workload, c) in render.container_commands() if workload == "backend"]
    assert containers == ["wait-and-verify", "backend"]


def test_init_container_fails_before_migration_and_passes_after(db):
    port = free_port()
    with redis_server(port):
        command, env = init_container(db.url, port)
        before = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert before.returncode == 1, before.stdout + before.stderr
        assert "Error: schema not ready: 8 pending migration(s)" in before.stderr
        assert "Traceback" not in before.stderr
        assert f"Redis is ready: redis://127.0.0.1:{port}" in before.stdout

        assert run_container("database-migration", "migrate", db.url).returncode == 0
        after = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert after.returncode == 0, after.stdout + after.stderr
        assert "schema verified: version 8" in after.stdout


def test_init_container_waits_for_postgresql_then_redis_then_verifies():
    """Nothing is up when it starts: it waits for PostgreSQL, then Redis, and verifies what the Job migrated."""
    root = Path(tempfile.mkdtemp(prefix="dbctl-late-pg-"))
    os.chmod(root, 0o755)
    server = localpg.LocalServer(root / "pg", port=free_port(), user="tester", password="s3cret-pw",
                                 database="postgres", durable=False)
    localpg.init(server)  # initialised, not started: nothing listens on its port yet
    redis_port = free_port()
    command, env = init_container(server.url(), redis_port)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()  # it says why it waits, then keeps waiting
        assert "nothing is listening" in first and "****" in first, first
        assert proc.poll() is None
        localpg.start(server)
        # PostgreSQL is up, Redis is not: still waiting (a wrong password or a bad URL would have exited).
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3)
        migrated = run_container("database-migration", "migrate", server.url())
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        with redis_server(redis_port):
            out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        assert f"Redis is ready: redis://127.0.0.1:{redis_port}" in out
        assert "schema verified: version 8" in out
        assert "Traceback" not in err and "s3cret-pw" not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
        localpg.stop(server, mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def test_redis_runs_with_the_rendered_settings():
    """The settings the Deployment states are ones a real redis-server accepts and applies."""
    port = free_port()
    with redis_server(port):
        def config(name):
            lines = redis_cli(port, "config", "get", name).splitlines()
            return lines[1] if len(lines) > 1 else ""

        assert config("protected-mode") == "no"
        assert config("appendonly") == "no" and config("save") == ""
        assert config("maxmemory") == str(96 * 2**20) and config("maxmemory-policy") == "allkeys-lru"


def test_seed_job_command_seeds(db):
    assert run_container("database-migration", "migrate", db.url).returncode == 0
    result = run_container("database-seed", "seed", db.url, pod_name="database-seed-q9w8e")
    assert result.returncode == 0, (
        "the seed Job's command failed" + ("; is `dbctl seed` written yet?" if "No such command" in result.stderr else "")
        + "\n" + result.stdout + result.stderr
    )
    assert db.scalar("SELECT count(*) FROM users WHERE email = 'test@example.com'") == 1
    assert db.scalar("SELECT count(*) FROM artists") > 0


def test_backend_container_serves_health(db):
    assert run_container("database-migration", "migrate", db.url).returncode == 0
    command, env = render.local_command("backend", "backend", database_url=db.url, app_dir=REPO)
    port = free_port()
    command[command.index("--port") + 1] = str(port)  # the pod's 8080 may be taken on this machine
    command[command.index("--host") + 1] = "127.0.0.1"
    proc = subprocess.Popen(command, env=_pod_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving http://127.0.0.1:" in proc.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            body = json.loads(response.read())
        assert response.status == 200 and body["status"] == "ok"
        assert body["schema"]["current_version"] == 8
        (container,) = render.backend_deployment(render.RenderOptions())["spec"]["template"]["spec"]["containers"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):  # every probe the kubelet would send
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{container[probe]['httpGet']['path']}",
                                        timeout=10) as response:
                assert response.status == 200, probe
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0  # SIGTERM from the kubelet is a clean stop


def test_unknown_container_is_refused():
    with pytest.raises(Exception, match="no container backend/nope"):
        render.local_command("backend", "nope", database_url="postgresql://u@h/db", app_dir=REPO)
