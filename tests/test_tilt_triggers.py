"""With `tilt up` running, in both modes (one session per mode, on a copy of the project): without a
cluster (`-- --no-cluster`), and on the real cluster of scripts/cluster (namespace kiro-dev): each
trigger by `tilt trigger`, each button clicked through Tilt's API server, a migration file added
while Tilt runs, a broken one, and `tilt down` / `make down` followed by up again. Assertions read
Tilt's own state and logs, Kubernetes' objects and the database.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from conftest import require
from tilt_env import CLUSTER_NAMESPACE as NAMESPACE, MODES, SERVICES, TiltEnv, running_tilt_in_mode

pytestmark = pytest.mark.timeout(900)  # cluster mode builds images and runs Jobs

TRIGGERS = ["db-migrate", "db-seed", "db-reset", "db-status", "dev-setup", "health-check"]


@pytest.fixture(scope="module", params=MODES)
def tilt(request, tilt_bin):
    require(tilt_bin.exists(), "Tilt is not built (scripts/build-tilt)")
    with running_tilt_in_mode(request, tilt_bin) as env:
        yield env


def backend_health(tilt: TiltEnv) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{tilt.backend_port}/health", timeout=10) as response:
        return json.load(response)


def test_tilt_up_starts_the_services_and_runs_no_trigger(tilt):
    for name in SERVICES:
        builds = tilt.builds(name)
        assert builds and not builds[0].get("error"), (name, builds)
    for name in ["database-seed", *TRIGGERS]:
        assert tilt.builds(name) == [], name  # manual: nothing ran at startup
    assert tilt.history() == list(range(1, 9))
    assert backend_health(tilt)["schema"]["ok"] is True


def test_db_status(tilt):
    build, log = tilt.trigger("db-status")
    assert not build.get("error"), log
    assert "initial schema" in log and "audit logging and rate limiting" in log
    assert "pending" not in log
    assert "kiro:kiro@" not in log  # password masked


def test_db_migrate_applies_what_is_pending(tilt):
    tilt.wipe_database()
    build, log = tilt.trigger("db-migrate")
    assert not build.get("error"), log
    assert "applied 8 migration(s)" in log
    assert tilt.history()[:8] == list(range(1, 9))
    again, log = tilt.trigger("db-migrate")
    assert not again.get("error") and "nothing to apply" in log


def test_db_seed_loads_the_development_data(tilt):
    build, log = tilt.trigger("db-seed")
    assert not build.get("error"), log
    assert "seeded in" in log
    assert tilt.users() > 0


def test_db_reset_needs_a_second_trigger(tilt):
    tilt.trigger("db-seed")
    seeded = tilt.users()
    assert seeded > 0
    first, log = tilt.trigger("db-reset")
    assert "failed: exit status 1" in first.get("error", ""), first  # the resource turns red, nothing dropped
    assert "trigger it again within 60s" in log
    assert tilt.users() == seeded
    second, log = tilt.trigger("db-reset")
    assert not second.get("error"), log
    assert 'dropped and re-created database "kiro"' in log and "tilt trigger db-seed" in log
    assert tilt.users() == 0 and tilt.history()[:8] == list(range(1, 9))


def test_dev_setup_and_health_check(tilt):
    for name in ("dev-setup", "health-check"):
        build, log = tilt.trigger(name)
        assert not build.get("error"), log
        assert "answered 200" in log and "checks passed" in log and "FAIL" not in log, log
        if name == "dev-setup":
            assert "ok   tool tilt" in log, log
            assert ("ok   tool kubectl" if tilt.cluster else "ok   tool PostgreSQL server") in log, log


# ---------------------------------------------------------------- buttons (Tilt's UIButton + Cmd)

def test_status_and_health_buttons(tilt):
    code, log = tilt.click("btn-db-status")
    assert code == 0 and "initial schema" in log, log
    code, log = tilt.click("btn-health-check")
    assert code == 0 and "answered 200" in log, log


def test_migrate_button(tilt):
    tilt.wipe_database()
    code, log = tilt.click("btn-db-migrate")
    assert code == 0 and "applied 8 migration(s)" in log, log
    assert tilt.history()[:8] == list(range(1, 9))


def test_seed_button(tilt):
    code, log = tilt.click("btn-db-seed")
    assert code == 0 and "seeded in" in log, log
    assert tilt.users() > 0


@pytest.mark.parametrize("seed_after", [True, False])  # in this order: the second run drops the seeded data
def test_reset_button_with_its_seed_checkbox(tilt, seed_after):
    code, log = tilt.click("btn-db-reset", {"DBCTL_RESET_SEED": seed_after})
    assert code == 0, log
    assert 'dropped and re-created database "kiro"' in log
    assert ("seeded in" in log) == seed_after
    assert (tilt.users() > 0) == seed_after
    assert tilt.history()[:8] == list(range(1, 9))


# ---------------------------------------------------------------- files changed while Tilt runs

def runtime_status(tilt: TiltEnv, resource: str) -> str:
    return tilt.get("uiresource", resource)["status"].get("runtimeStatus", "")


def wait_for_runtime(tilt: TiltEnv, resource: str, status: str, log_before: str, needle: str,
                     timeout: float = 600) -> str:
    """Cluster mode: wait until the resource's pod settled in `status` (a Job: ok when it completed,
    error when it failed) and its pane gained `needle`; return what the pane gained."""
    deadline = time.monotonic() + timeout
    while True:
        log = tilt.logs(resource)[len(log_before):]
        if runtime_status(tilt, resource) == status and needle in log:
            return log
        tilt._check_alive()
        assert time.monotonic() < deadline, f"{resource} did not reach {status!r} with {needle!r}: {log[-3000:]}"
        time.sleep(2)


def backend_still_serving(tilt: TiltEnv) -> None:
    """The backend that ran before keeps serving: a pod is Ready, the Service routes to it, and it
    answers /health with 200 (Tilt's port-forward follows the newest pod, which may be one that
    never got ready, so ask the pod itself)."""
    kubectl = tilt.cluster.kubectl
    deadline = time.monotonic() + 30  # a rollout's EndpointSlice follows the pods' readiness within seconds
    while True:
        pods = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=backend",
                                  "-o", "json"))
        ready = [p for p in pods["items"] if any(c["type"] == "Ready" and c["status"] == "True"
                                                 for c in p["status"].get("conditions", []))]
        slices = json.loads(kubectl("get", "endpointslices", "-n", NAMESPACE, "-l",
                                    "kubernetes.io/service-name=backend", "-o", "json"))
        routed = {a for s in slices["items"] for e in s.get("endpoints") or [] if e["conditions"].get("ready")
                  for a in e["addresses"]}
        # A pod being replaced may still say Ready while the Service has stopped routing to it.
        serving = [p for p in ready if p["status"].get("podIP") in routed and not p["metadata"].get("deletionTimestamp")]
        if serving or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert serving, (routed, [(p["metadata"]["name"], p["status"].get("podIP")) for p in ready],
                     [p["status"].get("conditions") for p in pods["items"]])
    # The status and the report: a 503 says why (a check that timed out on a loaded machine, or a real refusal).
    code = ("import urllib.request, urllib.error\n"
            "try:\n    r = urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=30)\n"
            "    print(r.status, r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())\n")
    answers = []
    for _ in range(3):  # the readiness probe, too, lets one slow check pass before it gives up on a pod
        out = kubectl("exec", serving[0]["metadata"]["name"], "-n", NAMESPACE, "-c", "backend", "--", "python3",
                      "-c", code)
        answers.append(out.strip())
        if out.startswith("200"):
            break
        time.sleep(5)
    assert answers[-1].startswith("200"), answers


def test_a_new_migration_file_reruns_the_migration(tilt):
    before = tilt.last_build("database-migration")
    log_before = tilt.logs("database-migration")
    (tilt.project / "migrations" / "009_tilt_watched.sql").write_text("CREATE TABLE tilt_watched (id int);\n")
    build = tilt.wait_for_build("database-migration", before, timeout=600)
    assert not build.get("error"), tilt.logs("database-migration")[len(log_before):]
    if tilt.cluster:
        # The image was rebuilt with the new file, so Tilt re-created the Job, which applied it.
        log = wait_for_runtime(tilt, "database-migration", "ok", log_before, "applied 1 migration(s)")
    else:
        log = tilt.logs("database-migration")[len(log_before):]
    assert "009_tilt_watched.sql" in log and "applied 1 migration(s)" in log, log
    assert tilt.history() == list(range(1, 10))
    assert tilt.query("SELECT to_regclass('public.tilt_watched') IS NOT NULL")[0][0] is True
    if tilt.cluster:
        # The backend rolled out on the new image, and its /health knows version 9.
        tilt.cluster.kubectl("rollout", "status", "deployment/backend", "-n", NAMESPACE, "--timeout=300s",
                             timeout=330)
        tilt.wait_ready(["backend"], timeout=300)
        deadline = time.monotonic() + 120
        while True:
            try:
                if backend_health(tilt)["schema"]["current_version"] == 9:
                    break
            except OSError:
                pass  # Tilt is moving its port-forward to the new pod
            assert time.monotonic() < deadline, "the backend's /health never reported version 9"
            time.sleep(2)


def test_a_broken_migration_turns_the_resource_red_until_removed(tilt):
    broken = tilt.project / "migrations" / "010_broken.sql"
    before = tilt.last_build("database-migration")
    log_before = tilt.logs("database-migration")
    broken.write_text("ALTER TABLE no_such_table ADD COLUMN x int;\n")
    build = tilt.wait_for_build("database-migration", before, timeout=600)
    if tilt.cluster:
        # The image built and the Job was applied; its first failed pod turns the resource red, and the
        # Job fails for good after its retries (backoffLimit), still red.
        assert not build.get("error"), build
        wait_for_runtime(tilt, "database-migration", "error", log_before, "no_such_table")
        tilt.cluster.kubectl("wait", "--for=condition=Failed", "job/database-migration", "-n", NAMESPACE,
                             "--timeout=600s", timeout=630)
        log = wait_for_runtime(tilt, "database-migration", "error", log_before, "backoff limit")
        # The old backend keeps serving: the new pod's init container refuses the unapplied 010.
        backend_still_serving(tilt)
    else:
        assert "exit status 1" in build.get("error", ""), build
        log = tilt.logs("database-migration")[len(log_before):]
    assert "010_broken.sql" in log and "no_such_table" in log and "Traceback" not in log, log
    assert 10 not in tilt.history()

    before = build["spanID"]
    log_before = tilt.logs("database-migration")
    broken.unlink()
    build = tilt.wait_for_build("database-migration", before, timeout=600)
    assert not build.get("error"), build
    if tilt.cluster:
        wait_for_runtime(tilt, "database-migration", "ok", log_before, "nothing to apply")
        tilt.wait_ready(["backend"], timeout=300)
        backend_still_serving(tilt)


# ---------------------------------------------------------------- the data survives down and up

def test_tilt_down_and_up_keep_the_data(tilt):
    tilt.query("CREATE TABLE IF NOT EXISTS kept_across_down (note text)")
    tilt.query("INSERT INTO kept_across_down VALUES ('tilt down')")
    assert tilt.run("down", "--", *tilt.args, timeout=300).returncode == 0
    tilt.stop_up()
    if tilt.cluster:
        # Tilt deleted what it applied but the namespace and the claim (down-policy keep).
        claim = tilt.cluster.kubectl("get", "pvc", "postgres-data", "-n", NAMESPACE, "-o", "name")
        assert claim.strip() == "persistentvolumeclaim/postgres-data"
        assert tilt.cluster.kubectl("get", "deployments", "-n", NAMESPACE, "-o", "name").strip() == ""
    tilt.up(timeout=600 if tilt.cluster else 180)
    assert tilt.query("SELECT note FROM kept_across_down") == [("tilt down",)]


def test_make_down_and_make_up_keep_the_data(tilt):
    """`make down` and `make up` are `dbctl dev down` and `dbctl dev up`, which choose the mode themselves."""
    tilt.query("INSERT INTO kept_across_down VALUES ('make down')")
    dbctl = str(tilt.project / ".venv" / "bin" / "dbctl")
    proc = tilt_dbctl(tilt, dbctl, "dev", "down")
    assert proc.returncode == 0 and "tilt down: done" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    tilt.stop_up()
    tilt.up(command=[dbctl, "dev", "up"], timeout=600 if tilt.cluster else 180)
    chosen = tilt.up_log.read_text()
    assert "make up: tilt up" in chosen, chosen[:500]
    assert ("make up: tilt up -- --no-cluster" in chosen) == (tilt.cluster is None), chosen[:500]
    assert tilt.query("SELECT note FROM kept_across_down ORDER BY note") == [("make down",), ("tilt down",)]


def tilt_dbctl(tilt: TiltEnv, *argv: str):
    import subprocess
    return subprocess.run(list(argv), cwd=tilt.project, env=tilt.vars, capture_output=True, text=True, timeout=300)
