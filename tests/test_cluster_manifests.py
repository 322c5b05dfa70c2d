"""k8s/dev/ on the real cluster (scripts/cluster): the committed manifests applied with kubectl, in Tilt's order.

The kubelet, the API server (with the namespace's "restricted" Pod Security level
enforced), kube-proxy and the cluster DNS are the real ones; the images are the
ones scripts/container-images builds, loaded into the cluster's containerd
(the manifests' imagePullPolicy IfNotPresent finds them there; no registry).

The order is Tilt's: (1) the namespace, Secret and claim, postgres and redis;
(2) the migration Job (the backend's init container, tried first, refuses);
(3) the backend once the Job completed; (4) the seed Job, un-suspended;
(5) the migration Job again (nothing to do); (6) an image with one more
migration: its Job, then the backend rolled while the old one keeps serving;
then the claim across a new postgres pod.

Start-up figures are read from the cluster's own timestamps and printed at the
end of the module (never asserted). Under CI=true a missing cluster or engine
fails these tests instead of skipping them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import namespace_lock
from kiro_cluster import (DEV_MANIFESTS, DOCKER, JOB_MANIFESTS, NAMESPACE, apply_docs, containers_that_ran, delete_job,
                          exec_in, fresh_namespace, get_json, history, http_get, is_true, job_logs, load_docs, only_pod,
                          own_app_image, pods, port_forward, psql, ready_since, seconds, timestamp, wait_job,
                          wait_until)

# Generous: the first test may build Kubernetes and the images cold (minutes each on 2 loaded cores).
pytestmark = pytest.mark.timeout(3600)

APP_IMAGE = "kiro-backend:dev"  # as the manifests name it; the tests deploy this session's build of it
NEXT_IMAGE = "kiro-backend:next-migration"  # that image plus NEW_MIGRATION
NEW_MIGRATION = "009_add_user_nickname.sql"
PASSWORD = "kiro-dev-password"
MIGRATION_JOB, SEED_JOB = "database-migration", "database-seed"


def doc(path: Path, kind: str, name: str) -> dict:
    (found,) = [d for d in load_docs(path) if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def with_image(document: dict, image: str) -> dict:
    """The document with every app-image container on `image`, as Tilt injects the tag of its build."""
    document = json.loads(json.dumps(document))
    spec = document["spec"]["template"]["spec"]
    for container in (spec.get("initContainers") or []) + spec["containers"]:
        if container["image"] == APP_IMAGE:
            container["image"] = image
    return document


def backend_resource(image: str) -> list[dict]:
    """What Tilt's backend resource applies: the Deployment (on `image`) and its Service."""
    return [with_image(doc(DEV_MANIFESTS, "Deployment", "backend"), image), doc(DEV_MANIFESTS, "Service", "backend")]


def pod_log(cluster, pod: dict, container: str) -> str:
    return cluster.kubectl("logs", pod["metadata"]["name"], "-n", NAMESPACE, "-c", container)


# ---- the namespace, held for the whole module; what ran; the figures --------------------------

@pytest.fixture(scope="module")
def kiro(cluster, app_images, pytestconfig):
    """A fresh kiro-dev (no claim, no data), ours alone until the module ends (Tilt's tests use it too)."""
    figures: dict[str, float] = {}
    with namespace_lock(NAMESPACE):
        fresh_namespace(cluster)
        yield SimpleNamespace(cluster=cluster, image=own_app_image(cluster, app_images), ran=set(), figures=figures)
        fresh_namespace(cluster)  # leave the cluster as empty as we found it for the next user of kiro-dev
    print_figures(pytestconfig, figures)


def print_figures(pytestconfig, figures: dict[str, float]) -> None:
    """Onto the terminal, past pytest's capture: figures to read, never to assert."""
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if not (capture and reporter and figures):
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("start-up on the cluster, from its own timestamps (seconds, 1 s resolution):")
        for what, value in figures.items():
            reporter.write_line(f"  {what:<46} {value:3.0f}")


def record_pods(kiro, selector: str) -> list[dict]:
    found = pods(kiro.cluster, selector)
    for pod in found:
        kiro.ran |= containers_that_ran(pod)
    return found


