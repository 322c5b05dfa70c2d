"""`tilt ci` for real, on a copy of the project: the whole graph comes up green, in both modes.

Without a cluster (`-- --no-cluster`), PostgreSQL is the embedded server of `dbctl dev postgres` in
a private directory on a free port, the backend is `dbctl serve`, Redis is redis-server. On the real
cluster of scripts/cluster, the order is checked from Kubernetes' own timestamps.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil

import psycopg
import pytest

from conftest import namespace_lock, require
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
    assert any(line.startswith("[readiness probe: success]") for line in backend), backend
    assert any('"GET /health HTTP/1.1" 200' in line for line in backend)
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


# ---------------------------------------------------------------- on the real cluster

NAMESPACE = "kiro-dev"


@pytest.fixture
def tilt_on_cluster(tilt_bin, cluster):
    require(tilt_bin.exists(), "Tilt is not built (scripts/build-tilt)")
    with namespace_lock(NAMESPACE):
        cluster.fresh_namespace(NAMESPACE)
        env = TiltEnv(tilt_bin, cluster=cluster)
        try:
            yield env
        finally:
            env.run("down", timeout=300)
            env.remove()


def timestamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def condition_time(obj: dict, kind: str) -> datetime.datetime:
    (cond,) = [c for c in obj["status"]["conditions"] if c["type"] == kind and c["status"] == "True"]
    return timestamp(cond["lastTransitionTime"])


@pytest.mark.timeout(900)
def test_tilt_ci_brings_up_the_cluster_graph_in_the_seed_order(tilt_on_cluster):
    tilt, kubectl = tilt_on_cluster, tilt_on_cluster.cluster.kubectl
    proc = tilt.run("ci", "--timeout", "10m", timeout=700)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "SUCCESS. All workloads are healthy." in out
    assert "applied 8 migration(s)" in " ".join(lines_of(out, "database-migration")), out[-6000:]
    assert "kiro-dev-password" not in out

    def pods(name: str) -> list[dict]:
        found = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/name={name}",
                                   "-o", "json"))["items"]
        assert found, f"no {name} pod"
        return found

    job = json.loads(kubectl("get", "job", "database-migration", "-n", NAMESPACE, "-o", "json"))
    job_created, job_done = timestamp(job["metadata"]["creationTimestamp"]), timestamp(job["status"]["completionTime"])
    postgres_ready = min(condition_time(p, "Ready") for p in pods("postgres"))
    # Kubernetes' timestamps have one-second resolution: "before" is "not after".
    assert postgres_ready <= job_created + datetime.timedelta(seconds=1), (postgres_ready, job_created)
    (migration_pod,) = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l", "job-name=database-migration",
                                          "-o", "json"))["items"]
    migrated = timestamp(migration_pod["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"])
    for pod in pods("backend"):
        (main,) = [c for c in pod["status"]["containerStatuses"] if c["name"] == "backend"]
        started = timestamp(main["state"]["running"]["startedAt"])
        ready = condition_time(pod, "Ready")
        # Tilt applies the backend once the Job's pod succeeded, which may be a moment before the Job
        # controller writes completionTime; the backend's container starts after both.
        assert migrated <= timestamp(pod["metadata"]["creationTimestamp"]), "the backend was created before the migration ended"
        assert job_done <= started <= ready, (job_done, started, ready)
        print(f"Job created -> Complete: {(job_done - job_created).total_seconds():.0f} s; "
              f"Job Complete -> backend Ready: {(ready - job_done).total_seconds():.0f} s")
    # The seed Job is manual: tilt ci never ran it.
    assert kubectl("get", "pods", "-n", NAMESPACE, "-l", "job-name=database-seed", "-o", "name").strip() == ""
