#!/usr/bin/env python3
"""Peak memory of `dbctl migrate`, `seed` and `rollback` against the size of the largest file.

For each size (default 1, 5 and 50 MB) it writes a data migration of that size
(INSERT statements of about 1 KB each), a seed file and a down file of the same
size, runs the real `dbctl` on a fresh database of a private PostgreSQL, and
reads the child's peak resident set from wait4's ru_maxrss. The base is the
same command with a file of a few bytes. Then, when a cgroup memory controller
is available (v2 `memory.max`, else v1 `memory.limit_in_bytes`), the 50 MB
migration runs again inside a cgroup limited to 128 MiB, as the migration
Job's limit.

    .venv/bin/python bench/memory.py                # 1, 5, 50 MB; prints a Markdown table
    .venv/bin/python bench/memory.py --sizes 1 5    # quicker
    .venv/bin/python bench/memory.py --json out.json
    .venv/bin/python bench/memory.py --seed-only --sizes 5 50   # seed alone: many statements, one INSERT
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import create_database, drop_database, private_server  # noqa: E402

MiB = 1024 * 1024
LIMIT = 128 * MiB


def write_rows(path: Path, size: int, line_of, prefix: bytes = b"") -> None:
    """Write `prefix`, then lines of about 1 KB (line_of(i)) until `size` bytes, a line at a time:
    this process must stay small, because a child's peak RSS (wait4's ru_maxrss) starts from
    the parent's resident size when it forks."""
    with open(path, "wb") as out:
        out.write(prefix)
        total, i = len(prefix), 0
        while total < size:
            line = line_of(i).encode()
            out.write(line)
            total += len(line)
            i += 1


PAD = "x" * 960


def insert_line(table: str, conflict: bool = False):
    tail = " ON CONFLICT (id) DO NOTHING" if conflict else ""
    return lambda i: f"INSERT INTO {table} (id, pad) VALUES ({i}, '{PAD}'){tail};\n"


def delete_line(i: int) -> str:  # a down file as large: DELETEs by primary key
    return f"DELETE FROM data WHERE id = {i} AND pad = '{PAD}';\n"


def run(argv: list[str], env: dict, cgroup: Path | None = None) -> tuple[int, float, float, str]:
    """(exit code, seconds, peak RSS in MiB, output) of `dbctl ARGV` as a child process."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DBCTL_", "DATABASE_URL", "PG"))}
    full.update(env)
    start = time.perf_counter()
    preexec = None
    if cgroup is not None:
        procs = cgroup / "cgroup.procs"

        def preexec():  # join the cgroup before exec, so the whole run is limited
            procs.write_text(str(os.getpid()))
    proc = subprocess.Popen([sys.executable, "-m", "dbctl", *argv], env=full, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=preexec)
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024, out


def make_cgroup(limit: int) -> tuple[Path, str] | None:
    """A child memory cgroup limited to `limit` bytes under this process's own; None when there is none."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists() and "memory" in v2.read_text().split():
        own = Path("/sys/fs/cgroup") / open("/proc/self/cgroup").read().split("::", 1)[1].strip().lstrip("/")
        group, knob = own / f"dbctl-bench-{uuid.uuid4().hex[:8]}", "memory.max"
    else:
        lines = [line.split(":", 2) for line in open("/proc/self/cgroup").read().splitlines()]
        own = next((path for _, controllers, path in lines if "memory" in controllers.split(",")), None)
        if own is None or not Path("/sys/fs/cgroup/memory").is_dir():
            return None
        group, knob = Path("/sys/fs/cgroup/memory") / own.lstrip("/") / f"dbctl-bench-{uuid.uuid4().hex[:8]}", \
            "memory.limit_in_bytes"
    try:
        group.mkdir()
        (group / knob).write_text(str(limit))
        swap = group / "memory.memsw.limit_in_bytes"
        if swap.exists():
            try:
                swap.write_text(str(limit))
            except OSError:
                pass
    except OSError:
        return None
    return group, f"cgroup {'v2' if knob == 'memory.max' else 'v1'} {knob}={limit}"


def oom_kills(group: Path) -> int:
    for name in ("memory.events", "memory.oom_control"):
        path = group / name
        if path.exists():
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key in ("oom_kill", "oom_kill_disable") and key == "oom_kill":
                    return int(value)
    return 0


