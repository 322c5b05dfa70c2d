"""The README's kubectl steps and scripts, run on the real cluster exactly as the README prints them.

The commands are read from the README's code blocks (never retyped here), and
each runs through `bash -c` in the checkout, with the environment of a
developer who exported the cluster's KUBECONFIG (its kubectl first on PATH).
They are the original system's manual operations: the migration Job's logs
and description, the seed Job un-suspended, `\\dt` through `kubectl exec`,
the manual reset, scripts/test-migration-job.sh and scripts/verify-migration-setup.sh.
Under CI=true a missing cluster or engine fails these tests instead of skipping them.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
from types import SimpleNamespace

import pytest

from conftest import REPO, namespace_lock, require
from kiro_cluster import (DOCKER, NAMESPACE, fresh_namespace, get_json, history, is_true, pods, port_forward, psql,
                          wait_job, wait_until)

pytestmark = pytest.mark.timeout(3600)  # the first test may build Kubernetes and the images cold

README = REPO / "README.md"
# The original system's document printed these; the README must print them the same way.
ORIGINAL_STEPS = [
    "kubectl logs job/database-migration -n kiro-dev",
    "kubectl describe job database-migration -n kiro-dev",
    "kubectl patch job database-seed -n kiro-dev -p '{\"spec\":{\"suspend\":false}}'",
    'kubectl exec deployment/postgres -n kiro-dev -- psql -U kiro -d kiro -c "\\\\dt"',
    "kubectl delete job database-migration database-seed -n kiro-dev --ignore-not-found=true",
    "./scripts/verify-migration-setup.sh",
    "./scripts/test-migration-job.sh",
]
# Its reset ran both statements in one -c; the README says why that cannot work and prints two -c's.
ORIGINAL_RESET = ('kubectl exec deployment/postgres -n kiro-dev -- psql -U kiro -d postgres '
                  '-c "DROP DATABASE IF EXISTS kiro; CREATE DATABASE kiro;"')


# ---- the README's code blocks ----------------------------------------------------------------

def sections() -> dict[str, list[str]]:
    """{heading: the lines of the fenced code blocks under it (up to the next heading)}."""
    found: dict[str, list[str]] = {}
    heading, fenced = "", False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            found.setdefault(heading, []).append(line)
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
    return found


def commands(heading: str) -> list[str]:
    """The shell commands of a section's code blocks: kubectl and the project's scripts, as printed."""
    lines = sections()[heading]
    return [line for line in lines if re.match(r"(kubectl|\./scripts/|scripts/)\S*\s?", line)]


def command(heading: str, start: str) -> str:
    (found,) = [line for line in commands(heading) if line.startswith(start)]
    return found


def run(cluster, line: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The line as a developer types it: bash, in the checkout, with the cluster's KUBECONFIG and kubectl."""
    return subprocess.run(["bash", "-c", line], cwd=REPO, env=cluster.env, capture_output=True, text=True,
                          timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.args[-1]}\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def test_the_readme_prints_the_original_steps_as_they_were():
    printed = [line for lines in sections().values() for line in lines]
    for step in ORIGINAL_STEPS:
        assert any(line == step or line.startswith(step + " ") for line in printed), step


# ---- the environment, applied as the README says ------------------------------------------------

@pytest.fixture(scope="module")
def kiro(cluster):
    with namespace_lock(NAMESPACE):
        fresh_namespace(cluster)
        yield cluster
        fresh_namespace(cluster)


@pytest.fixture(scope="module")
def applied(kiro, app_images):
    """The "Kubernetes" section's block: images into the cluster, then `kubectl apply -f k8s/dev/`."""
    # kiro-backend:dev is one tag for every checkout on this machine: point it at this one's build again.
    subprocess.run([DOCKER, "tag", app_images["kiro-backend:dev"], "kiro-backend:dev"], check=True, timeout=60)
    outputs = [ok(run(kiro, line)) for line in commands("Kubernetes")]
    wait_job(kiro, "database-migration")
    kiro.kubectl("rollout", "status", "deployment/backend", "-n", NAMESPACE, "--timeout=600s", timeout=660)
    return outputs


def test_kubectl_apply_of_k8s_dev_brings_everything_up(kiro, applied):
    assert any(line.startswith("kubectl apply -f k8s/dev/") for line in commands("Kubernetes"))
    assert "job.batch/database-migration created" in applied[-1]
    assert history(kiro) == list(range(1, 9))
    seed = get_json(kiro, "job", "database-seed")
    assert seed["spec"]["suspend"] is True and pods(kiro, "job-name=database-seed") == []


