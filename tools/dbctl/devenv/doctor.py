"""The developer's environment: which way `make up` runs, what is wrong with it, and is everything healthy.

Plain functions returning plain data (Check rows, a Choice); devenv_cli.py prints them. Used by
`dbctl dev up`, `dbctl doctor` (Tilt's dev-setup), `dbctl health-check` and `dbctl dev reset`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
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
    """Does the current kube context answer quickly? (kubectl cluster-info with a request timeout)."""
    if shutil.which("kubectl") is None:
        return False, "kubectl is not installed"
    try:
        proc = subprocess.run(["kubectl", "cluster-info", f"--request-timeout={int(timeout)}s"],
                              capture_output=True, text=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return False, f"kubectl cluster-info did not answer within {timeout:g}s"
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip() and "cluster-info dump" not in line]
        return False, (lines[-1].strip() if lines else "kubectl cluster-info failed")
    context = subprocess.run(["kubectl", "config", "current-context"], capture_output=True, text=True,
                             timeout=timeout).stdout.strip()
    return True, f"context {context or '?'}"


# ---------------------------------------------------------------- checks

def check_tools(target: Target) -> list[Check]:
    checks = []
    tools = [("tilt", "https://docs.tilt.dev/install.html", False)]
    if target.cluster:
        tools += [("kubectl", "https://kubernetes.io/docs/tasks/tools/", True),
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
    from dbctl.k8s import jobs as k8s
    from dbctl.errors import DbctlError

    try:
        context, exists = k8s.context_and_namespace(target.namespace)
    except DbctlError as exc:
        return [Check("kube context", FAIL, str(exc),
                      "start your cluster (kind create cluster) or select one (kubectl config use-context NAME)")]
    checks = [Check("kube context", OK, context)]
    if exists:
        checks.append(Check(f"namespace {target.namespace}", OK, "exists"))
    else:
        checks.append(Check(f"namespace {target.namespace}", FAIL, "missing", "tilt up (it creates the namespace)"))
    return checks


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
            report = check_schema(conn, migrations, list(config.critical_tables()))
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
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
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
