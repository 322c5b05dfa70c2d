"""Start-up on the real cluster (scripts/cluster), driven by the real Tilt, from Kubernetes' own timestamps.

    scripts/cluster up && .venv/bin/python bench/cluster_startup.py            # 5 rounds
    .venv/bin/python bench/cluster_startup.py --runs 9 --json out.json

Each round, in namespace kiro-dev (deleted first, so the database is fresh):

  fresh:  `tilt up` until the backend is Ready, on an empty database: the migration Job applies
          every migration;
  no-op:  `tilt down` (the claim is kept), then `tilt up` again: the Job finds nothing to apply.

For each: `tilt up` -> backend Ready, Job created -> Complete, Job Complete -> backend Ready.
Kubernetes writes its timestamps to the second, so each figure is within a second of the truth
(the start of `tilt up` is this machine's clock, read to the millisecond; the same clock).
Medians of the rounds; never a timed assertion anywhere.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "build" / "cluster"
TILT = REPO / "build" / "bin" / "tilt"
NAMESPACE = "kiro-dev"
FIGURES = ["tilt up -> backend Ready", "Job created -> Complete", "Job Complete -> backend Ready"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TILT_", "KIRO_"))}
    env.update(HOME=str(home), TILT_DEV_DIR=str(home / ".tilt-dev"), TILT_DISABLE_ANALYTICS="1",
               TILT_PORT=str(free_port()), KIRO_PG_PORT=str(free_port()), KIRO_REDIS_PORT=str(free_port()),
               KIRO_BACKEND_PORT=str(free_port()), KUBECONFIG=str(CLUSTER / "kubeconfig"),
               PATH=f"{CLUSTER / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return env


def kubectl(env: dict, *args: str) -> str:
    return subprocess.run(["kubectl", *args], env=env, check=True, capture_output=True, text=True,
                          timeout=300).stdout


def stamp(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def backend_ready(env: dict) -> float | None:
    """When the newest backend pod became Ready (its condition's time), or None while none is."""
    pods = json.loads(kubectl(env, "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=backend",
                              "-o", "json"))["items"]
    times = [stamp(c["lastTransitionTime"]) for p in pods for c in p["status"].get("conditions", [])
             if c["type"] == "Ready" and c["status"] == "True" and not p["metadata"].get("deletionTimestamp")]
    return max(times) if times else None


def job_times(env: dict) -> tuple[float, float]:
    job = json.loads(kubectl(env, "get", "job", "database-migration", "-n", NAMESPACE, "-o", "json"))
    return stamp(job["metadata"]["creationTimestamp"]), stamp(job["status"]["completionTime"])


def one_start(env: dict, log: Path, timeout: float = 600) -> dict[str, float]:
    """`tilt up` until the backend is Ready; the three figures; Tilt left running."""
    started = time.time()
    proc = subprocess.Popen([str(TILT), "up"], cwd=REPO, env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    ready = None
    while ready is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"tilt up did not bring the backend up; see {log}")
        time.sleep(0.5)
        try:
            ready = backend_ready(env)
        except subprocess.CalledProcessError:
            pass  # the namespace is not there yet
    created, complete = job_times(env)
    subprocess.run([str(TILT), "down"], cwd=REPO, env=env, capture_output=True, timeout=300, check=True)
    proc.terminate()
    proc.wait(timeout=60)
    return {FIGURES[0]: ready - started, FIGURES[1]: complete - created, FIGURES[2]: ready - complete}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write every round's figures here")
    args = parser.parse_args()
    if not (CLUSTER / "kubeconfig").exists() or not TILT.exists():
        sys.exit("start the cluster (make cluster) and build Tilt (scripts/build-tilt) first")
    home = Path(tempfile.mkdtemp(prefix="kiro-bench-"))
    env = environment(home)
    rounds = {"fresh": [], "no-op": []}
    for run in range(args.runs):
        kubectl(env, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=180s")
        for database in ("fresh", "no-op"):
            figures = one_start(env, home / "tilt.log")
            rounds[database].append(figures)
            print(f"round {run + 1} {database}: " + ", ".join(f"{k} {v:.1f} s" for k, v in figures.items()),
                  flush=True)
    print(f"\nmedians of {args.runs} rounds (Kubernetes' timestamps: to the second)")
    print(f"| database | {' | '.join(FIGURES)} |")
    print("| --- |" + " ---: |" * len(FIGURES))
    for database, results in rounds.items():
        print(f"| {database} | " + " | ".join(f"{statistics.median(r[k] for r in results):.1f} s" for k in FIGURES) + " |")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2))


if __name__ == "__main__":
    main()