# ---- (1) the namespace, Secret and claim; postgres and redis -----------------------------------

@pytest.fixture(scope="module")
def services(kiro):
    cluster = kiro.cluster
    docs = [d for d in load_docs(DEV_MANIFESTS) if d["metadata"]["name"] != "backend"]
    warnings = apply_docs(cluster, docs)
    cluster.kubectl("wait", "--for=condition=Available", "deployment/postgres", "deployment/redis", "-n", NAMESPACE,
                    "--timeout=600s", timeout=660)
    postgres = only_pod(cluster, "app.kubernetes.io/name=postgres")
    redis = only_pod(cluster, "app.kubernetes.io/name=redis")
    record_pods(kiro, "app.kubernetes.io/part-of=kiro")
    return SimpleNamespace(warnings=warnings, postgres=postgres, redis=redis)


def test_postgres_and_redis_start_and_become_ready(kiro, services):
    cluster = kiro.cluster
    assert "violate" not in services.warnings, services.warnings  # every pod meets the enforced profile
    for pod in (services.postgres, services.redis):
        assert is_true(pod, "Ready"), pod["status"]  # the kubelet's readiness probes passed
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    log = pod_log(cluster, services.postgres, "postgres")
    assert "PostgreSQL init process complete" in log  # the entrypoint's initdb into the empty claim
    # The Secret's POSTGRES_USER/POSTGRES_DB (secretKeyRef) made the role and the database.
    assert psql(cluster, "SELECT current_user || ' ' || current_database()") == "kiro kiro"


