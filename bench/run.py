"""dbctl beside real peers, on one durable PostgreSQL, in one go.

    make bench                       # bench/setup, this script, then bench/chart.py
    .venv/bin/python bench/run.py --rounds 5 --count 1000

Tools: dbctl; dbmate (its Go binary from npm, run directly); yoyo-migrations
(bench/.venv); sqitch (Debian, its client pointed at PostgreSQL's own psql
binary); and plain psql, the floor: one session running the files one after
another (`psql -f a.sql -f b.sql ...`). Each apply gets a fresh database.

Workloads: the 8 Kiro files and N generated ones, applied to a fresh
database; the no-op run once all are applied; `status` on N applied. The
floor for no-op and status is psql reading the history table (start, connect,
one query), which is the least any tool has to do.

Every database is created, and dropped, outside the timing; before each timed
apply, a CHECKPOINT and sync(2) flush what earlier runs wrote, so no run pays
for the one before it.

Where Python cannot go below, for no-op and status: `python` (the project's
interpreter, `-c pass`), `python+psycopg2` (and `import psycopg2`, the driver
dbctl uses) and `python+psycopg2+query` (and connect, and psql's one
history query). They apply nothing, so they sit out the apply workloads.

Each measurement is a whole process tree: wall time around spawn and wait,
peak RSS from wait4's ru_maxrss (the largest resident set of any process in
the tree: sqitch's psql children count). Rounds interleave the tools in a
rotating order; each tool's ratios to psql and to dbmate (the targets' unit)
are taken within a round, then the median over rounds is reported.

After the timed rounds, one untimed pass runs every command again through a
counting proxy (bench/roundtrips.py: round trips and connections, any
client), with PYTHONPROFILEIMPORTTIME=1 for the Python ones (modules imported,
the biggest; bench/importtime.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
import importtime  # noqa: E402
import roundtrips  # noqa: E402
import workload  # noqa: E402

from dbctl.devenv import local_postgres as localpg  # noqa: E402

USER = PASSWORD = "bench"
DBCTL = REPO / ".venv" / "bin" / "dbctl"
DBMATE = BENCH / "node_modules" / "@dbmate" / "linux-x64" / "bin" / "dbmate"
YOYO = BENCH / ".venv" / "bin" / "yoyo"
PYTHON = REPO / ".venv" / "bin" / "python"
FLOORS = ("python", "python+psycopg2", "python+psycopg2+query")  # no-op and status only
TOOLS = ("psql", "dbctl", "dbmate", "yoyo", "sqitch", *FLOORS)
HISTORY = "SELECT version, checksum FROM _sqlx_migrations ORDER BY version"
QUERY = ("import sys, psycopg2; c = psycopg2.connect(sys.argv[1]); c.autocommit = True; k = c.cursor(); "
         "k.execute(sys.argv[2]); k.fetchall()")  # one round trip after connecting, as psql


def psql_binary() -> Path:
    """PostgreSQL's own psql, not Debian's Perl wrapper in /usr/bin (its start-up is not psql's)."""
    return localpg.find_bindir() / "psql"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_python(tool: str) -> bool:
    return tool.startswith(("dbctl", "yoyo", "python"))


def run_measured(cmd, *, cwd=None, env=None, preexec_fn=None, output=False) -> dict:
    """Wall seconds and peak RSS (MiB) of a whole process tree (and its output); raises on a non-zero exit."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=preexec_fn)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            tail = out.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{cmd[0]} exited {proc.returncode}:\n{tail}")
        out.seek(0)
        text = out.read().decode(errors="replace") if output else None
    return {"wall_s": wall, "rss_mib": usage.ru_maxrss / 1024, **({"output": text} if output else {})}


class Bench:
    def __init__(self, server: localpg.LocalServer, work: Path):
        self.server = server
        self.work = work
        self.port = server.port  # the tools' port: the counting proxy's during the untimed pass
        self.psql = str(psql_binary())
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DBCTL_", "DATABASE_URL"))}
        self.env.update({"SQITCH_FULLNAME": "Bench", "SQITCH_EMAIL": "bench@example.invalid",
                         "SQITCH_USER_CONFIG": str(work / "no-user-sqitch.conf")})

    def url(self, db: str) -> str:
        return replace(self.server, port=self.port).url(db)

    def admin(self, sql: str) -> None:  # straight to the server, never counted
        subprocess.run([self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.server.url("postgres"), "-c", sql],
                       check=True, env=self.env, capture_output=True)

    def fresh_db(self) -> str:
        name = f"b_{uuid.uuid4().hex[:10]}"
        self.admin(f"CREATE DATABASE {name}")
        self.settle()
        return name

    def settle(self) -> None:
        """Flush PostgreSQL's and the kernel's dirty pages now, so no timed run pays for the previous one's."""
        self.admin("CHECKPOINT")
        os.sync()
        time.sleep(0.2)

    def drop_db(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    # One command line per tool and action. `dirs` from workload.write_layouts.
    def apply_cmd(self, tool: str, db: str, dirs: dict, files: list[Path]):
        url = self.url(db)
        if tool == "psql":
            cmd = [self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]
            for f in files:
                cmd += ["-f", str(f)]
            return cmd, None
        if tool.startswith("dbctl"):
            return [*self.dbctl(tool), "migrate", "--migrations", str(dirs["plain"]), "--database-url", url], None
        if tool == "dbmate":
            return [str(DBMATE), "--url", url + "?sslmode=disable", "--migrations-dir", str(dirs["dbmate"]),
                    "--no-dump-schema", "migrate"], None
        if tool == "yoyo":
            return [str(YOYO), "apply", "--batch", "--no-config-file", "--database", url, str(dirs["yoyo"])], None
        if tool == "sqitch":
            return ["sqitch", "--quiet", "deploy", "--target", self.sqitch_target(db)], dirs["sqitch"]
        raise ValueError(tool)

    def status_cmd(self, tool: str, db: str, dirs: dict, reference_db: str):
        url = self.url(db)
        if tool == "psql":  # the floor: start, connect, read the history
            return [self.psql, "-X", "-q", "-d", self.url(reference_db), "-c", HISTORY], None
        if tool == "python":
            return [str(PYTHON), "-c", "pass"], None
        if tool == "python+psycopg2":
            return [str(PYTHON), "-c", "import psycopg2"], None
        if tool == "python+psycopg2+query":
            return [str(PYTHON), "-c", QUERY, self.url(reference_db), HISTORY], None
        if tool.startswith("dbctl"):
            return [*self.dbctl(tool), "status", "--migrations", str(dirs["plain"]), "--database-url", url], None
        if tool == "dbmate":
            return [str(DBMATE), "--url", url + "?sslmode=disable", "--migrations-dir", str(dirs["dbmate"]),
                    "status"], None
        if tool == "yoyo":
            return [str(YOYO), "list", "--no-config-file", "--database", url, str(dirs["yoyo"])], None
        if tool == "sqitch":
            return ["sqitch", "--quiet", "status", "--target", self.sqitch_target(db)], dirs["sqitch"]
        raise ValueError(tool)

    def noop_cmd(self, tool: str, db: str, dirs: dict, files: list[Path], reference_db: str):
        if tool == "psql" or tool in FLOORS:
            return self.status_cmd(tool, db, dirs, reference_db)
        return self.apply_cmd(tool, db, dirs, files)

    def dbctl(self, tool: str) -> list[str]:
        """`dbctl`, or `dbctl@REV`: the engine as it was at a git revision (--before), same venv."""
        if tool == "dbctl":
            return [str(DBCTL)]
        tree = self.before_trees[tool]
        return ["env", f"PYTHONPATH={tree / 'tools'}", str(REPO / ".venv" / "bin" / "python"), "-m", "dbctl"]

    def sqitch_target(self, db: str) -> str:
        s = self.server
        return f"db:pg://{s.user}:{s.password}@127.0.0.1:{self.port}/{db}"

    def commands(self, tool: str, actions, dirs: dict, files: list[Path], reference_db: str):
        """(action, cmd, cwd) of one tool in a round: apply to a fresh database, then no-op and status on it."""
        floor = tool in FLOORS
        db = None if floor else self.fresh_db()
        try:
            for action in actions:
                if action == "apply" and not floor:
                    yield action, *self.apply_cmd(tool, db, dirs, files)
                elif action == "noop":
                    yield action, *self.noop_cmd(tool, db, dirs, files, reference_db)
                elif action == "status":
                    yield action, *self.status_cmd(tool, db, dirs, reference_db)
        finally:
            if db:
                self.drop_db(db)

    def write_sqitch_conf(self, directory: Path) -> None:
        (directory / "sqitch.conf").write_text(
            "[core]\n\tengine = pg\n\tplan_file = sqitch.plan\n\ttop_dir = .\n"
            f"[engine \"pg\"]\n\tclient = {self.psql}\n", encoding="utf-8")


def median(values):
    return statistics.median(values) if values else None


def run(args) -> dict:
    for path, what in ((DBCTL, "make install"), (DBMATE, "bench/setup"), (YOYO, "bench/setup")):
        if not path.exists():
            sys.exit(f"{path} is missing; run {what} first")
    if not shutil.which("sqitch"):
        sys.exit("sqitch is missing; run bench/setup first")
    root = Path(tempfile.mkdtemp(prefix="dbctl-bench-"))
    os.chmod(root, 0o755)
    server = localpg.LocalServer(root / "pg", port=free_port(), user=USER, password=PASSWORD,
                                 database="postgres", durable=True)
    localpg.init(server)
    localpg.start(server)
    b = Bench(server, root)
    b.before_trees = {}
    for rev in args.before:  # earlier versions of dbctl, for before/after numbers
        tree = root / f"before-{rev}"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
        b.before_trees[f"dbctl@{rev}"] = tree
    # Byte-compiled, as the image is: with PYTHONDONTWRITEBYTECODE set, an edited module would otherwise
    # be compiled again at every run and counted against dbctl.
    for tools in [REPO / "tools", *(t / "tools" for t in b.before_trees.values())]:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tools / "dbctl")], check=True)
    results = {"rounds": args.rounds, "kiro_rounds": args.kiro_rounds, "count": args.count, "tools": list(args.tools), "workloads": {},
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "postgres": subprocess.run([b.psql, "--version"], capture_output=True,
                                                      text=True).stdout.strip(),
                           "durable": True}}
    try:
        sets = {"kiro": workload.kiro(), f"gen{args.count}": workload.generated(args.count)}
        for set_name, wl in sets.items():
            dirs = workload.write_layouts(wl, root / set_name)
            b.write_sqitch_conf(dirs["sqitch"])
            files = sorted(dirs["plain"].glob("*.sql"))
            reference = b.fresh_db()  # applied by dbctl once, untimed: psql's no-op/status floor reads it
            subprocess.run([str(DBCTL), "migrate", "--migrations", str(dirs["plain"]), "--database-url",
                            b.url(reference)], check=True, capture_output=True, env=b.env)
            actions = ["apply", "noop", "status"] if set_name != "kiro" else ["apply"]
            raw = {a: {t: [] for t in args.tools if a != "apply" or t not in FLOORS} for a in actions}
            rounds = args.kiro_rounds if set_name == "kiro" else args.rounds
            for r in range(rounds):
                order = list(args.tools[r % len(args.tools):]) + list(args.tools[: r % len(args.tools)])
                for tool in order:
                    with contextlib.closing(b.commands(tool, actions, dirs, files, reference)) as runs:
                        for action, cmd, cwd in runs:  # closing: its database is dropped now, even on an error
                            raw[action][tool].append(run_measured(cmd, cwd=cwd, env=b.env))
                print(f"{set_name} round {r + 1}/{rounds}: " + ", ".join(
                    f"{t} {raw['apply'][t][-1]['wall_s']:.2f}s" for t in raw["apply"]), flush=True)
            extra = counted_pass(b, args.tools, actions, dirs, files, reference)
            b.drop_db(reference)
            for action, per_tool in raw.items():
                summary = summarise(per_tool, list(per_tool))
                for tool, found in extra[action].items():
                    summary[tool].update(found)
                results["workloads"][f"{set_name} {action}"] = summary
        if args.count and "dbctl" in args.tools and not args.no_memory_limit:
            results["memory_limit"] = memory_limit_check(b, root, args.count)
    finally:
        localpg.stop(server, mode="fast")
        for tree in b.before_trees.values():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return results


