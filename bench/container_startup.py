"""Start-up of the real containers on Docker alone, run as the kubelet would run k8s/dev (bench/docker_kubelet.py).

    .venv/bin/python bench/container_startup.py                 # 5 rounds, the manifests' limits as they are
    .venv/bin/python bench/container_startup.py --cpu 100m      # the app image's containers capped at 100m
    .venv/bin/python bench/container_startup.py --runs 9 --json out.json

Real images built by the real engine (scripts/container-engine, scripts/container-images),
read-only root, the manifests' securityContext, env, emptyDirs and limits. Each round:

  (a) the migration Job on a fresh database (dropped and re-created, outside the timing),
      from the container's start to its exit (the engine's StartedAt/FinishedAt), and
      from `docker run` to the exit (adds creating the container);
  (c) the backend, from the Job's exit to Ready: its pod sandbox, its init containers in
      order, then `dbctl serve` until the startup probe and /health (the readiness probe)
      answer, polled every 20 ms from another container;
  (b) the migration Job again, with nothing to apply.

Then what a start-up is made of, under the same limits: an empty container (`true`),
`python3 -c pass`, importing the CLI's module, and with psycopg2 too; and `python3 -X importtime`
of the Job's own command (PYTHONPROFILEIMPORTTIME), summed by top-level package (the profiler's
own output inflates the total; read it for the shares). Medians of --runs rounds; never a timed assertion anywhere.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from docker_kubelet import (Kubelet, docker, engine_and_images, load_manifests, parse_time, quantity,  # noqa: E402
                            remove_network)

MANIFESTS = [REPO / "k8s/dev/dev-manifests.yaml", REPO / "k8s/dev/migration-job.yaml"]
APP_IMAGE = "kiro-backend:dev"


def with_cpu_limit(docs: list[dict], cpu: str) -> list[dict]:
    """The manifests with every app-image container's CPU limit (and request) set to `cpu`."""
    docs = copy.deepcopy(docs)
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            spec = doc["spec"]["template"]["spec"]
            for c in (spec.get("initContainers") or []) + spec["containers"]:
                if c["image"] == APP_IMAGE:
                    c.setdefault("resources", {}).setdefault("limits", {})["cpu"] = cpu
                    c["resources"].setdefault("requests", {})["cpu"] = cpu
    return docs


def psql(pod, *commands: str) -> str:
    args = ["psql", "-U", "kiro", "-d", "postgres", "-AtX", "-v", "ON_ERROR_STOP=1"]
    for command in commands:
        args += ["-c", command]
    proc = pod.exec("postgres", *args)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return proc.stdout


def backend_to_ready(kubelet: Kubelet, job_finished: float) -> dict:
    pod = kubelet.pod("backend")
    inits = pod.run_init_containers()
    if not inits or inits[-1].code != 0:
        raise RuntimeError(f"init container failed: {inits[-1].output if inits else 'none'}")
    inits_done = time.time()
    pod.start("backend")
    ready = kubelet.wait_http(pod.probe_url("backend", "readinessProbe"), timeout=300)
    pod.delete()
    if ready is None:
        raise RuntimeError("the backend never answered its readiness probe")
    return {"job_exit_to_ready": ready - job_finished, "init_containers": inits_done - job_finished,
            "backend_start_to_ready": ready - inits_done, "inits_in_container": sum(r.seconds for r in inits)}


