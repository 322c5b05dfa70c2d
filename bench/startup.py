"""Start-up cost of the commands the containers run, under the manifests' CPU limit.

    sudo .venv/bin/python bench/startup.py                  # 5 runs of each, 100m cap, a table of medians
    .venv/bin/python bench/startup.py --runs 9 --json out.json
    .venv/bin/python bench/startup.py --rev HEAD~3          # dbctl at an earlier commit beside this tree
    .venv/bin/python bench/startup.py --rev A B             # two commits side by side (clean worktrees)
    .venv/bin/python bench/startup.py --imports 12          # and what each command imports (python -X importtime)

Every command and its environment come from the rendered manifests
(dbctl.k8s.render.local_command), so what is timed is what the pod runs: the
migration Job on a fresh database and on an up-to-date one, the seed Job, each
init container of the backend, and `dbctl serve` until its readiness probe
first answers 200. PostgreSQL (a private server) and Redis (redis-server, when
installed) run here, outside the cap; only the measured process tree is capped.

The cap is a CPU cgroup with the limit's CFS quota (100m = 10 ms of CPU every
100 ms period), which is what the kubelet sets for a container's CPU limit:
a process that needs 0.2 s of CPU takes about 2 s of wall time under it.
cgroup v1 (cpu.cfs_quota_us) and v2 (cpu.max) both work; creating one needs
root. --cpu none runs uncapped.

Two byte-code modes: `pyc` (every module has its .pyc, as in a byte-compiled
image) and `no-pyc` (dbctl and its dependencies are copied without any .pyc
and nothing is written, so they are compiled at every start, which is what a
read-only root filesystem does to an image whose own code was not
byte-compiled; the standard library keeps its .pyc files, as Python's images
ship them).

Each case runs --runs times, interleaved with the others; the table shows the
median wall time and the median CPU time (user + system of the whole process
tree, from wait4). Never a timed assertion: this measures, tests assert
behaviour.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Keep the pod's environment: only these come from this shell.
BASE_ENV = ("PATH", "HOME", "LANG", "PYTHONPATH")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import importtime  # noqa: E402

from dbctl.devenv import local_postgres as localpg  # noqa: E402
from dbctl.k8s import render  # noqa: E402


# ---------------------------------------------------------------- the CPU cap


class CpuCap:
    """A CPU cgroup with a CFS quota; processes join it from preexec_fn."""

    def __init__(self, cpu: str):
        self.path: Path | None = None
        if cpu == "none":
            return
        cores = render.parse_quantity(cpu)
        if cores is None or cores <= 0:
            sys.exit(f"--cpu {cpu!r} is not a CPU quantity; use e.g. 100m, 0.5 or none")
        period = 100_000
        quota = int(cores * period)
        v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        parent = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/cpu")
        path = parent / f"dbctl-startup-{os.getpid()}"
        try:
            path.mkdir()
            if v2:
                (path / "cpu.max").write_text(f"{quota} {period}\n")
            else:
                (path / "cpu.cfs_period_us").write_text(f"{period}\n")
                (path / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        except OSError as exc:
            sys.exit(f"cannot create the CPU cgroup {path}: {exc.strerror}; run as root, or --cpu none")
        self.path = path

    def join(self) -> None:  # runs in the child between fork and exec
        if self.path is not None:
            with open(self.path / "cgroup.procs", "w") as procs:
                procs.write(str(os.getpid()))

    def remove(self) -> None:
        if self.path is None:
            return
        for _ in range(50):  # the last children may still be exiting
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


# ---------------------------------------------------------------- the peers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peers:
    """A private PostgreSQL, a migrated template database, and Redis when installed."""

    def __init__(self, root: Path):
        self.server = localpg.LocalServer(root / "pg", port=free_port(), user="bench", password="bench",
                                          database="postgres", durable=False)
        localpg.init(self.server)
        localpg.start(self.server)
        self.redis = None
        self.redis_url = None
        if shutil.which("redis-server"):
            port = free_port()
            self.redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                           "--appendonly", "no"], stdout=subprocess.DEVNULL)
            self.redis_url = f"redis://127.0.0.1:{port}"
            wait_for_port(port)
        self.template = self.create()
        subprocess.run([sys.executable, "-m", "dbctl", "migrate", "--database-url", self.url(self.template),
                        "--migrations", str(REPO / "migrations")], check=True, capture_output=True)
        self.admin(f"ALTER DATABASE {self.template} WITH IS_TEMPLATE true")

    def url(self, db: str) -> str:
        return self.server.url(db)

    def admin(self, sql: str) -> None:
        psql = localpg.find_bindir() / "psql"
        subprocess.run([str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url("postgres"), "-c", sql],
                       check=True, capture_output=True)

    def create(self, migrated: bool = False) -> str:
        name = f"s_{uuid.uuid4().hex[:10]}"
        self.admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {self.template}" if migrated else ""))
        return name

    def drop(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait()
        localpg.stop(self.server, mode="immediate")


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


# ---------------------------------------------------------------- the cases


@dataclass
class Case:
    """One command as a container runs it, and the database state it needs."""

    name: str
    workload: str | None  # a rendered Job/Deployment, or None for a baseline
    container: str | None
    database: str = "migrated"  # migrated, fresh, none
    serve: bool = False  # time until GET /health answers 200, then stop it
    argv: list[str] = field(default_factory=list)  # baselines only


def cases(peers: Peers) -> list[Case]:
    found = [
        Case("python -c pass (the interpreter alone)", None, None, "none", argv=[sys.executable, "-c", "pass"]),
        Case("dbctl --version", None, None, "none", argv=[sys.executable, "-m", "dbctl", "--version"]),
        Case("migration Job, Kiro set on a fresh database", "database-migration", "migrate", "fresh"),
        Case("migration Job, nothing to apply", "database-migration", "migrate"),
        Case("seed Job, on a migrated database", "database-seed", "seed"),
    ]
    containers = render.container_commands()
    for (workload, container), spec in containers.items():
        if workload != render.RenderOptions().backend_name:
            continue
        if container == "backend":
            found.append(Case("backend: serve until /health answers 200", workload, container, serve=True))
        elif any("REDIS" in e["name"] for e in spec.get("env", [])) and peers.redis_url is None:
            print(f"skipping init container {container}: redis-server is not installed", file=sys.stderr)
        else:
            found.append(Case(f"backend init container {container}", workload, container))
    return found


def command_for(case: Case, peers: Peers, db: str | None, port: int) -> tuple[list[str], dict]:
    base = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
    if case.workload is None:
        return list(case.argv), base
    overrides = {}
    spec = render.container_commands()[(case.workload, case.container)]
    names = {e["name"] for e in spec.get("env", [])}
    for name in ("DBCTL_REDIS_URL", "REDIS_URL"):
        if name in names:
            overrides[name] = peers.redis_url or "redis://127.0.0.1:1"
    command, env = render.local_command(case.workload, case.container, database_url=peers.url(db or "postgres"),
                                        app_dir=REPO, overrides=overrides)
    # A Redis URL given as an argument points at the local Redis too.
    command = [peers.redis_url if prev == "--redis-url" else arg for prev, arg in zip([None, *command], command)]
    if case.serve:  # listen on a free local port instead of the pod's 8080
        command = [arg if prev not in ("--port",) else str(port) for prev, arg in zip([None, *command], command)]
        command = [arg if prev != "--host" else "127.0.0.1" for prev, arg in zip([None, *command], command)]
    return command, {**base, **env}


def measure(case: Case, peers: Peers, cap: CpuCap, mode_env: dict) -> dict:
    db = None
    if case.database == "fresh":
        db = peers.create()
    elif case.database == "migrated":
        db = peers.create(migrated=True)
    port = free_port()
    command, env = command_for(case, peers, db, port)
    env.update(mode_env)
    try:
        with tempfile.TemporaryFile() as out, contextlib.ExitStack() as stack:
            start = time.perf_counter()
            proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, preexec_fn=cap.join)
            stack.callback(lambda: proc.poll() is None and (proc.kill(), proc.wait()))  # interrupted: no orphan
            if case.serve:
                ready = wait_until_ready(f"http://127.0.0.1:{port}/health", proc)
                wall = time.perf_counter() - start
                proc.send_signal(signal.SIGTERM)
            _, status, usage = os.wait4(proc.pid, 0)
            if not case.serve:
                wall = time.perf_counter() - start
                ready = os.waitstatus_to_exitcode(status) == 0
            if not ready:
                out.seek(0)
                raise RuntimeError(f"{case.name} failed: {' '.join(command)}\n"
                                   + out.read().decode(errors="replace")[-2000:])
    finally:
        if db:
            peers.drop(db)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime}


def wait_until_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.01)
    return False


def import_profile(case: Case, peers: Peers, top: int) -> dict:
    """Modules a command imports, and the biggest by cumulative time (python -X importtime, uncapped)."""
    db = peers.create(migrated=case.database == "migrated") if case.database != "none" else None
    try:
        command, env = command_for(case, peers, db, free_port())
        if case.serve:
            return {}
        command = [command[0], "-X", "importtime", *command[1:]]
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    finally:
        if db:
            peers.drop(db)
    return importtime.profile(proc.stderr, top)


# ---------------------------------------------------------------- running it


# dbctl's runtime dependencies (pyproject.toml), which an image installs beside it.
RUNTIME_DISTS = ("click", "psycopg2-binary", "PyYAML", "pglast")


def byte_compile() -> None:
    """Write the .pyc files of dbctl and its dependencies, as an image build does."""
    import dbctl

    compileall.compile_dir(Path(dbctl.__file__).parent, quiet=2)
    for dist in RUNTIME_DISTS:
        for path in _dist_files(dist):
            if path.suffix == ".py":
                compileall.compile_file(path, quiet=2)


def _dist_files(dist: str) -> list[Path]:
    from importlib import metadata

    return [Path(f.locate()) for f in metadata.files(dist) or []
            if ".dist-info" not in str(f) and "__pycache__" not in str(f)]


def copy_without_pyc(target: Path) -> Path:
    """dbctl and its dependencies copied with no .pyc: every start compiles them again."""
    import dbctl

    shutil.copytree(Path(dbctl.__file__).parent, target / "dbctl", ignore=shutil.ignore_patterns("__pycache__"))
    for dist in RUNTIME_DISTS:
        for path in _dist_files(dist):
            site = next(p for p in path.parents if p.name == "site-packages")
            copy = target / path.relative_to(site)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
    return target


MODES = {
    "pyc": {},
    # The copies come first on the path, and no .pyc is ever written for them.
    "no-pyc": {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": "{copies}"},
}


def run(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="dbctl-startup-"))
    os.chmod(root, 0o755)
    copies = copy_without_pyc(root / "no-pyc")
    byte_compile()
    cap = CpuCap(args.cpu)
    peers = Peers(root)
    results = {"cpu": args.cpu, "runs": args.runs, "python": sys.version.split()[0], "cases": {}}
    try:
        selected = [c for c in cases(peers) if not args.only or any(o in c.name for o in args.only)]
        for mode in args.modes:
            mode_env = {k: v.format(copies=copies) for k, v in MODES[mode].items()}
            samples = {c.name: [] for c in selected}
            for _ in range(args.runs):  # interleaved, so a busy moment spreads over every case
                for case in selected:
                    samples[case.name].append(measure(case, peers, cap, mode_env))
            for case in selected:
                runs = samples[case.name]
                results["cases"].setdefault(case.name, {})[mode] = {
                    "wall_s": statistics.median(r["wall_s"] for r in runs),
                    "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                    "wall_all": [round(r["wall_s"], 3) for r in runs],
                }
        if args.imports:
            for case in selected:
                profile = import_profile(case, peers, args.imports)
                if profile:
                    results["cases"][case.name]["imports"] = profile
    finally:
        peers.stop()
        cap.remove()
        shutil.rmtree(root, ignore_errors=True)
    return results


def backend_total(results: dict, mode: str) -> float | None:
    """The backend's path from the Job's completion to Ready: its init containers, then serve to 200."""
    parts = [v[mode]["wall_s"] for k, v in results["cases"].items()
             if k.startswith("backend") and mode in v]
    return sum(parts) if parts else None


def print_table(results: dict, before: dict | None = None) -> None:
    modes = [m for m in MODES if any(m in v for v in results["cases"].values())]
    print(f"\nmedian of {results['runs']} runs under cpu {results['cpu']} (wall s / cpu s)")
    header = "| command | " + " | ".join(
        (f"{m} before | {m} after" if before else m) for m in modes) + " |"
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))

    def cell(data, name, mode):
        got = data["cases"].get(name, {}).get(mode)
        return f"{got['wall_s']:.2f} / {got['cpu_s']:.2f}" if got else "-"

    names = list(results["cases"])
    if before:
        names += [n for n in before["cases"] if n not in names]
    for name in names:
        cells = []
        for m in modes:
            cells += ([cell(before, name, m)] if before else []) + [cell(results, name, m)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    totals = []
    for m in modes:
        if before:
            b = backend_total(before, m)
            totals.append(f"{b:.2f}" if b else "-")
        a = backend_total(results, m)
        totals.append(f"{a:.2f}" if a else "-")
    print("| backend total: init containers + serve to ready (wall s) | " + " | ".join(totals) + " |")
    for name, data in results["cases"].items():
        if "imports" in data:
            top = ", ".join(f"{n} {ms}" for ms, n in data["imports"]["top"])
            print(f"\n{name}: {data['imports']['modules']} modules; biggest (cumulative ms, uncapped): {top}")


def run_revision(args, rev: str) -> dict:
    """The same measurements with dbctl's source from an earlier commit (its own manifests too)."""
    tree = Path(tempfile.mkdtemp(prefix="dbctl-startup-rev-")) / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True,
                   capture_output=True)
    out = tree.parent / "results.json"
    try:
        argv = [sys.executable, str(Path(__file__).resolve()), "--runs", str(args.runs), "--cpu", args.cpu,
                "--json", str(out), "--modes", *args.modes, "--imports", str(args.imports)]
        if args.only:
            argv += ["--only", *args.only]
        env = {**os.environ, "PYTHONPATH": str(tree / "tools")}
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(tree.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cpu", default="100m", help="the CPU limit to impose (100m, the manifests'), or none")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--only", nargs="*", help="run only the cases whose name contains one of these")
    parser.add_argument("--rev", nargs="+", metavar="REV",
                        help="measure dbctl at this git revision (before) beside this tree, or at two (before after)")
    parser.add_argument("--imports", type=int, default=0, metavar="N", help="show each command's N biggest imports")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--before-json", type=Path, help="show these earlier results beside the new ones")
    args = parser.parse_args()
    if args.rev and len(args.rev) > 2:
        parser.error("--rev takes one or two revisions")
    before = run_revision(args, args.rev[0]) if args.rev else None
    if args.before_json:
        before = json.loads(args.before_json.read_text())
    results = run_revision(args, args.rev[1]) if args.rev and len(args.rev) == 2 else run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print_table(results, before)


if __name__ == "__main__":
    main()
