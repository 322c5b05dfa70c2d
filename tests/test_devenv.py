"""The pure parts of `make up`'s chooser, db-reset's confirmation and the kubectl helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


from conftest import REPO, free_port, run_dbctl
from dbctl.devenv import doctor as devenv
from dbctl.k8s import jobs as k8s


def test_choose_tilt_and_cluster():
    c = devenv.choose("/usr/local/bin/tilt", True, "context kind-kind")
    assert c.mode == "cluster" and c.command == ["tilt", "up"] and "kind-kind" in c.reason


def test_choose_tilt_without_cluster():
    c = devenv.choose("/usr/local/bin/tilt", False, "connection refused")
    assert c.mode == "no-cluster" and c.command == ["tilt", "up", "--", "--no-cluster"]
    assert "connection refused" in c.reason


def test_choose_without_tilt():
    c = devenv.choose(None, False, "not checked")
    assert c.mode == "local" and c.command == ["dbctl", "local", "up"] and "not installed" in c.reason


def test_make_up_says_what_it_chose_and_why():
    result = run_dbctl("dev", "up", "--dry-run")
    assert result.code == 0, result.output
    if shutil.which("tilt") is None:
        assert "dbctl local up: Tilt is not installed" in result.out
    else:
        assert result.out.startswith("make up: tilt up")


def test_two_step_confirmation(tmp_path, monkeypatch):
    monkeypatch.setenv("KIRO_PG_DIR", str(tmp_path / "pg"))
    assert devenv.two_step_confirm("reset A", now=1000.0) is False
    assert devenv.two_step_confirm("reset B", now=1001.0) is False  # another target does not confirm A
    assert devenv.two_step_confirm("reset B", now=1002.0) is True
    assert devenv.two_step_confirm("reset B", now=1003.0) is False  # used up
    assert devenv.two_step_confirm("reset B", now=1003.0 + devenv.CONFIRM_WINDOW + 1) is False  # too late


def test_forwarded_url_keeps_credentials_and_database():
    url = "postgresql://kiro:pw@postgres:5432/kiro?sslmode=disable"
    assert k8s.forwarded_url(url, 15432) == "postgresql://kiro:pw@127.0.0.1:15432/kiro?sslmode=disable"


def test_job_outcome():
    assert k8s.job_outcome(None)[0] == "missing"
    assert k8s.job_outcome({"spec": {"suspend": True}, "status": {}})[0] == "suspended"
    assert k8s.job_outcome({"spec": {}, "status": {"active": 1}}) == ("running", "1 pod(s) running")
    done = {"status": {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "T"}]}}
    assert k8s.job_outcome(done) == ("complete", "completed at T")
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                         "message": "Job has reached the specified backoff limit"}]}}
    assert k8s.job_outcome(failed)[0] == "failed" and "BackoffLimitExceeded" in k8s.job_outcome(failed)[1]


def test_fresh_job_from_a_live_job():
    live = {
        "metadata": {"name": "database-migration", "uid": "u", "resourceVersion": "7", "creationTimestamp": "t"},
        "spec": {"suspend": True, "selector": {"matchLabels": {"controller-uid": "u"}},
                 "template": {"metadata": {"labels": {"app": "x", "controller-uid": "u", "job-name": "database-migration"}},
                              "spec": {"initContainers": [{"image": "old"}], "containers": [{"image": "old"}]}}},
        "status": {"succeeded": 1},
    }
    job = k8s.fresh_job(live, "kiro-backend:tilt-abc")
    assert "status" not in job and "uid" not in job["metadata"] and "selector" not in job["spec"]
    assert job["spec"]["suspend"] is False
    assert job["spec"]["template"]["metadata"]["labels"] == {"app": "x"}
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == pod["initContainers"][0]["image"] == "kiro-backend:tilt-abc"
    assert live["spec"]["suspend"] is True  # the input is not changed


def test_cluster_commands_fail_cleanly_without_a_kubeconfig():
    result = run_dbctl("dev", "status", "--cluster", env={"KUBECONFIG": "/nonexistent"})
    assert result.code == 2, result.output
    assert result.err.startswith("Error: no kubeconfig: KUBECONFIG=/nonexistent") and "Traceback" not in result.err


def test_describe_pod_says_each_containers_state():
    pod = {"metadata": {"name": "database-migration-x"},
           "spec": {"containers": [{"name": "migrate"}]},
           "status": {"phase": "Failed", "containerStatuses": [
               {"name": "migrate", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}}
    assert k8s.describe_pod(pod) == "pod database-migration-x Failed: migrate exited 1 (Error)"
    pending = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "migrate"}]},
               "status": {"phase": "Pending", "containerStatuses": [
                   {"name": "migrate", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no"}}}]}}
    assert k8s.unusual_wait(pending, "migrate") == "ImagePullBackOff: no"
    creating = {"status": {"containerStatuses": [{"name": "migrate", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert k8s.unusual_wait(creating, "migrate") is None
    assert k8s.container_state({"status": {}}, "migrate") == ("waiting", {})


def test_parent_pid_is_read_from_proc():
    assert devenv.parent_pid(os.getpid()) == os.getppid()


def test_dev_setup_under_tilt_finds_the_tilt_that_runs_it(tilt_bin, tmp_path):
    """Tilt's buttons run dbctl with Tilt's environment, whose PATH need not hold Tilt: dev-setup
    warned "tilt: not installed" while Tilt ran it. Here real Tilt runs it with no tilt on PATH."""
    (tmp_path / "Tiltfile").write_text(
        f"local_resource('dev-setup', cmd={[sys.executable, '-m', 'dbctl', 'doctor']!r}, dir={str(REPO)!r})\n")
    path = [d for d in os.environ["PATH"].split(os.pathsep) if d and not os.path.exists(os.path.join(d, "tilt"))]
    env = {**os.environ, "PATH": os.pathsep.join(path), "HOME": str(tmp_path), "TILT_DISABLE_ANALYTICS": "1",
           "KIRO_PG_DIR": str(tmp_path / "pg"), "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    proc = subprocess.run([str(tilt_bin), "ci", "--port", str(free_port()), "-f", str(tmp_path / "Tiltfile")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert "dev-setup: checking the local PostgreSQL" in output, output
    assert f"ok   tool tilt: {tilt_bin.resolve()} (the Tilt running this command; not on PATH)" in output, output
    assert "tool tilt: not installed" not in output


def test_make_down_with_tilt_and_no_cluster_runs_tilt_down_in_no_cluster_mode(tilt_bin, tmp_path):
    """Plain `tilt down` loads the cluster mode and fails without a cluster; `make down` must not."""
    env = {"PATH": f"{tilt_bin.parent}:{os.environ['PATH']}", "HOME": str(tmp_path),
           "KIRO_PG_DIR": str(tmp_path / "pg"), "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    result = run_dbctl("dev", "down", env=env)
    assert result.code == 0, result.output
    assert "tilt down: done" in result.out, result.output