def test_the_probes_of_postgres_and_redis_answer(kiro, services):
    """Each probe's own action, run as the kubelet runs it: exec in the container, tcpSocket from the node."""
    cluster = kiro.cluster
    for pod, name in ((services.postgres, "postgres"), (services.redis, "redis")):
        (container,) = doc(DEV_MANIFESTS, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        for probe in ("readinessProbe", "livenessProbe"):
            action = container[probe]
            if "exec" in action:
                proc = exec_in(cluster, pod["metadata"]["name"], name, *action["exec"]["command"])
                assert proc.returncode == 0, (name, probe, proc.stdout + proc.stderr)
            else:  # tcpSocket on a named port, from the node as the kubelet connects
                (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == action["tcpSocket"]["port"]]
                socket.create_connection((pod["status"]["podIP"], port), timeout=5).close()
    assert exec_in(cluster, services.redis["metadata"]["name"], "redis", "redis-cli", "ping").stdout.strip() == "PONG"


def test_the_api_server_refuses_a_pod_outside_the_restricted_profile(kiro, services):
    """The namespace enforces "restricted": the migration Job's pod without its securityContext is refused."""
    template = doc(JOB_MANIFESTS, "Job", MIGRATION_JOB)["spec"]["template"]
    spec = json.loads(json.dumps(template["spec"]))
    spec.pop("securityContext")
    for container in spec["containers"]:
        container.pop("securityContext")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "outside-the-profile", "namespace": NAMESPACE},
           "spec": spec}
    proc = subprocess.run([str(kiro.cluster.bin / "kubectl"), "apply", "--dry-run=server", "-f", "-"],
                          env=kiro.cluster.env, input=json.dumps(pod), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr, proc.stderr
    labels = get_json(kiro.cluster, "namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_postgres_data_is_in_the_claim(kiro, services):
    cluster = kiro.cluster
    claim = get_json(cluster, "pvc", "postgres-data")
    assert claim["status"]["phase"] == "Bound"
    volume = json.loads(cluster.kubectl("get", "pv", claim["spec"]["volumeName"], "-o", "json"))
    on_host = Path(volume["spec"]["hostPath"]["path"]) / "pgdata"  # PGDATA, a subdirectory of the claim
    assert (on_host / "PG_VERSION").is_file()
    assert on_host.stat().st_uid == 999 and oct(on_host.stat().st_mode & 0o777) == "0o700"
    # The socket directory is an emptyDir: the server's socket is there, the root filesystem is read-only.
    pod = services.postgres["metadata"]["name"]
    assert exec_in(cluster, pod, "postgres", "test", "-S", "/var/run/postgresql/.s.PGSQL.5432").returncode == 0


# ---- (2) the migration Job, the backend's init container tried before it -----------------------

def init_container_failure(cluster, pod_name: str) -> tuple[int, str] | None:
    """(exit code, log) of the init container's last failed run, read while the kubelet backs off
    before the next one (then `logs --previous` names a run that is over and whose log is kept)."""
    pod = get_json(cluster, "pod", pod_name)
    (status,) = pod["status"].get("initContainerStatuses") or [{}]
    ended = status.get("lastState", {}).get("terminated")
    if not ended or "waiting" not in status.get("state", {}):
        return None
    proc = subprocess.run([str(cluster.bin / "kubectl"), "logs", pod_name, "-n", NAMESPACE, "-c",
                           status["name"], "--previous"], env=cluster.env, capture_output=True, text=True,
                          timeout=60)
    return (ended["exitCode"], proc.stdout) if proc.returncode == 0 and proc.stdout else None


@pytest.fixture(scope="module")
def first_migration(kiro, services):
    cluster = kiro.cluster
    # The backend applied before the Job: its init container must refuse (the kubelet retries it).
    apply_docs(cluster, backend_resource(kiro.image))
    early = wait_until(lambda: [p for p in pods(cluster, "app.kubernetes.io/name=backend")], "a backend pod")[0]
    refusal = wait_until(lambda: init_container_failure(cluster, early["metadata"]["name"]),
                         "the early backend's init container to fail")
    record_pods(kiro, "app.kubernetes.io/name=backend")
    cluster.kubectl("delete", "deployment", "backend", "-n", NAMESPACE, "--cascade=foreground", "--wait=false")
    cluster.wait_gone("deployment", "backend", NAMESPACE)

    apply_docs(cluster, [with_image(d, kiro.image) for d in load_docs(JOB_MANIFESTS)])  # the seed Job: suspended
    job = wait_job(cluster, MIGRATION_JOB)
    (pod,) = record_pods(kiro, f"job-name={MIGRATION_JOB}")
    kiro.figures["fresh migration Job: created -> Complete"] = seconds(job["metadata"]["creationTimestamp"],
                                                                      job["status"]["completionTime"])
    return SimpleNamespace(refusal=refusal, job=job, pod=pod, log=job_logs(cluster, MIGRATION_JOB))


def test_backend_init_container_refuses_before_the_migration_job(first_migration):
    code, log = first_migration.refusal
    assert code == 1, log
    assert "Error: schema not ready: 8 pending migration(s)" in log
    assert "Traceback" not in log and PASSWORD not in log


def test_migration_job_migrates_the_fresh_database(kiro, first_migration):
    cluster = kiro.cluster
    assert "applied 8 migration(s)" in first_migration.log
    assert PASSWORD not in first_migration.log
    (ended,) = [s["state"]["terminated"] for s in first_migration.pod["status"]["containerStatuses"]]
    assert ended["exitCode"] == 0 and ended["reason"] == "Completed"  # not OOMKilled under its 128Mi
    assert first_migration.job["status"]["succeeded"] == 1 and not first_migration.job["status"].get("failed")
    assert history(cluster) == list(range(1, 9))
    tables = set(psql(cluster, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").split())
    assert {"users", "artists", "dnp_entries", "user_sessions"} <= tables
    # POD_NAME comes from the downward API (fieldRef metadata.name): the attempts name the Job's pod.
    runners = psql(cluster, "SELECT DISTINCT runner FROM _dbctl_migration_attempts").split()
    assert runners == [first_migration.pod["metadata"]["name"]]


def test_the_kubelet_gave_the_job_pod_its_limits(first_migration):
    (container,) = doc(JOB_MANIFESTS, "Job", MIGRATION_JOB)["spec"]["template"]["spec"]["containers"]
    (status,) = first_migration.pod["status"]["containerStatuses"]
    assert status["resources"]["limits"] == container["resources"]["limits"]
    assert status["resources"]["requests"] == container["resources"]["requests"]


# ---- (3) the backend, applied once the Job completed (Tilt's resource_deps) ---------------------

@pytest.fixture(scope="module")
def backend(kiro, first_migration):
    cluster = kiro.cluster
    apply_docs(cluster, backend_resource(kiro.image))
    cluster.kubectl("rollout", "status", "deployment/backend", "-n", NAMESPACE, "--timeout=600s", timeout=660)
    pod = only_pod(cluster, "app.kubernetes.io/name=backend")
    record_pods(kiro, "app.kubernetes.io/name=backend")
    kiro.figures["fresh: Job Complete -> backend pod Ready"] = seconds(
        first_migration.job["status"]["completionTime"], ready_since(pod))
    return SimpleNamespace(pod=pod, name=pod["metadata"]["name"], init_log=pod_log(cluster, pod, "wait-and-verify"))


def test_backend_init_container_passes_after_the_job(backend):
    (status,) = backend.pod["status"]["initContainerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 0
    assert "schema verified: version 8" in backend.init_log
    assert PASSWORD not in backend.init_log


def test_backend_is_ready_and_healthy_through_a_port_forward(kiro, backend):
    (service,) = [d for d in load_docs(DEV_MANIFESTS) if d["kind"] == "Service" and d["metadata"]["name"] == "backend"]
    with port_forward(kiro.cluster, "service/backend", service["spec"]["ports"][0]["port"]) as port:
        status, body = http_get(port, "/health")
        assert status == 200, body
        report = json.loads(body)
        assert report["status"] == "ok"
        assert report["schema"]["current_version"] == 8 and report["schema"]["ok"]
        assert PASSWORD not in body and report["database"]["url"] == "postgresql://kiro:****@postgres:5432/kiro"
        assert http_get(port, "/livez")[0] == 200


def test_backend_answers_through_its_service_name_from_another_pod(kiro, backend, services):
    """Cluster DNS and kube-proxy: `backend:8080` from the redis pod, as the app's pods reach each other."""
    fetch = "import urllib.request; print(urllib.request.urlopen('http://backend:8080/health', timeout=10).status)"
    proc = exec_in(kiro.cluster, services.redis["metadata"]["name"], "redis", "python3", "-c", fetch)
    assert proc.stdout.strip() == "200", proc.stdout + proc.stderr


def test_backend_env_comes_from_the_secret_and_the_pod(kiro, backend):
    printed = exec_in(kiro.cluster, backend.name, "backend", "printenv", "POD_NAME", "PGPASSWORD").stdout.split()
    assert printed == [backend.name, PASSWORD]  # fieldRef metadata.name; secretKeyRef PGPASSWORD


def cgroup_limits(cluster, pod: str, container: str) -> tuple[int, float]:
    """(memory limit in bytes, CPU limit in cores) as the kernel enforces them on the container."""
    script = ("if [ -f /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max; "
              "else cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
              "/sys/fs/cgroup/cpu/cpu.cfs_period_us; fi")
    values = exec_in(cluster, pod, container, "sh", "-c", script).stdout.split()
    return int(values[0]), int(values[1]) / int(values[2])


def quantity_bytes(text: str) -> int:
    return int(text[:-2]) * {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[text[-2:]]


def quantity_cores(text: str) -> float:
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("workload, uid", [("postgres", 999), ("redis", 999), ("backend", 10001)])
def test_running_containers_keep_to_their_security_context_and_limits(kiro, services, backend, workload, uid):
    cluster = kiro.cluster
    pod = only_pod(cluster, f"app.kubernetes.io/name={workload}")
    name = pod["metadata"]["name"]
    (container,) = doc(DEV_MANIFESTS, "Deployment", workload)["spec"]["template"]["spec"]["containers"]
    assert exec_in(cluster, name, workload, "id", "-u").stdout.strip() == str(uid)
    assert exec_in(cluster, name, workload, "touch", "/etc/written").returncode != 0  # read-only root
    assert exec_in(cluster, name, workload, "touch", "/tmp/written").returncode == 0  # the /tmp emptyDir
    no_token = exec_in(cluster, name, workload, "test", "-e", "/var/run/secrets/kubernetes.io/serviceaccount/token")
    assert no_token.returncode != 0  # automountServiceAccountToken: false
    assert "CapEff:\t0000000000000000" in exec_in(cluster, name, workload, "cat", "/proc/self/status").stdout
    memory, cores = cgroup_limits(cluster, name, workload)
    assert memory == quantity_bytes(container["resources"]["limits"]["memory"])
    assert cores == quantity_cores(container["resources"]["limits"]["cpu"])


def test_app_image_is_byte_compiled_with_no_pip(kiro, backend):
    """In the running backend (read-only root): every module it imports comes from a .pyc in the image."""
    check = ("import importlib.util, json, os, sys, importlib.metadata as md\n"
             "md.entry_points(group='console_scripts')['dbctl'].load()\n"
             "import psycopg2, pglast, yaml\n"
             "src = [m.__file__ for m in list(sys.modules.values())\n"
             "       if (getattr(m, '__file__', '') or '').endswith('.py')]\n"
             "no_pyc = [f for f in src if not os.path.exists(importlib.util.cache_from_source(f))]\n"
             "print(json.dumps({'modules': len(src), 'no_pyc': no_pyc,\n"
             "  'pip': importlib.util.find_spec('pip') is not None,\n"
             "  'ensurepip': importlib.util.find_spec('ensurepip') is not None,\n"
             "  'dontwrite': sys.dont_write_bytecode, 'uid': os.getuid()}))\n")
    proc = exec_in(kiro.cluster, backend.name, "backend", "python3", "-c", check)
    facts = json.loads(proc.stdout)
    assert facts["modules"] > 100 and facts["no_pyc"] == []
    assert not facts["pip"] and not facts["ensurepip"]
    assert facts["dontwrite"] and facts["uid"] == 10001


# ---- (4) the seed Job ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seeded(kiro, backend):
    cluster = kiro.cluster
    pods_while_suspended = pods(cluster, f"job-name={SEED_JOB}")
    cluster.kubectl("patch", "job", SEED_JOB, "-n", NAMESPACE, "-p", '{"spec":{"suspend":false}}')
    wait_job(cluster, SEED_JOB)
    record_pods(kiro, f"job-name={SEED_JOB}")
    return SimpleNamespace(pods_while_suspended=pods_while_suspended, log=job_logs(cluster, SEED_JOB))


def test_seed_job_waits_suspended_then_loads_the_development_data(kiro, seeded):
    cluster = kiro.cluster
    assert seeded.pods_while_suspended == []  # applied by kubectl it runs nothing until un-suspended
    emails = psql(cluster, "SELECT string_agg(email, ',' ORDER BY email) FROM users")
    assert emails == "dev@example.com,test@example.com"
    assert int(psql(cluster, "SELECT count(*) FROM artists")) == 3
    assert int(psql(cluster, "SELECT count(*) FROM community_lists")) == 2
    assert PASSWORD not in seeded.log


# ---- (5) the migration Job again -----------------------------------------------------------------

def rerun_migration_job(kiro, image: str | None = None) -> dict:
    """What Tilt does to re-run the Job: delete it, apply it again (on `image`), wait for it."""
    delete_job(kiro.cluster, MIGRATION_JOB)
    apply_docs(kiro.cluster, [with_image(doc(JOB_MANIFESTS, "Job", MIGRATION_JOB), image or kiro.image)])
    job = wait_job(kiro.cluster, MIGRATION_JOB)
    record_pods(kiro, f"job-name={MIGRATION_JOB}")
    return job


@pytest.fixture(scope="module")
def noop_migration(kiro, seeded):
    attempts = psql(kiro.cluster, "SELECT count(*) FROM _dbctl_migration_attempts")
    job = rerun_migration_job(kiro)
    kiro.figures["no-op migration Job: created -> Complete"] = seconds(job["metadata"]["creationTimestamp"],
                                                                      job["status"]["completionTime"])
    return SimpleNamespace(log=job_logs(kiro.cluster, MIGRATION_JOB), attempts_before=attempts)


def test_migration_job_again_changes_nothing(kiro, noop_migration):
    cluster = kiro.cluster
    assert "nothing to apply" in noop_migration.log
    assert history(cluster) == list(range(1, 9))
    assert psql(cluster, "SELECT count(*) FROM _dbctl_migration_attempts") == noop_migration.attempts_before
    assert int(psql(cluster, "SELECT count(*) FROM users")) == 2


# ---- (6) a new migration rolled out while the old backend serves ---------------------------------

def build_image_with_migration(kiro, sql: str) -> None:
    """The app image plus migrations/NEW_MIGRATION, as Tilt rebuilds it after a new file; into the cluster."""
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / NEW_MIGRATION).write_text(sql)
        (Path(context) / "Dockerfile").write_text(f"FROM {kiro.image}\nCOPY {NEW_MIGRATION} /app/migrations/\n")
        subprocess.run([DOCKER, "build", "-q", "-t", NEXT_IMAGE, context], check=True, capture_output=True,
                       timeout=600)
    kiro.cluster.load(NEXT_IMAGE)


def sample_backend(cluster, port: int, pod_name: str) -> dict:
    """What the old backend answers, then what the API says of its pod (so a pod being deleted is seen)."""
    (health, body), livez = http_get(port, "/health"), http_get(port, "/livez")[0]
    pod = get_json(cluster, "pod", pod_name)
    return {"health": health, "why": "" if health == 200 else body[-600:], "livez": livez, "ready": is_true(pod, "Ready"),
            "restarts": pod["status"]["containerStatuses"][0]["restartCount"],
            "leaving": bool(pod["metadata"].get("deletionTimestamp"))}


def new_backend_ready(cluster, old_name: str) -> dict | None:
    fresh = [p for p in pods(cluster, "app.kubernetes.io/name=backend")
             if p["metadata"]["name"] != old_name and is_true(p, "Ready")]
    return fresh[0] if fresh else None


@pytest.fixture(scope="module")
def rollout(kiro, backend, noop_migration):
    cluster = kiro.cluster
    build_image_with_migration(kiro, "ALTER TABLE users ADD COLUMN nickname text;\n")
    old = backend.name
    (container,) = doc(DEV_MANIFESTS, "Deployment", "backend")["spec"]["template"]["spec"]["containers"]
    while_job, while_rolling = [], []
    with port_forward(cluster, f"pod/{old}", 8080) as port:
        while_job.append(sample_backend(cluster, port, old))
        job = rerun_migration_job(kiro, NEXT_IMAGE)
        # Two readiness periods of the old backend against a database one migration ahead of its image.
        until = time.monotonic() + 2 * container["readinessProbe"]["periodSeconds"] + 1
        while time.monotonic() < until:
            while_job.append(sample_backend(cluster, port, old))
            time.sleep(1)
        old_log = pod_log(cluster, backend.pod, "backend")  # what its probes answered, before the pod goes
        # Tilt applies the Deployment again with the new image; the old pod serves until the new one is Ready.
        apply_docs(cluster, backend_resource(NEXT_IMAGE))
        deadline = time.monotonic() + 600
        while (new := new_backend_ready(cluster, old)) is None:
            assert time.monotonic() < deadline, "the new backend did not become Ready within 600 s"
            while_rolling.append(sample_backend(cluster, port, old))
            time.sleep(0.5)
    cluster.kubectl("rollout", "status", "deployment/backend", "-n", NAMESPACE, "--timeout=600s", timeout=660)
    record_pods(kiro, "app.kubernetes.io/name=backend")
    kiro.figures["new migration Job: created -> Complete"] = seconds(job["metadata"]["creationTimestamp"],
                                                                    job["status"]["completionTime"])
    kiro.figures["rollout: new backend pod created -> Ready"] = seconds(new["metadata"]["creationTimestamp"],
                                                                      ready_since(new))
    return SimpleNamespace(job=job, log=job_logs(cluster, MIGRATION_JOB), old=old, new=new,
                           while_job=while_job, while_rolling=[s for s in while_rolling if not s["leaving"]],
                           backend_logs=old_log + pod_log(cluster, new, "backend"),
                           new_init_log=pod_log(cluster, new, "wait-and-verify"))


def test_new_migration_job_applies_while_the_old_backend_runs(kiro, rollout):
    cluster = kiro.cluster
    assert "applied 1 migration(s)" in rollout.log
    assert history(cluster) == list(range(1, 10))
    assert psql(cluster, "SELECT count(*) FROM information_schema.columns "
                         "WHERE table_name = 'users' AND column_name = 'nickname'") == "1"
    assert all(s["restarts"] == 0 for s in rollout.while_job + rollout.while_rolling)


def test_new_backend_rolls_out(kiro, rollout):
    assert "schema verified: version 9" in rollout.new_init_log
    spec = rollout.new["spec"]
    assert {c["image"] for c in spec["containers"] + spec["initContainers"]} == {NEXT_IMAGE}
    kiro.cluster.wait_gone("pod", rollout.old, NAMESPACE)
    assert [p["metadata"]["name"] for p in pods(kiro.cluster, "app.kubernetes.io/name=backend")] == \
        [rollout.new["metadata"]["name"]]


def test_old_backend_stays_live_while_a_new_migration_rolls_out(rollout):
    # Were liveness to report the schema, the kubelet would restart every old backend during every rollout.
    samples = rollout.while_job + rollout.while_rolling
    assert len(rollout.while_job) > 10 and all(s["livez"] == 200 for s in samples), samples


def test_old_backend_stays_ready_while_a_new_migration_rolls_out(rollout):
    # A database migrated by a newer image is no reason to stop sending the old backend traffic.
    samples = rollout.while_job + rollout.while_rolling
    assert all(s["health"] == 200 and s["ready"] for s in samples), (samples, rollout.backend_logs)


def test_no_probe_of_the_kubelet_failed_once_a_pod_was_ready(kiro, backend, rollout):
    """The kubelet's own Unhealthy events: never a liveness failure; readiness and startup probes fail
    only while a pod starts (postgres is not up at once: that is what they are for)."""
    events = get_json(kiro.cluster, "events", "--field-selector", "reason=Unhealthy")["items"]
    assert not [e["message"] for e in events if e["message"].startswith("Liveness probe failed")]
    ready_at = {p["metadata"]["name"]: ready_since(p)
                for p in pods(kiro.cluster, "app.kubernetes.io/part-of=kiro") if is_true(p, "Ready")}
    ready_at[backend.name] = ready_since(backend.pod)  # the old backend, gone since the rollout
    late = [(e["involvedObject"]["name"], e["message"]) for e in events
            if e["involvedObject"]["name"] not in ready_at
            or timestamp(e.get("lastTimestamp") or e["eventTime"]) > timestamp(ready_at[e["involvedObject"]["name"]])]
    assert late == [], rollout.backend_logs  # the backends log each change of their readiness answer, with why


# ---- the claim; every container ran ---------------------------------------------------------------

def test_postgres_keeps_its_data_in_the_claim_across_a_new_pod(kiro, services, rollout):
    cluster = kiro.cluster
    old = only_pod(cluster, "app.kubernetes.io/name=postgres")["metadata"]["name"]
    cluster.kubectl("delete", "pod", old, "-n", NAMESPACE, "--wait=true", timeout=300)
    cluster.kubectl("rollout", "status", "deployment/postgres", "-n", NAMESPACE, "--timeout=600s", timeout=660)
    new = wait_until(lambda: [p for p in pods(cluster, "app.kubernetes.io/name=postgres")
                              if p["metadata"]["name"] != old and is_true(p, "Ready")], "a new postgres pod Ready")[0]
    assert "Skipping initialization" in pod_log(cluster, new, "postgres")
    assert history(cluster) == list(range(1, 10))
    assert int(psql(cluster, "SELECT count(*) FROM users")) == 2


def test_every_container_of_the_manifests_ran(kiro, rollout):
    expected = set()
    for document in load_docs(DEV_MANIFESTS) + load_docs(JOB_MANIFESTS):
        if document["kind"] in ("Deployment", "Job"):
            spec = document["spec"]["template"]["spec"]
            expected |= {(document["metadata"]["name"], c["name"])
                         for c in (spec.get("initContainers") or []) + spec["containers"]}
    assert expected and expected <= kiro.ran, expected - kiro.ran