def counted_pass(b: Bench, tools, actions, dirs: dict, files: list[Path], reference: str) -> dict:
    """Each tool's commands once more, untimed: round trips and connections through the proxy, and for
    the Python tools their imports (PYTHONPROFILEIMPORTTIME=1 is -X importtime for the same command line)."""
    found = {a: {} for a in actions}
    with roundtrips.counting(b.server.port) as counts:
        b.port = counts.port
        try:
            for tool in tools:
                env = {**b.env, "PYTHONPROFILEIMPORTTIME": "1"} if is_python(tool) else b.env
                with contextlib.closing(b.commands(tool, actions, dirs, files, reference)) as runs:
                    for action, cmd, cwd in runs:
                        before = counts.round_trips, counts.connections
                        out = run_measured(cmd, cwd=cwd, env=env, output=True)["output"]
                        found[action][tool] = {"round_trips": counts.round_trips - before[0],
                                               "connections": counts.connections - before[1]}
                        if is_python(tool):
                            found[action][tool]["imports"] = importtime.profile(out, 8)
        finally:
            b.port = b.server.port
    return found


def summarise(per_tool: dict, tools) -> dict:
    out = {}
    for tool in tools:
        runs = per_tool[tool]
        out[tool] = {
            "wall_s": median([m["wall_s"] for m in runs]),
            "rss_mib": median([m["rss_mib"] for m in runs]),
            "rss_max_mib": max(m["rss_mib"] for m in runs),
            "ratio": paired(runs, per_tool["psql"]),
            "ratio_dbmate": paired(runs, per_tool["dbmate"]) if "dbmate" in per_tool else None,
            "runs": runs,
        }
    return out