def import_profile(kubelet: Kubelet, runs: int, before=lambda: None) -> tuple[float, dict[str, float]]:
    """`python3 -X importtime` of the migration Job's own command: total and by top-level package (median)."""
    totals, by_package = [], defaultdict(list)
    for _ in range(runs):
        before()
        result = kubelet.pod("database-migration").run("migrate", extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
        sums: dict[str, float] = defaultdict(float)
        for line in result.err.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
            if m:
                sums[m.group(4).split(".")[0]] += int(m.group(1)) / 1e6
        totals.append(sum(sums.values()))
        for package, seconds in sums.items():
            by_package[package].append(seconds)
    return statistics.median(totals), {p: statistics.median(v + [0.0] * (runs - len(v))) for p, v in by_package.items()}


def bare(kubelet: Kubelet, image: str, cpu: str, *command: str) -> tuple[float, float]:
    """`command` in the app image, read-only, with the CPU limit: (start -> exit, docker run -> exit)."""
    name = f"{kubelet.session}-bare-{uuid.uuid4().hex[:6]}"
    began = time.time()
    docker("run", "-d", "--name", name, "--label", kubelet.label, "--read-only", "--network", "none",
           "--user", "10001:10001", "--cpus", f"{quantity(cpu):g}", "--memory", "128m",
           "--entrypoint", command[0], image, *command[1:])
    docker("wait", name)
    wall = time.time() - began
    state = json.loads(docker("inspect", "-f", "{{json .State}}", name).stdout)
    docker("rm", name)
    if state["ExitCode"] != 0:
        raise SystemExit(f"{command} failed in the image")
    return parse_time(state["FinishedAt"]) - parse_time(state["StartedAt"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cpu", help="CPU limit for the app image's containers (default: the manifests')")
    parser.add_argument("--json", type=Path, help="also write the raw runs here")
    args = parser.parse_args()

    images = engine_and_images(sys.executable)
    docs = load_manifests(*MANIFESTS)
    if args.cpu:
        docs = with_cpu_limit(docs, args.cpu)
    job_spec = next(d for d in docs if d["metadata"]["name"] == "database-migration")["spec"]["template"]["spec"]
    cpu = job_spec["containers"][0]["resources"]["limits"]["cpu"]
    network = f"kiro-bench-{uuid.uuid4().hex[:6]}"
    docker("network", "create", network)
    base = next(i for n, i in images.items() if n.startswith("kiro-local/"))
    kubelet = Kubelet(docs, network=network, images=images, prober_image=base)
    rows: dict[str, list[float]] = defaultdict(list)
    load_before = os.getloadavg()
    try:
        postgres, redis = kubelet.pod("postgres"), kubelet.pod("redis")
        postgres.start()
        redis.start()
        if not (postgres.wait_ready("postgres").ok and redis.wait_ready("redis").ok):
            raise SystemExit("postgres or redis did not become ready")
        for i in range(args.runs):
            psql(postgres, "DROP DATABASE IF EXISTS kiro WITH (FORCE)", "CREATE DATABASE kiro")
            fresh = kubelet.pod("database-migration").run("migrate")
            if fresh.code != 0 or "applied" not in fresh.out:
                raise SystemExit(f"migration Job failed: {fresh.output}")
            rows["(a) fresh: start -> exit"].append(fresh.seconds)
            rows["(a) fresh: docker run -> exit"].append(fresh.wall)
            for key, value in backend_to_ready(kubelet, fresh.finished).items():
                rows[f"(c) {key.replace('_', ' ')}"].append(value)
            noop = kubelet.pod("database-migration").run("migrate")
            if noop.code != 0 or "nothing to apply" not in noop.out:
                raise SystemExit(f"no-op migration Job failed: {noop.output}")
            rows["(b) no-op: start -> exit"].append(noop.seconds)
            rows["(b) no-op: docker run -> exit"].append(noop.wall)
            print(f"round {i + 1}/{args.runs}: fresh {fresh.seconds:.2f} s, no-op {noop.seconds:.2f} s, "
                  f"job exit -> backend ready {rows['(c) job exit to ready'][-1]:.2f} s", file=sys.stderr)
        app = images[APP_IMAGE]
        entry = docker("run", "--rm", "--network", "none", "--entrypoint", "python3", app, "-c",
                       "import importlib.metadata as m; print(m.entry_points(group='console_scripts')['dbctl'].module)"
                       ).stdout.strip()
        steps = {"true": ["true"], "python3 -c pass": ["python3", "-c", "pass"],
                 f"import {entry}": ["python3", "-c", f"import {entry}"],
                 f"import {entry}, psycopg2": ["python3", "-c", f"import {entry}, psycopg2"]}
        for _ in range(args.runs):
            for label, command in steps.items():
                inside, wall = bare(kubelet, app, cpu, *command)
                rows[f"{label}: start -> exit"].append(inside)
                rows[f"{label}: docker run -> exit"].append(wall)
        profiles = {
            "fresh": import_profile(kubelet, args.runs, lambda: psql(postgres, "DROP DATABASE IF EXISTS kiro WITH (FORCE)",
                                                                     "CREATE DATABASE kiro")),
            "no-op": import_profile(kubelet, args.runs),
        }
    finally:
        kubelet.close()
        remove_network(network)

    print(f"\nContainer start-up, {args.runs} runs each, app containers' CPU limit {cpu} "
          f"(load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}; {os.cpu_count()} cores)\n")
    print(f"| {'measure':<44} | median | min | max |\n| --- | ---: | ---: | ---: |")
    for name, values in rows.items():
        print(f"| {name:<44} | {statistics.median(values):.2f} s | {min(values):.2f} s | {max(values):.2f} s |")
    print(f"\nImports of the migration Job's command under the same limit (-X importtime, wall time, "
          f"median of {args.runs}), by top-level package:\n")
    fresh, noop = profiles["fresh"][1], profiles["no-op"][1]
    print(f"| package | fresh database | no-op |\n| --- | ---: | ---: |")
    print(f"| **all imports** | {profiles['fresh'][0]:.3f} s | {profiles['no-op'][0]:.3f} s |")
    for package in sorted(set(fresh) | set(noop), key=lambda p: -max(fresh.get(p, 0), noop.get(p, 0)))[:12]:
        print(f"| {package} | {fresh.get(package, 0):.3f} s | {noop.get(package, 0):.3f} s |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "runs": rows, "imports": profiles}, indent=1))


if __name__ == "__main__":
    main()
