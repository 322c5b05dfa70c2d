"""The developer's environment: which way `make up` runs, what is wrong with it, and is everything healthy.

Plain functions returning plain data (Check rows, a Choice); devenv_cli.py prints them. Used by
`dbctl dev up`, `dbctl doctor` (Tilt's dev-setup), `dbctl health-check` and `dbctl dev reset`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dbctl.urls import mask_url, refused_form

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    name: str
    state: str  # ok, warn or FAIL
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.state:<4} {self.name}: {self.detail}"
        return text + (f"; fix: {self.fix}" if self.fix and self.state != OK else "")


@dataclass
class Target:
    """Where the dev environment runs: the embedded server (no cluster), or a namespace behind a port-forward."""
    cluster: bool
    namespace: str = "kiro-dev"
    secret_name: str = "kiro-db-credentials"
    postgres_port: int = 5432
    migration_job: str = "database-migration"
    seed_job: str = "database-seed"
    options_file: str | None = None

    def database_url(self) -> str:
        if self.cluster:
            from dbctl.k8s import jobs as k8s

            return k8s.cluster_database_url(self.namespace, self.secret_name, self.postgres_port)
        from dbctl.devenv import local_postgres as localpg

        return localpg.from_environment().url()

    def describe(self) -> str:
        return f"namespace {self.namespace} (cluster)" if self.cluster else "the local PostgreSQL (no cluster)"


# ---------------------------------------------------------------- `make up`: which pipeline

@dataclass
class Choice:
    mode: str  # cluster, no-cluster or local
    reason: str

    @property
    def command(self) -> list[str]:
        if self.mode == "cluster":
            return ["tilt", "up"]
        if self.mode == "no-cluster":
            return ["tilt", "up", "--", "--no-cluster"]
        return ["dbctl", "local", "up"]


def choose(tilt: str | None, cluster_ok: bool, cluster_detail: str) -> Choice:
    """Tilt and a cluster: tilt up; Tilt alone: tilt up -- --no-cluster; no Tilt: the local pipeline."""
    if not tilt:
        return Choice("local", "Tilt is not installed (no `tilt` on PATH), so the plain local pipeline runs "
                               "(install Tilt from https://docs.tilt.dev/install.html for the full environment)")
    if cluster_ok:
        return Choice("cluster", f"Tilt is installed ({tilt}) and a Kubernetes cluster answers ({cluster_detail})")
    return Choice("no-cluster", f"Tilt is installed ({tilt}) but no Kubernetes cluster answers ({cluster_detail}), "
                                "so Tilt runs everything as local processes")


def probe_cluster(timeout: float = 5.0) -> tuple[bool, str]:
    """Does the current kube context answer quickly? (the server's version, through the API)."""
    from dbctl.k8s import jobs as k8s

    return k8s.probe(timeout)


# ---------------------------------------------------------------- where Tilt is

def find_tilt() -> str | None:
    """Tilt's executable: on PATH, else the Tilt that runs this command (a Tilt button or trigger
    inherits Tilt's environment, whose PATH need not hold Tilt itself), else None."""
    import shutil

    on_path = shutil.which("tilt")
    if on_path:
        return on_path
    running_us = tilt_ancestor()
    if running_us:
        return f"{running_us} (the Tilt running this command; not on PATH)"
    if os.environ.get("TILT_PORT"):  # Tilt sets it for its local commands (internal/localexec in Tilt's source)
        return f"running under Tilt (TILT_PORT={os.environ['TILT_PORT']}); its binary is not on PATH"
    return None


def tilt_ancestor(pid: int | None = None) -> str | None:
    """The executable of the nearest ancestor process named tilt, read from /proc (Linux); else None."""
    pid = os.getppid() if pid is None else pid
    for _ in range(32):  # a shell or two sit between Tilt and us at most; the cap guards against a loop
        if pid <= 1:
            return None
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:  # no /proc, or a process of another user
            exe = ""
        if Path(exe.removesuffix(" (deleted)")).name == "tilt":
            return exe
        pid = parent_pid(pid)
    return None


def parent_pid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ')'
    return int(stat.rpartition(")")[2].split()[1])


# ---------------------------------------------------------------- checks

def check_tools(target: Target) -> list[Check]:
    import shutil

    tilt = find_tilt()
    checks = [Check("tool tilt", OK, tilt) if tilt else
              Check("tool tilt", WARN, "not installed", "install it: https://docs.tilt.dev/install.html")]
    tools = []
    if target.cluster:
        # dbctl talks to the API itself; kubectl is for people (the README's manual steps).
        tools += [("kubectl", "https://kubernetes.io/docs/tasks/tools/ (dbctl does not need it; the README's "
                              "kubectl steps do)", False),
                  ("docker", "https://docs.docker.com/engine/install/", True)]
    else:
        tools += [("redis-server", "apt-get install redis-server (without it the redis resource is left out)", False)]
    for name, fix, required in tools:
        path = shutil.which(name)
        if path:
            checks.append(Check(f"tool {name}", OK, path))
        else:
            checks.append(Check(f"tool {name}", FAIL if required else WARN, "not installed", f"install it: {fix}"))
    if not target.cluster:
        from dbctl.devenv import local_postgres as localpg
        from dbctl.errors import ConfigError

        try:
            checks.append(Check("tool PostgreSQL server", OK, str(localpg.find_bindir())))
        except ConfigError as exc:
            checks.append(Check("tool PostgreSQL server", FAIL, "initdb/pg_ctl not found",
                                f"{exc} (./scripts/install-system-deps does it)"))
    return checks


def check_kube(target: Target) -> list[Check]:
    """The current context answers, the namespace exists, and the migration Job's last run."""
    from dbctl.errors import DbctlError
    from dbctl.k8s import cluster

    try:
        api = cluster.connect()
        version = cluster.server_version(api)
        exists = cluster.read(api, "namespace", target.namespace, target.namespace) is not None
    except DbctlError as exc:  # its message says what to do
        return [Check("kube context", FAIL, str(exc))]
    checks = [Check("kube context", OK, f"{api.context} ({api.server}, Kubernetes {version})")]
    if not exists:
        return checks + [Check(f"namespace {target.namespace}", FAIL, "missing", "tilt up (it creates the namespace)")]
    checks.append(Check(f"namespace {target.namespace}", OK, "exists"))
    try:
        return checks + [check_migration_job(api, target)]
    except DbctlError as exc:
        return checks + [Check(f"job {target.migration_job}", FAIL, str(exc))]


def check_migration_job(api, target: Target) -> Check:
    """The migration Job's outcome and its last pod, as `dbctl dev status` shows them."""
    from dbctl.k8s import cluster, jobs as k8s

    name = f"job {target.migration_job}"
    job = cluster.read(api, "job", target.migration_job, target.namespace)
    state, detail = k8s.job_outcome(job)
    if job is not None:
        pods = cluster.list_pods(api, target.namespace, f"controller-uid={job['metadata']['uid']}")
        detail += f"; {k8s.describe_pod(pods[-1])}" if pods else ""
    if state in ("complete", "running"):
        return Check(name, OK, f"{state}: {detail}")
    if state == "failed":
        return Check(name, FAIL, detail, f"its log says why (kubectl logs job/{target.migration_job} -n "
                                         f"{target.namespace}); fix the migration, then tilt trigger db-migrate")
    return Check(name, WARN, detail, "tilt trigger db-migrate runs it (its TTL removes it a day after it ends)")


def check_database(target: Target, migrations_dir: str) -> list[Check]:
    """PostgreSQL reachable, then every migration applied and the critical tables there."""
    from dbctl import config
    from dbctl.engine import postgres
    from dbctl.errors import DbctlError
    from dbctl.engine.source import load_migrations
    from dbctl.engine.verify import check_schema

    if target.cluster:
        where_fix = (f"tilt up, and see the postgres resource in Tilt (its port-forward puts it on "
                     f"localhost:{target.postgres_port})")
    else:
        where_fix = "make up, or tilt up -- --no-cluster, or dbctl local start"
    try:
        url = target.database_url()
        with postgres.connect(url, timeout=3) as conn:
            version = postgres.server_version(conn)
            checks = [Check("PostgreSQL", OK, f"reachable at {mask_url(url)} (PostgreSQL {version})")]
            try:
                migrations = load_migrations(migrations_dir)
            except DbctlError as exc:
                return checks + [Check("migrations", FAIL, str(exc), "fix the file named above")]
            report = check_schema(conn, migrations, list(config.critical_tables()), lock_wait=3)
    except DbctlError as exc:
        return [Check("PostgreSQL", FAIL, str(exc), where_fix)]
    if report.ok:
        checks.append(Check("migrations", OK, f"all {len(migrations.ups)} applied, version {report.current_version}, "
                                              "critical tables present"))
        from dbctl.checks import drift  # a hand-made change the migrations do not know about (dbctl drift)

        same, detail = drift.summary(url, migrations)
        checks.append(Check("schema drift", OK if same else WARN, detail,
                            "dbctl drift lists the differences; put intended changes in a migration (dbctl new)"))
    else:
        checks.append(Check("migrations", FAIL, "; ".join(report.problems), "tilt trigger db-migrate (or dbctl migrate)"))
    return checks


def check_redis(url: str | None) -> list[Check]:
    if not url:
        return []
    from dbctl.errors import DbctlError
    from dbctl.devenv.waiting import ping_redis

    try:
        ping_redis(url, timeout=2)
    except (OSError, DbctlError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        shown = refused_form(url)  # a URL refused as ambiguous is shown without what the masker cannot place
        return [Check("Redis", FAIL, f"{shown}: {detail}", "tilt up (the redis resource), or install redis-server")]
    return [Check("Redis", OK, f"answers PING at {mask_url(url)}")]


def check_backend(url: str | None) -> list[Check]:
    if not url:
        return []
    import urllib.error
    import urllib.request  # http.client, email and ssl: only when there is a backend to ask

    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return [Check("backend", FAIL, f"{url}: {reason}", "tilt up (the backend resource starts after the migration)")]
    summary = _health_summary(body)
    if status == 200:
        return [Check("backend", OK, f"{url} answered 200 {summary}".rstrip())]
    return [Check("backend", FAIL, f"{url} answered {status} {summary}".rstrip(),
                  "see the backend resource's log in Tilt; tilt trigger db-migrate if the schema is behind")]


def _health_summary(body: bytes) -> str:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return ""
    problems = data.get("problems") or []
    return f"({data.get('status', '?')}{': ' + '; '.join(problems) if problems else ''})"


def doctor(target: Target, migrations_dir: str, redis_url: str | None, backend_url: str | None) -> list[Check]:
    checks = check_tools(target)
    if target.cluster:
        checks += check_kube(target)
    return checks + health(target, migrations_dir, redis_url, backend_url)


def health(target: Target, migrations_dir: str, redis_url: str | None, backend_url: str | None) -> list[Check]:
    return check_database(target, migrations_dir) + check_redis(redis_url) + check_backend(backend_url)


# ---------------------------------------------------------------- db-reset's confirmation

CONFIRM_WINDOW = 60.0


def confirm_file() -> Path:
    """Next to the local server's directory (.dev/ by default)."""
    from dbctl.devenv import local_postgres as localpg

    return localpg.from_environment().root.parent / "db-reset.confirm"


def two_step_confirm(what: str, now: float | None = None) -> bool:
    """True on the second request for the same `what` within CONFIRM_WINDOW seconds; else remember this one.

    `tilt trigger` cannot answer a prompt, so a reset is confirmed by triggering it twice,
    as Tilt's own confirm buttons ask for a second click.
    """
    now = time.time() if now is None else now
    path = confirm_file()
    try:
        stamp, _, previous = path.read_text().partition("\n")
        if previous == what and 0 <= now - float(stamp) <= CONFIRM_WINDOW:
            path.unlink()
            return True
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{now}\n{what}")
    return False


def on_terminal() -> bool:
    return sys.stdin.isatty()