def test_troubleshooting_commands(kiro, applied):
    logs = ok(run(kiro, command("Troubleshooting", "kubectl logs job/database-migration")))
    assert "applied 8 migration(s)" in logs
    described = ok(run(kiro, command("Troubleshooting", "kubectl describe job database-migration")))
    assert re.search(r"Pods Statuses:\s+0 Active .* 1 Succeeded / 0 Failed", described), described
    assert "Completed" in described or "Complete" in described
    init = ok(run(kiro, command("Troubleshooting", "kubectl logs deployment/backend")))
    assert "schema verified: version 8" in init
    dt = command("Troubleshooting", "kubectl exec deployment/postgres -n kiro-dev -- psql -U kiro -d kiro ")
    tables = ok(run(kiro, dt))
    assert "List of relations" in tables
    assert re.search(r"\| users\s+\| table \| kiro", tables) and "_sqlx_migrations" in tables


# ---- the seed Job, un-suspended by hand ------------------------------------------------------------

@pytest.fixture(scope="module")
def seeded(kiro, applied):
    patched = ok(run(kiro, command("Troubleshooting", "kubectl patch job database-seed")))
    wait_job(kiro, "database-seed")
    return patched


def test_the_seed_patch_loads_the_development_data(kiro, seeded):
    assert "job.batch/database-seed patched" in seeded
    assert psql(kiro, "SELECT string_agg(email, ',' ORDER BY email) FROM users") == "dev@example.com,test@example.com"
    assert int(psql(kiro, "SELECT count(*) FROM artists")) == 3


# ---- the manual reset --------------------------------------------------------------------------------

def test_the_original_one_statement_reset_fails_as_the_readme_says(kiro, seeded):
    proc = run(kiro, ORIGINAL_RESET)
    assert proc.returncode != 0
    assert "DROP DATABASE cannot run inside a transaction block" in proc.stderr, proc.stderr
    assert int(psql(kiro, "SELECT count(*) FROM users")) == 2  # nothing was dropped


def backend_health(cluster) -> str:
    """The status /health answers inside the backend's pod (its readiness probe's question)."""
    fetch = ("import urllib.request, urllib.error\n"
             "try: print(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=5).status)\n"
             "except urllib.error.HTTPError as e: print(e.code)")
    line = "kubectl exec deployment/backend -n kiro-dev -c backend -- python3 -c " + shlex.quote(fetch)
    return run(cluster, line).stdout.strip()


@pytest.fixture(scope="module")
def reset(kiro, seeded):
    block = commands("Troubleshooting")
    first = command("Troubleshooting", "kubectl exec deployment/postgres -n kiro-dev -- psql -U kiro -d postgres")
    steps = block[block.index(first):]
    outputs = [ok(run(kiro, line)) for line in steps]
    wait_job(kiro, "database-migration")
    wait_until(lambda: backend_health(kiro) == "200", "the backend's /health to answer 200 again", timeout=600)
    return SimpleNamespace(steps=steps, outputs=outputs)


def test_manual_reset_empties_the_database_and_migrates_again(kiro, reset):
    assert [s.split()[:2] for s in reset.steps] == [["kubectl", "exec"], ["kubectl", "delete"], ["kubectl", "apply"]]
    assert "DROP DATABASE" in reset.outputs[0] and "CREATE DATABASE" in reset.outputs[0]
    assert history(kiro) == list(range(1, 9))
    assert int(psql(kiro, "SELECT count(*) FROM users")) == 0  # the seed data went with the database
    seed = get_json(kiro, "job", "database-seed")
    assert seed["spec"]["suspend"] is True and pods(kiro, "job-name=database-seed") == []


# ---- the scripts -----------------------------------------------------------------------------------

def test_test_migration_job_script(kiro, reset):
    out = ok(run(kiro, command("Testing the migration Job and the setup", "./scripts/test-migration-job.sh")))
    assert "condition met" in out and "nothing to apply" in out
    job = get_json(kiro, "job", "database-migration")
    assert is_true(job, "Complete")


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_verify_migration_setup_script(kiro, reset):
    """With the three port-forwards `tilt up` makes (same ports), the script checks the cluster's setup."""
    forwards = [("service/postgres", 5432), ("service/redis", 6379), ("service/backend", 8080)]
    taken = [port for _, port in forwards if not port_is_free(port)]
    require(not taken, f"ports {taken} are taken on this machine; tilt up's port-forwards need them")
    with port_forward(kiro, *forwards[0], local=5432), port_forward(kiro, *forwards[1], local=6379), \
            port_forward(kiro, *forwards[2], local=8080):
        proc = run(kiro, command("Testing the migration Job and the setup", "./scripts/verify-migration-setup.sh"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "checking namespace kiro-dev (cluster)" in out
    for check in ("kube context: kiro-local", "namespace kiro-dev: exists", "PostgreSQL: reachable",
                  "migrations: all 8 applied", "Redis: answers PING",
                  "backend: http://localhost:8080/health answered 200"):
        assert f"ok   {check}" in out, (check, out)
    assert "FAIL" not in out