def measure(server, size_mb: float, work: Path) -> dict:
    size = int(size_mb * 1_000_000)
    db = create_database(server, f"mem_{uuid.uuid4().hex[:8]}")
    env = {"DATABASE_URL": db.url}
    migrations, seeds = work / f"m{size_mb}", work / f"s{size_mb}"
    migrations.mkdir()
    seeds.mkdir()
    (migrations / "1_table.up.sql").write_text("CREATE TABLE data (id int PRIMARY KEY, pad text);\n")
    (migrations / "1_table.down.sql").write_text("DROP TABLE data;\n")
    write_rows(migrations / "2_data.up.sql", size, insert_line("data"))
    write_rows(migrations / "2_data.down.sql", size, delete_line)
    write_rows(seeds / "1_data.sql", size, insert_line("data", conflict=True))
    row = {"size_mb": size_mb}
    for name, argv in (("migrate", ["migrate", "--migrations", str(migrations)]),
                       ("seed", ["seed", "--migrations", str(migrations), "--seeds", str(seeds)]),
                       ("rollback", ["rollback", "--migrations", str(migrations), "--steps", "1"])):
        code, seconds, peak, out = run(argv, env)
        if code != 0:
            raise SystemExit(f"dbctl {name} failed on {size_mb} MB:\n{out[-2000:]}")
        row[name] = {"seconds": round(seconds, 2), "peak_mib": round(peak, 1)}
    drop_database(server, db.name)
    return row


def write_one_insert(path: Path, size: int) -> None:
    """A seed file that is one INSERT ... ON CONFLICT of `size` bytes (rows of about 1 KB)."""
    write_rows(path, size - 40, lambda i: f"{',' if i else ''}\n({i}, '{PAD}')", prefix=b"INSERT INTO data (id, pad) VALUES")
    with open(path, "ab") as out:
        out.write(b"\nON CONFLICT (id) DO NOTHING;\n")


def measure_seed(server, size_mb: float, work: Path) -> dict:
    """`dbctl seed` alone, on a seed file of many small INSERTs and on one of a single huge INSERT."""
    row = {"size_mb": size_mb}
    migrations = work / "seed_m"
    if not migrations.exists():
        migrations.mkdir()
        (migrations / "1_table.sql").write_text("CREATE TABLE data (id int PRIMARY KEY, pad text);\n")
    size = int(size_mb * 1_000_000)
    for shape in ("statements", "one INSERT"):
        db = create_database(server, f"mem_{uuid.uuid4().hex[:8]}")
        seeds = work / f"seed_{shape.replace(' ', '_')}_{size_mb}"
        seeds.mkdir()
        if size == 0:
            (seeds / "1_data.sql").write_text("INSERT INTO data VALUES (2, 'y') ON CONFLICT (id) DO NOTHING;\n")
        elif shape == "statements":
            write_rows(seeds / "1_data.sql", size, insert_line("data", conflict=True))
        else:
            write_one_insert(seeds / "1_data.sql", size)
        env = {"DATABASE_URL": db.url}
        code, _, _, out = run(["migrate", "--migrations", str(migrations)], env)
        assert code == 0, out
        code, seconds, peak, out = run(["seed", "--migrations", str(migrations), "--seeds", str(seeds)], env)
        if code != 0:
            raise SystemExit(f"dbctl seed failed on {size_mb} MB ({shape}):\n{out[-2000:]}")
        row[shape] = {"seconds": round(seconds, 2), "peak_mib": round(peak, 1)}
        drop_database(server, db.name)
    return row


def seed_table(rows: list[dict]) -> None:
    print("| seed file | many small INSERTs | one INSERT ... ON CONFLICT |")
    print("| ---: | ---: | ---: |")
    base = rows[0]
    for row in rows:
        cells = []
        for shape in ("statements", "one INSERT"):
            peak, growth = row[shape]["peak_mib"], row[shape]["peak_mib"] - base[shape]["peak_mib"]
            extra = "" if row is base else f" (+{growth:.0f}, {growth / (row['size_mb'] * 1e6 / MiB):.2f}× the file)"
            cells.append(f"{peak:.0f} MiB{extra}, {row[shape]['seconds']:.1f} s")
        label = "a few bytes (base)" if row is base else f"{row['size_mb']:g} MB"
        print(f"| {label} | " + " | ".join(cells) + " |")


