"""Every container of k8s/dev/ run for real, the way the kubelet would, in Tilt's order.

The images are the real ones, built by the real engine (scripts/container-engine,
scripts/container-images; both cached): the app image from ./Dockerfile and the
stand-ins for postgres:16-bookworm and redis:7-bookworm. tests/kubelet.py turns
each container of the committed manifests into `docker run` with its
securityContext, env (Secret, fieldRefs), emptyDirs, claims and limits.

The order is Tilt's: (1) postgres and redis, (2) the migration Job, (3) the
backend's init containers, (4) the backend, its /health asked from another
container, (5) the seed Job, (6) the migration Job again (nothing to do),
(7) a new migration rolled out while the old backend runs.

In CI (CI=true) a missing engine or debootstrap is a failure; elsewhere these
tests skip and say why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from kubelet import REPO, Kubelet, docker, engine_and_images, load_manifests, remove_network, why_no_engine

pytestmark = pytest.mark.timeout(1800)  # a cold first run builds the base image (minutes)

MANIFESTS = [REPO / "k8s/dev/dev-manifests.yaml", REPO / "k8s/dev/migration-job.yaml"]
APP_IMAGE = "kiro-backend:dev"
PASSWORD = "kiro-dev-password"
NEW_MIGRATION = "009_add_user_nickname.sql"


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    reason = why_no_engine()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the containers, but: {reason}")
        pytest.skip(f"real containers not run: {reason}")
    try:
        return engine_and_images(sys.executable)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"{exc.cmd[0]} failed (exit {exc.returncode}); its messages are above")


@pytest.fixture(scope="module")
def kubelet(images):
    # A network of this session's own: test sessions sharing the engine must not share the
    # Service names (postgres, redis, backend) that resolve on it.
    network = f"kiro-test-{uuid.uuid4().hex[:8]}"
    docker("network", "create", network)
    base = next(image for name, image in images.items() if name.startswith("kiro-local/"))
    k = Kubelet(load_manifests(*MANIFESTS), network=network, images=images, prober_image=base)
    try:
        yield k
    finally:
        k.close()
        remove_network(network)


def psql(services, sql: str) -> str:
    """A query through psql inside the postgres container (as `kubectl exec` would)."""
    proc = services.postgres.exec("postgres", "psql", "-U", "kiro", "-d", "kiro", "-AtX", "-v", "ON_ERROR_STOP=1",
                                  "-c", sql)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def service_port(kubelet: Kubelet, name: str) -> int:
    (service,) = [d for d in kubelet.docs if d["kind"] == "Service" and d["metadata"]["name"] == name]
    return service["spec"]["ports"][0]["port"]


def history(services) -> list[int]:
    return [int(v) for v in psql(services, "SELECT version FROM _sqlx_migrations ORDER BY version").split()]


# ---- (1) postgres and redis ------------------------------------------------------------------

@pytest.fixture(scope="module")
def services(kubelet):
    postgres, redis = kubelet.pod("postgres"), kubelet.pod("redis")
    postgres.start()
    redis.start()
    return SimpleNamespace(postgres=postgres, redis=redis, postgres_ready=postgres.wait_ready("postgres", 120),
                           redis_ready=redis.wait_ready("redis", 60))


def test_postgres_and_redis_start_and_become_ready(services):
    assert services.postgres_ready.ok, services.postgres.logs("postgres")
    assert services.redis_ready.ok and services.redis_ready.detail == "PONG", services.redis.logs("redis")
    log = services.postgres.logs("postgres")
    assert "PostgreSQL init process complete" in log  # the entrypoint's initdb into the empty claim
    # The Secret's POSTGRES_USER/POSTGRES_DB made the role and the database.
    assert psql(services, "SELECT current_user || ' ' || current_database()") == "kiro kiro"
    # As the manifests say: uid/gid 999, nothing writable but the volumes.
    assert services.postgres.exec("postgres", "id", "-u").stdout.strip() == "999"
    assert services.redis.exec("redis", "id", "-u").stdout.strip() == "999"
    assert services.postgres.exec("postgres", "touch", "/etc/x").returncode != 0
    assert services.postgres.probe("postgres", "livenessProbe").ok
    assert services.redis.probe("redis", "livenessProbe").ok  # tcpSocket from another container


# ---- (2) the migration Job -------------------------------------------------------------------

@pytest.fixture(scope="module")
def first_migration(kubelet, services):
    # Before the Job, the backend's init containers must not all pass (the kubelet retries them).
    early = kubelet.pod("backend")
    inits_before = early.run_init_containers()
    early.delete()
    job = kubelet.pod("database-migration")
    return SimpleNamespace(inits_before=inits_before, pod=job, result=job.run("migrate"))


def test_backend_init_containers_refuse_before_the_migration_job(first_migration):
    last = first_migration.inits_before[-1]
    assert last.code == 1, last.output
    assert "Error: schema not ready: 8 pending migration(s)" in last.err
    assert "Traceback" not in last.output


def test_migration_job_migrates_the_fresh_database(first_migration, services):
    result = first_migration.result
    assert result.code == 0 and not result.oom_killed, result.output
    assert "applied 8 migration(s)" in result.out
    assert PASSWORD not in result.output
    assert history(services) == list(range(1, 9))
    tables = set(psql(services, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").split())
    assert {"users", "artists", "dnp_entries", "user_sessions"} <= tables
    # POD_NAME comes from the downward API (fieldRef metadata.name): the attempts name the pod.
    runners = psql(services, "SELECT DISTINCT runner FROM _dbctl_migration_attempts").split()
    assert runners == [first_migration.pod.name]


# ---- (3) the backend's init containers, (4) the backend ---------------------------------------

@pytest.fixture(scope="module")
def backend(kubelet, first_migration):
    pod = kubelet.pod("backend")
    inits = pod.run_init_containers()
    ready = None
    if inits and all(r.code == 0 for r in inits):
        pod.start()
        ready = pod.wait_ready("backend", 120)
    return SimpleNamespace(pod=pod, inits=inits, ready=ready)


def test_backend_init_containers_pass_after_the_job(backend, kubelet):
    spec = kubelet.workload("backend")["spec"]["template"]["spec"]
    assert [r.container for r in backend.inits] == [c["name"] for c in spec["initContainers"]]
    for r in backend.inits:
        assert r.code == 0, f"{r.container}: {r.output}"
        assert PASSWORD not in r.output
    assert "schema verified: version 8" in backend.inits[-1].out


def test_backend_is_ready_and_healthy_from_another_container(backend, kubelet):
    assert backend.ready is not None and backend.ready.ok, backend.ready and backend.ready.detail
    # Through the Service name, from another container on the network (not from the pod).
    status, body = kubelet.http_get(f"http://backend:{service_port(kubelet, 'backend')}/health", timeout=10)
    assert status == 200, body
    report = json.loads(body)
    assert report["status"] == "ok"
    assert report["schema"]["current_version"] == 8 and report["schema"]["ok"]
    assert PASSWORD not in body and "****" in report["database"]["url"]
    assert backend.pod.probe("backend", "livenessProbe").ok


# ---- (5) the seed Job ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seeded(kubelet, backend):
    # Applied by kubectl the seed Job is suspended; un-suspended (or rendered by Tilt) it runs this.
    pod = kubelet.pod("database-seed")
    return SimpleNamespace(pod=pod, result=pod.run("seed"))


def test_seed_job_loads_the_development_data(seeded, services):
    result = seeded.result
    assert result.code == 0 and not result.oom_killed, result.output
    assert psql(services, "SELECT string_agg(email, ',' ORDER BY email) FROM users") == "dev@example.com,test@example.com"
    assert int(psql(services, "SELECT count(*) FROM artists")) == 3
    assert int(psql(services, "SELECT count(*) FROM community_lists")) == 2
    assert PASSWORD not in result.output


# ---- (6) the migration Job again -------------------------------------------------------------

@pytest.fixture(scope="module")
def noop_migration(kubelet, seeded, services):
    attempts = psql(services, "SELECT count(*) FROM _dbctl_migration_attempts")
    pod = kubelet.pod("database-migration")
    return SimpleNamespace(result=pod.run("migrate"), attempts_before=attempts)


def test_migration_job_again_changes_nothing(noop_migration, services):
    result = noop_migration.result
    assert result.code == 0, result.output
    assert "nothing to apply" in result.out
    assert history(services) == list(range(1, 9))
    assert psql(services, "SELECT count(*) FROM _dbctl_migration_attempts") == noop_migration.attempts_before
    assert int(psql(services, "SELECT count(*) FROM users")) == 2


# ---- (7) a new migration rolled out while the old backend runs ---------------------------------

def build_image_with_migration(kubelet: Kubelet, sql: str) -> str:
    """The app image plus migrations/NEW_MIGRATION, as Tilt rebuilds it after a new file; its ID."""
    base_tag = f"kiro-backend:{kubelet.session}-base"
    new_tag = f"kiro-backend:{kubelet.session}-next"
    docker("tag", kubelet.images[APP_IMAGE], base_tag)
    kubelet.temporary_images += [base_tag, new_tag]
    with tempfile.TemporaryDirectory() as ctx:
        (Path(ctx) / NEW_MIGRATION).write_text(sql)
        (Path(ctx) / "Dockerfile").write_text(f"FROM {base_tag}\nCOPY {NEW_MIGRATION} /app/migrations/\n")
        docker("build", "-q", "-t", new_tag, ctx)
    return docker("image", "inspect", "-f", "{{.Id}}", new_tag).stdout.strip()


@pytest.fixture(scope="module")
def rollout(kubelet, backend, noop_migration, services):
    new_images = {APP_IMAGE: build_image_with_migration(kubelet, "ALTER TABLE users ADD COLUMN nickname text;\n")}
    job = kubelet.pod("database-migration", images=new_images).run("migrate")
    # What the kubelet sees of the old backend while the new one is not rolled out yet:
    # its liveness probe, a few periods in a row (shortened; they are 20 s apart in the manifest).
    liveness = []
    for _ in range(3):
        liveness.append(backend.pod.probe("backend", "livenessProbe"))
        time.sleep(1)
    readiness = backend.pod.probe("backend", "readinessProbe")
    old_state = backend.pod.state("backend")
    new = kubelet.pod("backend", images=new_images)
    new_inits = new.run_init_containers()
    new_ready = None
    if all(r.code == 0 for r in new_inits):
        new.start()
        new_ready = new.wait_ready("backend", 120)
    return SimpleNamespace(job=job, liveness=liveness, readiness=readiness, old_state=old_state,
                           new_inits=new_inits, new_ready=new_ready)


def test_new_migration_job_applies_while_the_old_backend_runs(rollout, services, backend):
    assert rollout.job.code == 0, rollout.job.output
    assert "applied 1 migration(s)" in rollout.job.out
    assert history(services) == list(range(1, 10))
    assert psql(services, "SELECT count(*) FROM information_schema.columns "
                          "WHERE table_name = 'users' AND column_name = 'nickname'") == "1"
    assert rollout.old_state["Running"], backend.pod.logs("backend")
    assert all("HTTP 0" not in p.detail for p in rollout.liveness), rollout.liveness  # it still answers


def test_new_backend_rolls_out(rollout):
    assert rollout.new_inits and all(r.code == 0 for r in rollout.new_inits), [r.output for r in rollout.new_inits]
    assert "schema verified: version 9" in rollout.new_inits[-1].out
    assert rollout.new_ready is not None and rollout.new_ready.ok, rollout.new_ready


def test_old_backend_stays_live_while_a_new_migration_rolls_out(rollout):
    # Were liveness to report the schema, the kubelet would restart every old backend during
    # every rollout (failureThreshold x periodSeconds after the new migration).
    assert all(p.ok for p in rollout.liveness), [p.detail[:300] for p in rollout.liveness]


def test_old_backend_stays_ready_while_a_new_migration_rolls_out(rollout):
    # A database migrated by a newer image is no reason to stop sending the old backend traffic.
    assert rollout.readiness.ok, rollout.readiness.detail[:2000]


# ---- the claim, and coverage ------------------------------------------------------------------

def test_postgres_keeps_its_data_in_the_claim_across_a_new_pod(kubelet, services, rollout):
    services.postgres.delete()
    services.postgres = kubelet.pod("postgres")
    services.postgres.start()
    assert services.postgres.wait_ready("postgres", 120).ok, services.postgres.logs("postgres")
    assert "Skipping initialization" in services.postgres.logs("postgres")
    assert history(services) == list(range(1, 10))


def test_every_container_of_the_manifests_ran(kubelet, rollout):
    expected = set()
    for doc in load_manifests(*MANIFESTS):
        if doc["kind"] in ("Deployment", "Job"):
            spec = doc["spec"]["template"]["spec"]
            expected |= {(doc["metadata"]["name"], c["name"])
                         for c in (spec.get("initContainers") or []) + spec["containers"]}
    assert expected and expected <= set(kubelet.ran), expected - set(kubelet.ran)


# ---- the app image itself --------------------------------------------------------------------

def test_app_image_is_byte_compiled_with_no_pip(images):
    # Read-only root, as in the pods: every module imported must come from a .pyc built into the image.
    check = ("import importlib.util, os, sys, importlib.metadata as md\n"
             "ep = md.entry_points(group='console_scripts')['dbctl']; ep.load()\n"
             "import psycopg, psycopg2, pglast, yaml\n"
             "src = [m.__file__ for m in list(sys.modules.values()) if (getattr(m, '__file__', '') or '').endswith('.py')]\n"
             "print(json.dumps({'modules': len(src), 'no_pyc': [f for f in src if not os.path.exists(importlib.util.cache_from_source(f))],\n"
             "  'pip': importlib.util.find_spec('pip') is not None, 'ensurepip': importlib.util.find_spec('ensurepip') is not None,\n"
             "  'dontwrite': sys.dont_write_bytecode, 'uid': os.getuid()}))\n")
    proc = docker("run", "--rm", "--read-only", "--network", "none", "--entrypoint", "python3", images[APP_IMAGE],
                  "-c", "import json\n" + check)
    facts = json.loads(proc.stdout)
    assert facts["modules"] > 100 and facts["no_pyc"] == []
    assert not facts["pip"] and not facts["ensurepip"]
    assert facts["dontwrite"] and facts["uid"] == 10001