def paired(runs: list[dict], base: list[dict]) -> float:
    """The median over rounds of this tool's wall time over the base's in the same round."""
    return median([m["wall_s"] / b["wall_s"] for m, b in zip(runs, base)])


def memory_limit_check(b: Bench, root: Path, count: int) -> dict:
    """`dbctl migrate` on `count` files inside a 128 MiB memory cgroup, like the Job's limit."""
    limit = 128 * 1024 * 1024
    base = Path("/sys/fs/cgroup")
    v2 = (base / "cgroup.controllers").exists()
    group = (base if v2 else base / "memory") / f"dbctl-bench-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as exc:
        return {"ok": None, "why": f"no writable memory cgroup here ({exc.strerror}); not measured"}
    try:
        (group / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(str(limit))
        if not v2:
            try:
                (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
            except OSError:
                pass  # no swap accounting; the machine has no swap anyway
        dirs = workload.write_layouts(workload.generated(count), root / "memlimit")
        db = b.fresh_db()
        procs = str(group / "cgroup.procs")

        def enter():
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        try:
            cmd, _ = b.apply_cmd("dbctl", db, dirs, [])
            try:
                m = run_measured(cmd, env=b.env, preexec_fn=enter)
                ok = True
            except RuntimeError as exc:
                m, ok = {"error": str(exc)[-300:]}, False
            applied = subprocess.run([b.psql, "-X", "-At", "-d", b.url(db), "-c",
                                      "SELECT count(*) FROM _sqlx_migrations"], capture_output=True,
                                     text=True, env=b.env).stdout.strip()
        finally:
            b.drop_db(db)
        peak_file = group / ("memory.peak" if v2 else "memory.max_usage_in_bytes")
        peak = int(peak_file.read_text()) / 2**20 if peak_file.exists() else None
        return {"ok": ok and applied == str(count), "limit_mib": 128, "applied": applied,
                "cgroup": "v2" if v2 else "v1", "cgroup_peak_mib": peak, **m}
    finally:
        try:
            group.rmdir()
        except OSError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the N-file workloads")
    parser.add_argument("--kiro-rounds", type=int, default=9, help="rounds of the Kiro set")
    parser.add_argument("--count", type=int, default=1000, help="generated migrations")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated; psql is always included")
    parser.add_argument("--before", action="append", default=[], metavar="REV",
                        help="also run dbctl as it was at this git revision (repeatable)")
    parser.add_argument("--no-memory-limit", action="store_true", help="skip the 128 MiB cgroup run")
    parser.add_argument("--quick", action="store_true", help="a check end to end: 1 round, 50 files")
    parser.add_argument("--out", default=str(BENCH / "results" / "latest.json"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.kiro_rounds, args.count = 1, 1, 50
    args.tools = tuple(dict.fromkeys(["psql", *args.tools.split(","), *(f"dbctl@{r}" for r in args.before)]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the server and remove worktrees
    results = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    print(table(results))


def table(results: dict) -> str:
    """The README's table: median wall, the paired ratios' medians (and psql's range), the largest peak
    RSS, round trips (connections) from the untimed pass; then what the Python tools import."""
    lines = ["| workload | tool | median wall | × psql (paired median) | min–max × psql | × dbmate (paired median) "
             "| peak RSS | round trips (connections) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    imports = []
    for name, per_tool in results["workloads"].items():
        floor = [run["wall_s"] for run in per_tool["psql"]["runs"]]
        for tool, s in per_tool.items():
            ratios = [run["wall_s"] / base for run, base in zip(s["runs"], floor)]
            wall = f"{s['wall_s'] * 1000:.0f} ms" if s["wall_s"] < 1 else f"{s['wall_s']:.2f} s"
            label = f"**{tool}**" if tool == "dbctl" else tool.replace("dbctl@", "dbctl, before ")
            vs_dbmate = f"{s['ratio_dbmate']:.2f}×" if s.get("ratio_dbmate") is not None else "–"
            trips = f"{s['round_trips']} ({s['connections']})" if "round_trips" in s else "–"
            lines.append(f"| {name} | {label} | {wall} | {s['ratio']:.2f}× | {min(ratios):.2f}–{max(ratios):.2f}× "
                         f"| {vs_dbmate} | {s['rss_max_mib']:.1f} MiB | {trips} |")
            if "imports" in s:
                top = ", ".join(f"{module} {ms}" for ms, module in s["imports"]["top"])
                imports.append(f"{name}, {tool}: {s['imports']['modules']} modules; biggest (cumulative ms): {top}")
    if imports:
        lines += ["", "Imports (PYTHONPROFILEIMPORTTIME=1, one untimed run):", *imports]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
