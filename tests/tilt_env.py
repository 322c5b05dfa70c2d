"""A private environment for running the real Tilt in tests.

Each TiltEnv has its own HOME and TILT_DEV_DIR (so a developer's Tilt, its API server config and
its certificates are never touched), analytics off, free ports for Tilt's web server, the
embedded PostgreSQL (KIRO_PG_DIR, KIRO_PG_PORT), Redis and the backend, and optionally a copy
of the project (Tiltfile, extension, migrations, seeds) that a test may change while Tilt runs.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
import yaml

from conftest import REPO, free_port, namespace_lock, require
from dbctl.devenv import local_postgres as localpg
from dbctl.k8s import render

PROJECT_FILES = ["Tiltfile", "tilt_extensions", "migrations", "seeds"]
# What Tilt's image build needs besides (cluster mode): the Dockerfile and what it installs, and the
# scripts that build and load the image. The checkout's caches serve the copy: build/wheels is
# copied (Docker does not follow links out of its build context), the cluster and the venv that
# builds the wheel are linked.
IMAGE_FILES = ["Dockerfile", ".dockerignore", "pyproject.toml", "tools", "scripts"]
LINKED_BUILD = ["cluster", "bin", "wheel-env"]
SERVICES = ["postgres", "redis", "database-migration", "backend"]


class TiltEnv:
    """`cluster` (conftest.Cluster): Tilt runs against the real cluster; without it, `--no-cluster`."""

    def __init__(self, tilt: Path, project: Path | None = None, cluster=None):
        self.tilt = tilt
        self.cluster = cluster
        self.args = [] if cluster else ["--no-cluster"]
        self.root = Path(tempfile.mkdtemp(prefix="dbctl-tilt-"))
        os.chmod(self.root, 0o755)  # the embedded server runs as `postgres` when tests run as root
        self.project = project or self._copy_project()
        self.web_port = free_port()
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.backend_port = free_port()
        home = self.root / "home"
        home.mkdir()
        self.vars = {k: v for k, v in os.environ.items()
                     if not k.startswith(("DBCTL_", "DATABASE_URL", "PG", "KIRO_", "TILT_", "XDG_"))}
        self.vars.update(
            PATH=f"{tilt.parent}{os.pathsep}{os.environ.get('PATH', '')}",  # as installed: dev-setup checks it
            HOME=str(home),
            TILT_DEV_DIR=str(home / ".tilt-dev"),
            TILT_DISABLE_ANALYTICS="1",
            TILT_PORT=str(self.web_port),  # tilt up, trigger, get, logs... all find this Tilt by it
            TILT_WEB_MODE="prod",  # no web UI dev server even if this Tilt reports itself as a dev build
            KIRO_PG_DIR=str(self.root / "pg"),
            KIRO_PG_PORT=str(self.pg_port),
            KIRO_REDIS_PORT=str(self.redis_port),
            KIRO_BACKEND_PORT=str(self.backend_port),
        )
        if cluster:
            self.vars.update(KUBECONFIG=str(cluster.kubeconfig),
                             PATH=f"{cluster.bin}{os.pathsep}{self.vars['PATH']}")  # kubectl, as a developer has it
        self.up_proc: subprocess.Popen | None = None
        self.up_log = self.root / "tilt-up.log"

    def _copy_project(self) -> Path:
        project = self.root / "project"
        project.mkdir()
        for name in PROJECT_FILES + (IMAGE_FILES if self.cluster else []):
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, project / name)
        # The Tiltfile runs the project's .venv/bin/dbctl: the one of the venv running these tests.
        (project / ".venv").symlink_to(Path(sys.prefix))
        if self.cluster:
            shutil.copytree(REPO / "build" / "wheels", project / "build" / "wheels", symlinks=True)
            for name in LINKED_BUILD:
                (project / "build" / name).symlink_to(REPO / "build" / name)
        return project

    # ------------------------------------------------------------ running tilt

    def run(self, *args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.tilt), *args], cwd=self.project, env={**self.vars, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def tiltfile_result(self, *args: str, tiltfile: Path | None = None, env: dict | None = None) -> dict:
        proc = self.run("alpha", "tiltfile-result", "-f", str(tiltfile or self.project / "Tiltfile"), "--", *args,
                        env=env)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def get(self, kind: str, name: str) -> dict:
        proc = self.run("get", kind, name, "-o", "json", timeout=30)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def logs(self, resource: str) -> str:
        proc = self.run("logs", resource, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    # ------------------------------------------------------------ tilt up

    def up(self, *tiltfile_args: str, timeout: float = 180, command: list[str] | None = None) -> None:
        """`tilt up` in the background (with this mode's arguments unless given; or `command`, which
        runs it, such as `dbctl dev up`), then wait until every service is ready."""
        tiltfile_args = tiltfile_args or tuple(self.args)
        command = command or [str(self.tilt), "up", "--stream", "--", *tiltfile_args]
        with open(self.up_log, "w") as log:
            self.up_proc = subprocess.Popen(command,
                                            cwd=self.project, env=self.vars, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        # Until the Tiltfile is loaded, the API server has no UIResources and `tilt wait` fails at once.
        while self.run("get", "uiresource", SERVICES[-1], timeout=30).returncode != 0:
            self._check_alive()
            assert time.monotonic() < deadline, self.up_log.read_text()[-4000:]
            time.sleep(0.5)
        self.wait_ready(SERVICES, timeout=max(1, deadline - time.monotonic()))

    def wait_ready(self, resources: list[str], timeout: float = 120) -> None:
        proc = self.run("wait", "--for=condition=Ready", f"--timeout={int(timeout)}s",
                        *[f"uiresource/{name}" for name in resources], timeout=timeout + 30)
        assert proc.returncode == 0, proc.stdout + proc.stderr + self.up_log.read_text()[-4000:]

    def _check_alive(self) -> None:
        if self.up_proc is not None and self.up_proc.poll() is not None:
            raise AssertionError(f"tilt up exited with {self.up_proc.returncode}:\n"
                                 + self.up_log.read_text()[-4000:])

    def builds(self, resource: str) -> list[dict]:
        """The resource's last finished builds, newest first (Tilt's UIResource buildHistory, which
        keeps only a few)."""
        return self.get("uiresource", resource)["status"].get("buildHistory") or []

    def last_build(self, resource: str) -> str | None:
        """The span id of the resource's newest finished build (Tilt numbers builds across resources)."""
        builds = self.builds(resource)
        return builds[0]["spanID"] if builds else None

    def wait_for_build(self, resource: str, after: str | None, timeout: float = 120) -> dict:
        """Wait until the resource finished a build newer than `after` (a last_build()); return it."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.get("uiresource", resource)["status"]
            history = status.get("buildHistory") or []
            if history and history[0]["spanID"] != after and not status.get("currentBuild", {}).get("startTime"):
                return history[0]
            self._check_alive()
            assert time.monotonic() < deadline, f"{resource} did not finish a build in {timeout}s"
            time.sleep(0.5)

    def trigger(self, resource: str, timeout: float = 120) -> tuple[dict, str]:
        """`tilt trigger RESOURCE`; wait for the run; return (the build, the log it added)."""
        before, log_before = self.last_build(resource), self.logs(resource)
        proc = self.run("trigger", resource, timeout=30)
        assert proc.returncode == 0, proc.stderr
        build = self.wait_for_build(resource, before, timeout)
        return build, new_text(log_before, self.logs(resource))

    # ------------------------------------------------------------ buttons, through Tilt's API server

    def _api(self, method: str, path: str, body: dict | None = None) -> dict:
        """A request to Tilt's API server, with the address, CA and token Tilt wrote in TILT_DEV_DIR."""
        config = yaml.safe_load(Path(self.vars["TILT_DEV_DIR"], "config").read_text())
        name = f"tilt-{self.web_port}"
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == name)
        token = next(u["user"]["token"] for u in config["users"] if u["name"] == name)
        context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        request = urllib.request.Request(
            cluster["server"] + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return json.load(response)

    def click(self, button: str, inputs: dict | None = None, timeout: float = 120) -> tuple[int, str]:
        """Click a UIButton as Tilt's web UI does (PUT its status: lastClickedAt and the inputs' values),
        wait for the Cmd it starts to end; return (its exit code, the log it added to its resource)."""
        path = f"/apis/tilt.dev/v1alpha1/uibuttons/{button}"
        obj = self._api("GET", path)
        resource = obj["metadata"]["annotations"]["tilt.dev/resource"]
        log_before = self.logs(resource)
        started_before = (self.get("cmd", button)["status"].get("terminated") or {}).get("startedAt")
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        obj["status"] = {"lastClickedAt": now,
                         "inputs": [input_status(spec, (inputs or {}).get(spec["name"]))
                                    for spec in obj["spec"].get("inputs", [])]}
        self._api("PUT", path + "/status", obj)
        deadline = time.monotonic() + timeout
        while True:
            status = self.get("cmd", button)["status"]
            ended = status.get("terminated") or {}
            if ended and ended.get("startedAt") != started_before and not status.get("running"):
                return ended["exitCode"], new_text(log_before, self.logs(resource))
            assert time.monotonic() < deadline, f"the Cmd of {button} did not end in {timeout}s: {status}"
            time.sleep(0.5)

    # ------------------------------------------------------------ the embedded PostgreSQL

    def database_url(self, database: str | None = None) -> str:
        """The database as the triggers reach it: the embedded server, or Tilt's port-forward to postgres."""
        if self.cluster:
            return (f"postgresql://{render.DEV_USER}:{render.DEV_PASSWORD}@127.0.0.1:{self.pg_port}/"
                    f"{database or render.DEV_DATABASE}")
        return self.server.url(database)

    @property
    def server(self) -> localpg.LocalServer:
        return localpg.LocalServer(Path(self.vars["KIRO_PG_DIR"]), self.pg_port)

    def pg_running(self) -> bool:
        return localpg.is_running(self.server)

    def query(self, sql: str, database: str | None = None) -> list[tuple]:
        with psycopg.connect(self.database_url(database), autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def history(self) -> list[int]:
        """The versions applied, as sqlx's history says."""
        return [v for (v,) in self.query("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")]

    def users(self) -> int:
        """How many users rows: the development data is there when > 0."""
        return self.query("SELECT count(*) FROM users")[0][0]

    def wipe_database(self) -> None:
        """What a developer's accident looks like: the database gone and re-created empty."""
        self.query("DROP DATABASE kiro WITH (FORCE)", "postgres")
        self.query("CREATE DATABASE kiro", "postgres")

    # ------------------------------------------------------------ cleaning up

    def stop_up(self) -> None:
        """Stop `tilt up` (Ctrl-C, as a developer would)."""
        if self.up_proc is not None and self.up_proc.poll() is None:
            self.up_proc.send_signal(signal.SIGINT)
            try:
                self.up_proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.up_proc.pid, signal.SIGKILL)
                self.up_proc.wait()

    def down(self) -> None:
        """`tilt down`, stop `tilt up`, and make sure PostgreSQL stopped."""
        try:
            if self.up_proc is not None and self.up_proc.poll() is None:
                self.run("down", "--", *self.args, timeout=300)
                self.stop_up()
        finally:
            if self.pg_running():  # only if Tilt failed to stop it: never leave a server behind
                localpg.stop(self.server, mode="immediate")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def running_tilt(tilt: Path, cluster=None) -> Iterator[TiltEnv]:
    """`tilt up` on a copy of the project (on the cluster, or `-- --no-cluster` without one), every
    service ready; afterwards `tilt down`, Ctrl-C, PostgreSQL stopped, the copy removed."""
    env = TiltEnv(tilt, cluster=cluster)
    try:
        env.up(timeout=600 if cluster else 180)
        yield env
    finally:
        env.down()
        env.remove()


MODES = ["no-cluster", "cluster"]
CLUSTER_NAMESPACE = "kiro-dev"  # the root Tiltfile's


@contextmanager
def running_tilt_in_mode(request, tilt: Path) -> Iterator[TiltEnv]:
    """running_tilt in the mode a fixture parametrized over MODES names: on the real cluster (the
    namespace locked against other test modules and deleted first, as on a first `tilt up`), or
    without one (redis-server needed)."""
    with ExitStack() as stack:
        cluster = None
        if request.param == "cluster":
            cluster = request.getfixturevalue("cluster")
            stack.enter_context(namespace_lock(CLUSTER_NAMESPACE))
            cluster.fresh_namespace(CLUSTER_NAMESPACE)
        else:
            require(shutil.which("redis-server") is not None,
                    "redis-server is not installed (apt-get install redis-server)")
        yield stack.enter_context(running_tilt(tilt, cluster))


def input_status(spec: dict, value) -> dict:
    """The status of one button input, as the web UI sends it (the spec's default when not given)."""
    name = spec["name"]
    if "bool" in spec:
        return {"name": name, "bool": {"value": bool(spec["bool"].get("defaultValue", False) if value is None
                                                     else value)}}
    if "text" in spec:
        return {"name": name, "text": {"value": spec["text"].get("defaultValue", "") if value is None else value}}
    if "choice" in spec:
        return {"name": name, "choice": {"value": spec["choice"]["choices"][0] if value is None else value}}
    return {"name": name, "hidden": {"value": spec["hidden"]["value"]}}


def new_text(before: str, after: str) -> str:
    """What a log gained (Tilt keeps a resource's log; a test wants only the latest run's part)."""
    return after[len(before):] if after.startswith(before) else after
