"""End to end on kind: build the image, apply k8s/dev, migrate, start the backend, seed.

Runs only where a Docker engine answers and `kind` and `kubectl` are on PATH;
elsewhere it skips and says which is missing. pytest-kind-ng drives the
cluster (created once, deleted afterwards unless DBCTL_KEEP_KIND=1).

    .venv/bin/pytest tests/test_kind_e2e.py -v      # about 3-5 minutes the first time
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from dbctl.k8s import render

IMAGE = "kiro-backend:e2e"
NS = "kiro-dev"
CLUSTER = "dbctl-e2e"


def _missing() -> str | None:
    if not shutil.which("docker"):
        return "docker is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no answer"])[-1]
        return f"no Docker engine (`docker info` failed: {reason})"
    for tool in ("kind", "kubectl"):
        if not shutil.which(tool):
            return f"{tool} is not on PATH (install it to run the kind end-to-end test)"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(f"kind end-to-end test not run: {reason}")
    from pytest_kind import KindCluster

    # The Dockerfile builds offline from a local base image and host-built wheels, which this script makes.
    subprocess.run([str(REPO / "scripts/container-images")], env={**os.environ, "APP_IMAGE": IMAGE}, check=True,
                   stdout=subprocess.DEVNULL)
    workdir = tmp_path_factory.mktemp("kind")
    here = os.getcwd()
    os.chdir(workdir)  # pytest-kind-ng makes ./.pytest-kind/<name>: keep it out of the checkout
    try:
        kind = KindCluster(CLUSTER, workdir / "kubeconfig", kind_path=Path(shutil.which("kind")),
                           kubectl_path=Path(shutil.which("kubectl")))
    finally:
        os.chdir(here)
    kind.create()
    try:
        kind.load_docker_image(IMAGE)
        yield kind
    finally:
        if os.environ.get("DBCTL_KEEP_KIND") != "1":
            kind.delete()


def test_migrate_start_backend_and_seed_on_kind(cluster, tmp_path):
    manifests = tmp_path / "k8s"
    render.write(manifests, render.make_options(image=IMAGE, image_pull_policy="Never"))
    cluster.kubectl("apply", "-f", str(manifests))

    try:
        cluster.kubectl("wait", "--for=condition=complete", "job/database-migration", "-n", NS, "--timeout=600s")
        cluster.kubectl("rollout", "status", "deployment/backend", "-n", NS, "--timeout=600s")
    except subprocess.CalledProcessError:
        print(cluster.kubectl("get", "pods,jobs", "-n", NS, "-o", "wide"))
        print(cluster.kubectl("logs", "job/database-migration", "-n", NS, "--all-containers"))
        raise
    logs = cluster.kubectl("logs", "job/database-migration", "-n", NS)
    assert "applied 8 migration(s)" in logs

    health = cluster.kubectl("exec", "deployment/backend", "-n", NS, "--", "python", "-c",
                             "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8080/health').read().decode())")
    assert '"status": "ok"' in health

    # The seed Job was applied suspended: no pod until it is un-suspended.
    assert cluster.kubectl("get", "pods", "-n", NS, "-l", "job-name=database-seed", "-o", "name").strip() == ""
    cluster.kubectl("patch", "job", "database-seed", "-n", NS, "-p", '{"spec":{"suspend":false}}')
    cluster.kubectl("wait", "--for=condition=complete", "job/database-seed", "-n", NS, "--timeout=300s")

    count = cluster.kubectl("exec", "deployment/postgres", "-n", NS, "--", "psql", "-U", "kiro", "-d", "kiro", "-tAc",
                            "SELECT count(*) FROM users WHERE email = 'test@example.com'")
    assert count.strip() == "1"
    tables = cluster.kubectl("exec", "deployment/postgres", "-n", NS, "--", "psql", "-U", "kiro", "-d", "kiro",
                             "-c", "\\dt")
    assert "users" in tables and "_sqlx_migrations" in tables
