"""A real PostgreSQL for the whole test session, started by the session itself.

The server is dbctl's own embedded one (dbctl.devenv.local_postgres) in a temporary
directory, on a free port. Each test that asks for `db_url` gets a fresh
database, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from dbctl.devenv import local_postgres as localpg

REPO = Path(__file__).resolve().parents[1]
MIGRATIONS = REPO / "migrations"
SEEDS = REPO / "seeds"


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BUILD = REPO / "build"


def require(ok: bool, why: str) -> None:
    """For a test that needs a real peer (Tilt, sqlx, a container engine): without it the test
    skips on a developer's machine and FAILS in CI, so a green CI run means it ran."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{why} (CI=true: this test must run, not skip)")
    pytest.skip(why)


def build_step(command: list[str], what: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run a cached build step (Tilt, the sqlx oracle); a second run is a no-op."""
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        require(False, f"could not build {what}: {tail}")
    return proc


@pytest.fixture(scope="session")
def tilt_bin() -> Path:
    """The real Tilt with its web UI (scripts/build-tilt: pinned, built once from the Go module proxy
    and the npm registry). The script is a no-op when the binary is current, and rebuilds one built
    without the UI; without Go and npm an existing binary is used as it is."""
    binary = BUILD / "bin" / "tilt"
    if shutil.which("go") and shutil.which("npm"):
        build_step(["scripts/build-tilt"], "Tilt")
    require(binary.exists(), "Tilt is not built (scripts/build-tilt needs Go and Node.js with npm)")
    return binary


@pytest.fixture(scope="session")
def sqlx_oracle() -> Path:
    """sqlx's own Migrator (tests/sqlx_oracle, sqlx 0.8 from crates.io, Cargo.lock committed), built once."""
    require(shutil.which("cargo") is not None, "cargo is not installed: the sqlx oracle cannot be built")
    target = BUILD / "sqlx-oracle"
    build_step(["cargo", "build", "--quiet", "--locked", "--manifest-path", "tests/sqlx_oracle/Cargo.toml",
                "--target-dir", str(target)], "the sqlx oracle")
    return target / "debug" / "sqlx-oracle"


# ---------------------------------------------------------------- containers and the cluster

def why_no_container_engine() -> str | None:
    """Why the images cannot be built here, or None."""
    if not shutil.which("docker") and not os.path.exists("/usr/bin/docker"):
        return "no docker client (scripts/install-system-deps installs docker.io)"
    if not shutil.which("debootstrap") and not os.path.exists("/usr/sbin/debootstrap"):
        return "no debootstrap, which makes the base image (scripts/install-system-deps installs it)"
    if os.geteuid() != 0:
        return "dockerd and debootstrap need root"
    return None


@pytest.fixture(scope="session")
def app_images() -> dict[str, str]:
    """The container engine started and the images k8s/dev names built (both cached): {image: ID}."""
    reason = why_no_container_engine()
    require(reason is None, f"real containers not run: {reason}")
    env = {**os.environ, "PYTHON": sys.executable}
    build_step(["scripts/container-engine"], "the container engine")
    proc = subprocess.run(["scripts/container-images"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail("scripts/container-images failed: " + "\n".join(proc.stderr.strip().splitlines()[-15:]))
    return dict(line.split() for line in proc.stdout.splitlines() if line.strip())


CLUSTER_DIR = BUILD / "cluster"


@dataclass
class Cluster:
    """The real single-node Kubernetes of scripts/cluster, reached with its own kubectl and kubeconfig."""
    kubeconfig: Path
    bin: Path

    @property
    def env(self) -> dict:
        """The environment of a developer who exported the cluster's KUBECONFIG, its kubectl first on PATH."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None) -> str:
        proc = subprocess.run([str(self.bin / "kubectl"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def load(self, *images: str) -> None:
        build_step(["scripts/cluster", "load", *images], f"the images {', '.join(images)} into the cluster")

    def fresh_namespace(self, namespace: str) -> None:
        """Start from nothing, as a developer's first `tilt up`: the namespace (and its claim) deleted."""
        self.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", "--timeout=180s",
                     timeout=240)

    def wait_gone(self, kind: str, name: str, namespace: str, timeout: int = 180) -> None:
        self.kubectl("wait", "--for=delete", f"{kind}/{name}", "-n", namespace, f"--timeout={timeout}s",
                     check=False, timeout=timeout + 30)


@pytest.fixture(scope="session")
def cluster(app_images) -> Cluster:
    """scripts/cluster: built once (cached by version), started for this session unless it already
    ran (then left running), with the stand-in postgres and redis images and kiro-backend:dev loaded."""
    require(shutil.which("go") is not None or (CLUSTER_DIR / "bin" / "VERSIONS").exists(),
            "Kubernetes is not built (scripts/cluster build) and Go is not installed")
    build_step(["scripts/cluster", "build"], "Kubernetes (scripts/cluster build)", timeout=3600)
    was_running = subprocess.run(["scripts/cluster", "status"], cwd=REPO, capture_output=True).returncode == 0
    build_step(["scripts/cluster", "up"], "the cluster (scripts/cluster up)", timeout=300)
    handle = Cluster(kubeconfig=CLUSTER_DIR / "kubeconfig", bin=CLUSTER_DIR / "bin")
    handle.load("postgres:16-bookworm", "redis:7-bookworm", "kiro-backend:dev")
    try:
        yield handle
    finally:
        if not was_running:
            subprocess.run(["scripts/cluster", "down"], cwd=REPO, capture_output=True, timeout=300)


@contextmanager
def namespace_lock(namespace: str):
    """One test module at a time in a namespace of the shared cluster (sessions of other checkouts too)."""
    import fcntl
    lock_dir = Path(tempfile.gettempdir()) / "kiro-cluster-locks"
    lock_dir.mkdir(exist_ok=True)
    with open(lock_dir / namespace, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def wait_for_port(port: int, timeout: float = 10) -> None:
    """Until something listens on 127.0.0.1:`port` (a server the test started); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    try:
        localpg.find_bindir()
    except Exception as exc:  # the tests need a real server: say why there is none
        pytest.fail(f"PostgreSQL server binaries are required for the tests: {exc}")
    with private_server("dbctl-test-pg-") as server:
        yield server


@contextmanager
def private_server(prefix: str):
    """A throwaway PostgreSQL (fsync off) in a temporary directory, on a free port."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)  # the server runs as `postgres` when the tests run as root
    server = localpg.LocalServer(root / "pg", port=free_port(), user="tester", password="s3cret-pw",
                                 database="postgres", durable=False)
    try:
        localpg.init(server)
        localpg.start(server)
        yield server
    finally:
        localpg.stop(server, mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Database:
    server: localpg.LocalServer
    name: str

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, **kwargs)

    def query(self, sql: str, params=None) -> list[tuple]:
        with self.connect() as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def scalar(self, sql: str, params=None):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def tables(self) -> set[str]:
        return {r[0] for r in self.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}

    def history(self) -> list[tuple]:
        return self.query("SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version")


def create_database(server: localpg.LocalServer, name: str) -> Database:
    from psycopg import sql

    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return Database(server, name)


def drop_database(server: localpg.LocalServer, name: str) -> None:
    from psycopg import sql

    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db(pg_server):
    database = create_database(pg_server, f"t_{uuid.uuid4().hex[:12]}")
    yield database
    drop_database(pg_server, database.name)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


def run_dbctl(*args: str, env: dict | None = None, cwd: Path | str = REPO, timeout: float = 120,
              input: str | None = None) -> Result:
    """Run the real `dbctl` in a subprocess, as a user or a Job would."""
    proc = subprocess.run([sys.executable, "-m", "dbctl", *args], cwd=cwd, env=dbctl_env(env), capture_output=True,
                          text=True, timeout=timeout, input=input)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def dbctl_env(env: dict | None) -> dict:
    """This environment less DATABASE_URL, PG* and DBCTL_*, plus `env`: what a test's dbctl sees."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DBCTL_", "DATABASE_URL", "PG"))}
    full_env.update(env or {})
    return full_env


def start_dbctl(*args: str, env: dict | None = None) -> subprocess.Popen:
    """The real `dbctl` started in the background, its output piped (text), for tests that act while it runs."""
    return subprocess.Popen([sys.executable, "-m", "dbctl", *args], cwd=REPO, env=dbctl_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lock_then_release(proc: subprocess.Popen, holder, while_waiting=None) -> str:
    """Close `holder` (a connection holding the migration lock) once `proc` says it waits for the lock,
    however long it took to start on a busy machine (calling `while_waiting` first, if given); the
    lines read until then are returned."""
    seen = ""
    while "waiting for the migration lock" not in seen:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    if while_waiting is not None:
        while_waiting()
    holder.close()
    return seen


def run_main(*args: str, env: dict | None = None) -> Result:
    """`dbctl ARGS` through its real entry point (main: error handling, exit codes) in this process,
    for tests that run it hundreds of times (a new interpreter costs half a second). With `env`, the
    run sees only that of DATABASE_URL, PG* and DBCTL_*, as run_dbctl does."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from dbctl.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    if env is not None:
        for key in [k for k in os.environ if k.startswith(("DBCTL_", "DATABASE_URL", "PG"))]:
            del os.environ[key]
        os.environ.update(env)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Result(code, out.getvalue(), err.getvalue())


def leaf_commands(group, path: tuple[str, ...] = ()):
    """Every command under a click group, groups walked: (path of names, command)."""
    import click

    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from leaf_commands(command, path + (name,))
        else:
            yield path + (name,), command


def assert_clean_error(result: Result, code: int, *fragments: str) -> None:
    """One `Error: ...` line on stderr, the exit code, no traceback, no password."""
    assert result.code == code, result.output
    assert "Traceback" not in result.output, result.output
    error_lines = [line for line in result.err.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.err
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]
    assert "s3cret-pw" not in result.output


@pytest.fixture
def migrations_dir(tmp_path):
    """A private copy of the Kiro migrations that a test may change."""
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, target)
    return target