def base_line(server, work: Path) -> dict:
    """The same three commands with files of a few bytes: the fixed cost."""
    db = create_database(server, f"mem_{uuid.uuid4().hex[:8]}")
    migrations, seeds = work / "base_m", work / "base_s"
    migrations.mkdir()
    seeds.mkdir()
    (migrations / "1_table.up.sql").write_text("CREATE TABLE data (id int PRIMARY KEY, pad text);\n")
    (migrations / "1_table.down.sql").write_text("DROP TABLE data;\n")
    (migrations / "2_data.up.sql").write_text("INSERT INTO data VALUES (1, 'x');\n")
    (migrations / "2_data.down.sql").write_text("DELETE FROM data;\n")
    (seeds / "1_data.sql").write_text("INSERT INTO data VALUES (2, 'y') ON CONFLICT (id) DO NOTHING;\n")
    row = {"size_mb": 0}
    env = {"DATABASE_URL": db.url}
    for name, argv in (("migrate", ["migrate", "--migrations", str(migrations)]),
                       ("seed", ["seed", "--migrations", str(migrations), "--seeds", str(seeds)]),
                       ("rollback", ["rollback", "--migrations", str(migrations), "--steps", "1"])):
        code, seconds, peak, out = run(argv, env)
        assert code == 0, out
        row[name] = {"seconds": round(seconds, 2), "peak_mib": round(peak, 1)}
    drop_database(server, db.name)
    return row


def in_cgroup(server, size_mb: float, work: Path) -> dict:
    made = make_cgroup(LIMIT)
    if made is None:
        return {"cgroup": None, "note": "no memory cgroup controller available here"}
    group, how = made
    db = create_database(server, f"mem_{uuid.uuid4().hex[:8]}")
    migrations = work / f"cg{size_mb}"
    migrations.mkdir()
    write_rows(migrations / "1_data.sql", int(size_mb * 1_000_000), insert_line("data"),
               prefix=b"CREATE TABLE data (id int PRIMARY KEY, pad text);\n")
    try:
        code, seconds, peak, out = run(["migrate", "--migrations", str(migrations)], {"DATABASE_URL": db.url},
                                       cgroup=group)
        peak_usage = None
        for name in ("memory.peak", "memory.max_usage_in_bytes"):
            if (group / name).exists():
                peak_usage = int((group / name).read_text()) / MiB
        result = {"cgroup": how, "exit_code": code, "seconds": round(seconds, 2), "peak_rss_mib": round(peak, 1),
                  "cgroup_peak_mib": round(peak_usage, 1) if peak_usage else None, "oom_kills": oom_kills(group),
                  "output": out.strip().splitlines()[-1:] }
    finally:
        drop_database(server, db.name)
        try:
            group.rmdir()
        except OSError:
            pass
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 5, 50], help="file sizes in MB")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--seed-only", action="store_true", help="measure only seed, on two shapes of seed file")
    args = parser.parse_args()
    if args.seed_only:
        with private_server("dbctl-bench-mem-") as server, tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            os.chmod(work, 0o755)
            rows = [measure_seed(server, size, work) for size in [0, *args.sizes]]
        seed_table(rows)
        if args.json:
            Path(args.json).write_text(json.dumps({"seed_rows": rows}, indent=2))
        return
    with private_server("dbctl-bench-mem-") as server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        rows = [base_line(server, work)] + [measure(server, size, work) for size in args.sizes]
        cgroup = in_cgroup(server, max(args.sizes), work)
    print("| largest file | migrate peak RSS | seed peak RSS | rollback peak RSS |")
    print("| ---: | ---: | ---: | ---: |")
    base = rows[0]
    for row in rows:
        cells = []
        for name in ("migrate", "seed", "rollback"):
            peak = row[name]["peak_mib"]
            growth = peak - base[name]["peak_mib"]
            extra = "" if row is base else f" (+{growth:.0f}, {growth / (row['size_mb'] * 1e6 / MiB):.2f}× the file)"
            cells.append(f"{peak:.0f} MiB{extra}, {row[name]['seconds']:.1f} s")
        label = "a few bytes (base)" if row is base else f"{row['size_mb']:g} MB"
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    print(f"in a 128 MiB cgroup, {max(args.sizes):g} MB migration: {json.dumps(cgroup)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "cgroup": cgroup}, indent=2))


if __name__ == "__main__":
    main()
