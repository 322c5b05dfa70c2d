"""The kiro-dev namespace on the real cluster (conftest's `cluster` fixture): small helpers for the
tests that apply k8s/dev/ there and run the README's kubectl steps.

Everything is read back from Kubernetes itself (kubectl get -o json, logs, exec, port-forward).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import yaml

from conftest import REPO, Cluster

NAMESPACE = "kiro-dev"
DEV_MANIFESTS = REPO / "k8s/dev/dev-manifests.yaml"
JOB_MANIFESTS = REPO / "k8s/dev/migration-job.yaml"
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else (shutil.which("docker") or "docker")
CLAIM_VOLUME = f"pv-{NAMESPACE}-postgres-data"  # the name scripts/cluster's provisioner gives it


def own_app_image(cluster: Cluster, app_images: dict[str, str]) -> str:
    """This session's kiro-backend:dev under a tag naming its ID, loaded into the cluster.

    kiro-backend:dev is one tag for every checkout and test session on the machine, and another
    one's build may move it at any moment; Tilt likewise deploys a tag of its own for each build.
    """
    image_id = app_images["kiro-backend:dev"]
    tag = f"kiro-backend:id-{image_id.removeprefix('sha256:')[:12]}"
    subprocess.run([DOCKER, "tag", image_id, tag], check=True, capture_output=True, timeout=60)
    cluster.load(tag)
    return tag


def load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def apply_docs(cluster: Cluster, docs: list[dict]) -> str:
    """kubectl apply of these documents; its stderr (PodSecurity warnings land there)."""
    proc = subprocess.run([str(cluster.bin / "kubectl"), "apply", "-f", "-"], env=cluster.env,
                          input=yaml.safe_dump_all(docs, sort_keys=False), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def get_json(cluster: Cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-n", NAMESPACE, "-o", "json"))


def fresh_namespace(cluster: Cluster) -> None:
    """No kiro-dev at all, its claim's volume (and so PostgreSQL's data) deleted with it."""
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
    cluster.wait_gone("namespace", NAMESPACE, NAMESPACE, timeout=300)
    cluster.wait_gone("pv", CLAIM_VOLUME, NAMESPACE, timeout=120)


def wait_until(check, what: str, timeout: float = 300, every: float = 1.0):
    """Poll `check` until it returns something truthy; that value. A timeout is a failure naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(every)


def pods(cluster: Cluster, selector: str) -> list[dict]:
    return get_json(cluster, "pods", "-l", selector)["items"]


def only_pod(cluster: Cluster, selector: str) -> dict:
    """The one pod of a selector that is not being deleted."""
    live = [p for p in pods(cluster, selector) if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, [p["metadata"]["name"] for p in live]
    return live[0]


def condition(obj: dict, kind: str) -> dict | None:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == kind), None)


def is_true(obj: dict, kind: str) -> bool:
    found = condition(obj, kind)
    return bool(found and found["status"] == "True")


def wait_job(cluster: Cluster, name: str, timeout: int = 600) -> dict:
    """Wait for the Job to complete (failing on its Failed condition); its JSON."""
    def finished():
        job = get_json(cluster, "job", name)
        assert not is_true(job, "Failed"), (condition(job, "Failed"), job_logs(cluster, name))
        return job if is_true(job, "Complete") else None
    return wait_until(finished, f"Job {name} complete", timeout)


def job_logs(cluster: Cluster, name: str) -> str:
    return cluster.kubectl("logs", f"job/{name}", "-n", NAMESPACE, "--all-containers", check=False)


def delete_job(cluster: Cluster, name: str) -> None:
    """As Tilt re-runs a Job: delete it (its pods with it) and wait until it is gone."""
    cluster.kubectl("delete", "job", name, "-n", NAMESPACE, "--ignore-not-found", "--cascade=foreground",
                    "--wait=false")
    cluster.wait_gone("job", name, NAMESPACE)


def psql(cluster: Cluster, sql: str, database: str = "kiro") -> str:
    """A query through psql in the postgres pod, as `kubectl exec deployment/postgres` does."""
    return cluster.kubectl("exec", "deployment/postgres", "-n", NAMESPACE, "--", "psql", "-U", "kiro", "-d", database,
                           "-AtX", "-v", "ON_ERROR_STOP=1", "-c", sql).strip()


def history(cluster: Cluster) -> list[int]:
    return [int(v) for v in psql(cluster, "SELECT version FROM _sqlx_migrations ORDER BY version").split()]


def exec_in(cluster: Cluster, pod: str, container: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(cluster.bin / "kubectl"), "exec", pod, "-n", NAMESPACE, "-c", container, "--",
                           *command], env=cluster.env, capture_output=True, text=True, timeout=120)


@contextmanager
def port_forward(cluster: Cluster, target: str, remote: int, local: int = 0):
    """`kubectl port-forward TARGET LOCAL:REMOTE`; yields the local port (a free one by default)."""
    proc = subprocess.Popen([str(cluster.bin / "kubectl"), "port-forward", target, f"{local or ''}:{remote}",
                             "-n", NAMESPACE], env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        first = proc.stdout.readline()
        found = re.search(r"127\.0\.0\.1:(\d+)", first)
        if not found:
            proc.terminate()
            raise AssertionError(f"kubectl port-forward {target}: {first}{proc.communicate(timeout=30)[1]}")
        yield int(found.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def http_get(port: int, path: str, timeout: float = 10) -> tuple[int, str]:
    """(status, body); status 0 with the reason when nothing answered."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def seconds(start: str, end: str) -> float:
    return (timestamp(end) - timestamp(start)).total_seconds()


def ready_since(pod: dict) -> str:
    """When the pod's Ready condition last turned True (the kubelet's own timestamp)."""
    ready = condition(pod, "Ready")
    assert ready and ready["status"] == "True", pod["status"]
    return ready["lastTransitionTime"]


def containers_that_ran(pod: dict) -> set[tuple[str, str]]:
    """(workload, container) for each container of the pod that started at least once."""
    workload = (pod["metadata"].get("labels") or {}).get("app.kubernetes.io/name", "?")
    statuses = (pod["status"].get("initContainerStatuses") or []) + (pod["status"].get("containerStatuses") or [])
    return {(workload, s["name"]) for s in statuses
            if "running" in s.get("state", {}) or "terminated" in s.get("state", {})
            or "terminated" in s.get("lastState", {})}
