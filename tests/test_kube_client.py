"""dbctl's Job operations on the real cluster (scripts/cluster), through the official Python client.

The environment is rendered into a namespace of its own (never kiro-dev, which Tilt's tests use)
and reached, as the Tilt triggers reach it, through a `kubectl port-forward` to postgres:

- each trigger's output holds the Job's own log lines, run after run, and a failing Job's log of
  every attempt;
- `dev status` and `doctor` report the Jobs and their pods; a suspended seed Job is started;
- the drift check leaves the port-forward alive;
- every kind of API failure is one `Error:` line with the fix and a documented exit code, never
  a traceback or a credential: no kubeconfig, a broken one, connection refused, no answer,
  a revoked token (401), a certificate the cluster does not know (401), a ServiceAccount with
  no rights (403), a missing namespace (404), a Job that already exists (409).
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess

import psycopg
import pytest
import yaml

from conftest import assert_clean_error, free_port, namespace_lock, run_dbctl

NS = "kiro-client-test"
TRIGGER_RUNS = 5


class PortForward:
    """`kubectl port-forward` to postgres, as Tilt's port_forwards runs it for the triggers."""

    def __init__(self, cluster, namespace: str):
        self.port = free_port()
        self.proc = subprocess.Popen([str(cluster.bin / "kubectl"), "port-forward", "-n", namespace,
                                      "deployment/postgres", f"{self.port}:5432"],
                                     env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = self.proc.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 5432" once it listens
        assert first.startswith("Forwarding from"), first + self.output()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.proc.stdout.read() if not self.alive() else ""

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Env:
    def __init__(self, cluster, manifests, forward: PortForward):
        self.cluster, self.manifests, self.forward = cluster, manifests, forward

    def dbctl(self, *args: str, env: dict | None = None, timeout: float = 600):
        return run_dbctl(*args, "--cluster", "--namespace", NS, "--postgres-port", str(self.forward.port),
                         env={**self.cluster.env, **(env or {})}, timeout=timeout)

    def database_url(self) -> str:
        encoded = self.cluster.kubectl("get", "secret", "kiro-db-credentials", "-n", NS,
                                       "-o", "jsonpath={.data.DATABASE_URL}")
        from dbctl.k8s.jobs import forwarded_url

        return forwarded_url(base64.b64decode(encoded).decode(), self.forward.port)


@pytest.fixture(scope="module")
def kube(cluster, tmp_path_factory):
    """The dev environment rendered into NS and applied (no Job yet), postgres forwarded to a free port."""
    with namespace_lock(NS):
        manifests = tmp_path_factory.mktemp("manifests")
        rendered = run_dbctl("render", "--namespace", NS, "--write", str(manifests))
        assert rendered.code == 0, rendered.output
        cluster.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", timeout=300)
        cluster.kubectl("apply", "-f", str(manifests / "dev-manifests.yaml"))
        cluster.kubectl("rollout", "status", "deployment/postgres", "-n", NS, "--timeout=300s", timeout=330)
        forward = PortForward(cluster, NS)
        try:
            yield Env(cluster, manifests, forward)
        finally:
            forward.stop()
            cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


# ---------------------------------------------------------------- the triggers show the Job's log

def job_log(output: str) -> str:
    """What dbctl printed from the Job's pods (after its "--- log of pod" line)."""
    return output.partition("--- log of pod ")[2]


def empty_schema(kube) -> None:
    """The database as a new developer's: no tables, no history."""
    with psycopg.connect(kube.database_url(), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


def test_each_trigger_shows_the_jobs_own_log_lines_in_every_run(kube):
    """They once followed the log before the container started and printed only
    "container ... is waiting to start: ContainerCreating" (6 of 6 runs)."""
    for run in range(1, TRIGGER_RUNS + 1):
        empty_schema(kube)
        migrate = kube.dbctl("dev", "migrate")
        assert migrate.code == 0, f"run {run}: {migrate.output}"
        assert "applied 001_initial_schema.sql" in job_log(migrate.out), f"run {run}: {migrate.output}"
        assert "applied 8 migration(s)" in job_log(migrate.out), f"run {run}: {migrate.output}"
        seed = kube.dbctl("dev", "seed")
        assert seed.code == 0, f"run {run}: {seed.output}"
        assert "seeded in" in job_log(seed.out), f"run {run}: {seed.output}"
        reset = kube.dbctl("dev", "reset", "--yes")  # migrates itself, then the Job finds nothing to do
        assert reset.code == 0, f"run {run}: {reset.output}"
        assert "database is up to date at version 8; nothing to apply" in job_log(reset.out), \
            f"run {run}: {reset.output}"
        for result in (migrate, seed, reset):
            assert "waiting to start" not in result.output, f"run {run}: {result.output}"
        assert kube.forward.alive(), f"run {run}: the port-forward died: {kube.forward.output()}"


def test_a_failing_job_shows_the_log_of_every_attempt(kube, tmp_path):
    options = tmp_path / "options.yaml"
    options.write_text("backoff_limit: 1\n")  # two attempts
    assert kube.dbctl("dev", "reset", "--yes").code == 0
    with psycopg.connect(kube.database_url(), autocommit=True) as conn:
        conn.execute("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 1")
    try:
        result = kube.dbctl("dev", "migrate", "--options", str(options))
        assert_clean_error(result, 1, "job/database-migration failed", "BackoffLimitExceeded")
        assert result.out.count("--- log of pod database-migration-") == 2, result.output
        assert result.out.count("001_initial_schema.sql was changed after it was applied") == 2, result.output
    finally:
        assert kube.dbctl("dev", "reset", "--yes").code == 0


def test_status_and_doctor_report_the_jobs_and_their_pods(kube):
    assert kube.dbctl("dev", "migrate").code == 0
    status = kube.dbctl("dev", "status")
    assert status.code == 0, status.output
    assert "database-migration       complete" in status.out, status.output
    assert "pod database-migration-" in status.out and "Succeeded: migrate exited 0 (Completed)" in status.out
    doctor = kube.dbctl("doctor")
    assert "ok   kube context: kiro-local" in doctor.out, doctor.output
    assert f"ok   namespace {NS}: exists" in doctor.out
    assert "ok   job database-migration: complete" in doctor.out
    assert "ok   tool kubectl" in doctor.out


def test_a_suspended_seed_job_is_started_not_created_again(kube):
    kube.cluster.kubectl("delete", "job", "database-seed", "-n", NS, "--ignore-not-found", "--wait=true")
    kube.cluster.kubectl("apply", "-f", str(kube.manifests / "migration-job.yaml"), "-l",
                         "app.kubernetes.io/component=seed")
    uid = kube.cluster.kubectl("get", "job", "database-seed", "-n", NS, "-o", "jsonpath={.metadata.uid}")
    result = kube.dbctl("dev", "seed")
    assert result.code == 0, result.output
    assert f"starting job/database-seed in {NS} (it was suspended)" in result.out, result.output
    assert "seeded in" in result.out
    assert kube.cluster.kubectl("get", "job", "database-seed", "-n", NS, "-o", "jsonpath={.metadata.uid}") == uid


def test_the_drift_check_leaves_the_port_forward_alive(kube):
    """It force-dropped its scratch database while its own sessions were still ending there, which
    reset their streams through the forward and ended it (3 of 14 runs; here within 15)."""
    assert kube.dbctl("dev", "migrate").code == 0
    for run in range(1, 21):
        result = run_dbctl("drift", env={"DATABASE_URL": kube.database_url()})
        assert result.code == 0 and "no drift" in result.out, f"run {run}: {result.output}"
        assert kube.forward.alive(), f"run {run}: the port-forward died: {kube.forward.output()}"


# ---------------------------------------------------------------- API failures: one line, the fix

def kubeconfig(kube, tmp_path, change) -> dict:
    """A copy of the cluster's kubeconfig changed by `change(config)`; the env that points at it."""
    config = yaml.safe_load(kube.cluster.kubeconfig.read_text())
    change(config)
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return {"KUBECONFIG": str(path)}


def with_user(credentials: dict):
    def change(config):
        config["users"][0]["user"] = credentials
    return change


def service_account_token(kube, name: str) -> str:
    kube.cluster.kubectl("create", "serviceaccount", name, "-n", NS)
    return kube.cluster.kubectl("create", "token", name, "-n", NS).strip()


def test_no_kubeconfig_is_exit_2_with_where_it_looked(kube, tmp_path):
    result = kube.dbctl("dev", "migrate", env={"KUBECONFIG": str(tmp_path / "missing")})
    assert_clean_error(result, 2, "no kubeconfig", f"KUBECONFIG={tmp_path / 'missing'} names no file that exists")
    result = kube.dbctl("dev", "status", env={"KUBECONFIG": "", "HOME": str(tmp_path)})
    assert_clean_error(result, 2, "no kubeconfig", f"{tmp_path}/.kube/config does not exist")


def test_a_broken_kubeconfig_is_exit_2_without_its_secrets(kube, tmp_path):
    def unknown_context(config):
        config["current-context"] = "nowhere"
    env = kubeconfig(kube, tmp_path, unknown_context)
    result = kube.dbctl("dev", "migrate", env=env)
    assert_clean_error(result, 2, "cannot be used", "nowhere", "kubectl config use-context")

    def no_server(config):
        del config["clusters"][0]["cluster"]["server"]
    env = kubeconfig(kube, tmp_path, no_server)
    result = kube.dbctl("dev", "migrate", env=env)
    assert_clean_error(result, 2, "cannot be used", "server")
    secret = yaml.safe_load(kube.cluster.kubeconfig.read_text())["users"][0]["user"]
    for value in secret.values():
        assert str(value)[:40] not in result.output


def test_connection_refused_names_the_server_and_the_fix(kube, tmp_path):
    port = free_port()  # nothing listens there

    def wrong_port(config):
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    result = kube.dbctl("dev", "migrate", env=kubeconfig(kube, tmp_path, wrong_port))
    assert_clean_error(result, 1, f"cannot reach the Kubernetes API at https://127.0.0.1:{port}",
                       "connection refused", "start the cluster")


def test_a_server_that_never_answers_times_out(kube, tmp_path):
    with socket.socket() as silent:  # accepts TCP connections (the kernel's backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]

        def silent_server(config):
            config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
        env = {**kubeconfig(kube, tmp_path, silent_server), "DBCTL_KUBE_TIMEOUT": "2"}
        result = kube.dbctl("dev", "status", env=env)
    assert_clean_error(result, 1, "cannot reach the Kubernetes API", "no answer in time")


def test_a_revoked_token_is_401_and_never_printed(kube, tmp_path):
    token = service_account_token(kube, "dbctl-revoked")
    kube.cluster.kubectl("delete", "serviceaccount", "dbctl-revoked", "-n", NS)  # its tokens die with it
    result = kube.dbctl("dev", "migrate", env=kubeconfig(kube, tmp_path, with_user({"token": token})))
    assert_clean_error(result, 1, "401 Unauthorized", "expired or invalid", "fresh kubeconfig")
    assert token not in result.output and token[-20:] not in result.output


def test_a_certificate_the_cluster_does_not_know_is_401(kube, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-subj", "/CN=intruder/O=system:masters", "-days", "1"], check=True, capture_output=True)
    user = {"client-certificate": str(cert), "client-key": str(key)}
    result = kube.dbctl("dev", "status", env=kubeconfig(kube, tmp_path, with_user(user)))
    assert_clean_error(result, 1, "401 Unauthorized")
    assert "PRIVATE KEY" not in result.output


def test_a_service_account_without_rights_is_403_with_what_it_may_not_do(kube, tmp_path):
    token = service_account_token(kube, "dbctl-no-rights")
    try:
        env = kubeconfig(kube, tmp_path, with_user({"token": token}))
        result = kube.dbctl("dev", "migrate", env=env)
        assert_clean_error(result, 1, "403 Forbidden", "system:serviceaccount:kiro-client-test:dbctl-no-rights",
                           "cannot get resource", "kubectl auth can-i --list")
        assert token not in result.output
        result = kube.dbctl("dev", "status", env=env)
        assert_clean_error(result, 1, "403 Forbidden", "secrets")
    finally:
        kube.cluster.kubectl("delete", "serviceaccount", "dbctl-no-rights", "-n", NS, check=False)


def test_a_missing_namespace_says_how_to_make_it(kube):
    result = run_dbctl("dev", "migrate", "--cluster", "--namespace", "kiro-client-nowhere", env=kube.cluster.env)
    assert_clean_error(result, 1, "creating job database-migration in namespace kiro-client-nowhere",
                       'namespaces "kiro-client-nowhere" not found', "kubectl create namespace kiro-client-nowhere")
    result = run_dbctl("dev", "status", "--cluster", "--namespace", "kiro-client-nowhere", env=kube.cluster.env)
    assert_clean_error(result, 2, 'Secret "kiro-db-credentials" not found in namespace "kiro-client-nowhere"')


def test_a_job_created_twice_is_a_409_conflict(kube, monkeypatch):
    from dbctl.errors import ClusterError
    from dbctl.k8s import cluster, jobs, render

    monkeypatch.setenv("KUBECONFIG", str(kube.cluster.kubeconfig))
    seed = [d for d in render.migration_documents(render.make_options(namespace=NS))
            if d["metadata"]["name"] == "database-seed"][0]
    job = jobs.fresh_job(seed, None)
    job["metadata"]["name"] = "dbctl-conflict"
    job["spec"]["suspend"] = True  # never runs
    api = cluster.connect()
    cluster.create_job(api, NS, job)
    try:
        with pytest.raises(ClusterError) as raised:
            cluster.create_job(api, NS, job)
        message = str(raised.value)
        assert "409 Conflict" in message and 'jobs.batch "dbctl-conflict" already exists' in message, message
        assert "run it again" in message
    finally:
        cluster.delete_job(api, "dbctl-conflict", NS)


def test_no_dbctl_command_needs_kubectl(kube):
    """The client replaced every kubectl subprocess: with no kubectl on PATH the triggers still work."""
    path = [d for d in kube.cluster.env["PATH"].split(os.pathsep) if d and not os.path.exists(os.path.join(d, "kubectl"))]
    result = kube.dbctl("dev", "migrate", env={"PATH": os.pathsep.join(path)})
    assert result.code == 0, result.output
    assert "job/database-migration completed" in result.out
