"""Run the pods of Kubernetes manifests on a Docker engine, the way the kubelet would.

Used by bench/container_startup.py, for start-up figures on Docker alone; the
tests run k8s/dev on a real cluster instead (tests/test_cluster_manifests.py). It reads plain
manifests (dicts from PyYAML) and nothing of dbctl. Per pod it does what the
kubelet does, with Docker's equivalents:

- a sandbox ("pause") container holds the pod's network namespace and hostname
  (the pod name); every container of the pod joins it, so they share localhost
  and one address, and the Services that select the pod's labels are network
  aliases of the sandbox, so `postgres`, `redis`, `backend` resolve;
- securityContext (pod, then container): runAsUser/runAsGroup -> --user,
  fsGroup/supplementalGroups -> --group-add, runAsNonRoot checked before the
  start as the kubelet does, readOnlyRootFilesystem -> --read-only,
  capabilities -> --cap-drop/--cap-add, allowPrivilegeEscalation: false ->
  no-new-privileges, privileged, seccomp RuntimeDefault (Docker's default);
- env: value, secretKeyRef (the Secret's stringData or data), fieldRef,
  envFrom secretRef, and $(VAR) expansion in env, command and args;
- command/args replace the image's ENTRYPOINT/CMD the Kubernetes way; workingDir;
- resources: limits.memory -> --memory (no swap), limits.cpu -> --cpus,
  requests.cpu -> --cpu-shares;
- volumes: emptyDir -> a tmpfs shared by the pod's containers (sizeLimit, mode
  0777, group fsGroup); persistentVolumeClaim -> a named volume that outlives
  the pod, made group-owned by fsGroup (setgid) as the kubelet does;
- probes: exec in the container; httpGet and tcpSocket from ANOTHER container
  on the network (the "prober"), to the pod's address.

Anything else in a manifest raises Unsupported, so a new field fails loudly
instead of being silently ignored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# The client from Debian's docker.io matches its engine; a newer one may be first on PATH.
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else (shutil.which("docker") or "docker")


class Unsupported(Exception):
    """The manifest uses something this emulation does not do."""


class KubeletRefused(Exception):
    """What the kubelet itself would refuse (CreateContainerConfigError and the like)."""


def docker(*args: str, check: bool = True, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def remove_network(name: str) -> None:
    """docker network rm, retried: the engine may still be releasing the endpoints of containers just removed."""
    for _ in range(10):
        if docker("network", "rm", name, check=False).returncode == 0:
            return
        time.sleep(0.5)


def load_manifests(*paths: Path) -> list[dict]:
    docs: list[dict] = []
    for path in paths:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


# ---- quantities ----------------------------------------------------------------------------

_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
             "m": 10**-3, "": 1}


def quantity(value) -> float:
    """A Kubernetes quantity as a number: '128Mi' -> 134217728, '100m' -> 0.1, '1' -> 1."""
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T|m)?", str(value))
    if not match:
        raise Unsupported(f"quantity {value!r}")
    return float(match.group(1)) * _SUFFIXES[match.group(2) or ""]


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables are replaced, $$ escapes, the rest stays."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# ---- results -------------------------------------------------------------------------------

@dataclass
class Exited:
    """A container that ran to completion."""
    container: str
    code: int
    out: str
    err: str
    started: float   # the engine's own timestamps (State.StartedAt / FinishedAt), epoch seconds
    finished: float
    oom_killed: bool = False
    wall: float = 0.0  # from `docker run` (create + start) to the exit seen by `docker wait`

    @property
    def output(self) -> str:
        return self.out + self.err

    @property
    def seconds(self) -> float:
        return self.finished - self.started


@dataclass
class ProbeResult:
    ok: bool
    detail: str


# ---- the kubelet ---------------------------------------------------------------------------

class Kubelet:
    """Pods of `documents` on the Docker network `network`.

    `images` maps the manifests' image names to what to run (pinned image IDs, so
    a concurrent rebuild of a tag cannot change what this session runs). Every
    object it creates carries the label kiro-kubelet=<session>; close() removes them.
    """

    def __init__(self, documents: list[dict], *, network: str, images: dict[str, str], session: str | None = None,
                 prober_image: str | None = None):
        self.docs = documents
        self.network = network
        self.images = dict(images)
        self.session = session or f"k{uuid.uuid4().hex[:8]}"
        self.label = f"kiro-kubelet={self.session}"
        self.prober_image = prober_image
        self.ran: list[tuple[str, str]] = []  # (workload, container) of every container started
        self._prober: str | None = None
        self._pvcs: set[str] = set()
        self.temporary_images: list[str] = []  # tags removed by close(), once no container uses them
        self.namespace = next((d["metadata"]["name"] for d in documents if d["kind"] == "Namespace"), "default")

    # -- manifests --
    def workload(self, name: str) -> dict:
        for doc in self.docs:
            if doc["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet") and doc["metadata"]["name"] == name:
                return doc
        raise KeyError(f"no workload {name!r} in the manifests")

    def secret(self, name: str) -> dict[str, str]:
        import base64
        for doc in self.docs:
            if doc["kind"] == "Secret" and doc["metadata"]["name"] == name:
                values = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
                values.update(doc.get("stringData") or {})  # stringData wins, as the API server merges it
                return values
        raise KubeletRefused(f"secret {name!r} not found")

    def services_for(self, labels: dict) -> list[str]:
        return [d["metadata"]["name"] for d in self.docs if d["kind"] == "Service"
                and d["spec"].get("selector") and d["spec"]["selector"].items() <= labels.items()]

    def pod(self, workload: str, *, images: dict[str, str] | None = None) -> "Pod":
        doc = self.workload(workload)
        suffix = uuid.uuid4().hex[:5]
        # Deployments' pods are <name>-<template hash>-<suffix>; Jobs' are <name>-<suffix>.
        name = f"{workload}-{uuid.uuid4().hex[:9]}-{suffix}" if doc["kind"] == "Deployment" else f"{workload}-{suffix}"
        return Pod(self, workload, name, doc["spec"]["template"], {**self.images, **(images or {})})

    # -- the prober: another container on the network, for httpGet and tcpSocket probes --
    def prober(self) -> str:
        if self._prober is None:
            name = f"{self.session}-prober"
            docker("run", "-d", "--name", name, "--label", self.label, "--network", self.network, "--read-only",
                   "--cap-drop", "ALL", "--user", "65534:65534", "--entrypoint", "sleep",
                   self.prober_image or self.images[next(iter(self.images))], "infinity")
            self._prober = name
        return self._prober

    def http_get(self, url: str, timeout: float = 1.0) -> tuple[int, str]:
        """GET url from the prober: (status, body); status 0 when nothing answered."""
        proc = docker("exec", self.prober(), "python3", "-c", _HTTP_GET, url, str(timeout), check=False,
                      timeout=timeout + 30)
        line, _, body = proc.stdout.partition("\n")
        try:
            return int(line), body
        except ValueError:
            return 0, proc.stdout + proc.stderr

    def wait_http(self, url: str, timeout: float, interval: float = 0.02) -> float | None:
        """Poll url from the prober until it answers 2xx/3xx; the epoch time it first did, or None."""
        proc = docker("exec", self.prober(), "python3", "-c", _HTTP_WAIT, url, str(timeout), str(interval),
                      check=False, timeout=timeout + 30)
        return float(proc.stdout) if proc.returncode == 0 else None

    def tcp_connect(self, host: str, port: int, timeout: float = 1.0) -> bool:
        return docker("exec", self.prober(), "python3", "-c", _TCP, host, str(port), str(timeout),
                      check=False, timeout=timeout + 30).returncode == 0

    # -- persistent volume claims: named volumes kept for the session --
    def claim_volume(self, claim: str, fs_group: int | None) -> str:
        volume = f"{self.session}-pvc-{claim}"
        if volume not in self._pvcs:
            docker("volume", "create", "--label", self.label, volume)
            if fs_group is not None:  # the kubelet's SetVolumeOwnership: group fsGroup, group-writable, setgid
                docker("run", "--rm", "--label", self.label, "--network", "none", "--user", "0",
                       "--mount", f"type=volume,source={volume},destination=/v,volume-nocopy", "--entrypoint", "sh",
                       self.prober_image or self.images[next(iter(self.images))], "-c",
                       f"chown 0:{fs_group} /v && chmod 2775 /v")
            self._pvcs.add(volume)
        return volume

    def close(self) -> None:
        ids = docker("ps", "-aq", "--filter", f"label={self.label}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False)
        vols = docker("volume", "ls", "-q", "--filter", f"label={self.label}", check=False).stdout.split()
        if vols:
            docker("volume", "rm", "-f", *vols, check=False)
        if self.temporary_images:
            docker("rmi", *self.temporary_images, check=False)
        self._prober = None


class Pod:
    def __init__(self, kubelet: Kubelet, workload: str, name: str, template: dict, images: dict[str, str]):
        self.kubelet = kubelet
        self.workload = workload
        self.name = name
        self.spec = template["spec"]
        self.labels = template.get("metadata", {}).get("labels", {})
        self.images = images
        self.uid = str(uuid.uuid4())
        self.sandbox: str | None = None
        self.running: dict[str, str] = {}   # container name -> docker container name
        self._volumes: dict[str, list[str]] = {}

    # -- the sandbox and volumes --
    def _ensure_sandbox(self) -> None:
        if self.sandbox:
            return
        k = self.kubelet
        self.sandbox = f"{k.session}-{self.name}"
        aliases = [a for svc in k.services_for(self.labels) for a in ("--network-alias", svc)]
        docker("run", "-d", "--name", self.sandbox, "--label", k.label, "--hostname", self.name,
               "--network", k.network, *aliases, "--read-only", "--cap-drop", "ALL", "--user", "65534:65534",
               "--entrypoint", "sleep", k.prober_image or next(iter(self.images.values())), "infinity")
        psc = self.spec.get("securityContext") or {}
        for vol in self.spec.get("volumes") or []:
            self._volumes[vol["name"]] = self._volume(vol, psc.get("fsGroup"))

    def _volume(self, vol: dict, fs_group: int | None) -> list[str]:
        """The --mount option (without destination) for a pod volume."""
        if "emptyDir" in vol:
            opts = ["type=tmpfs", "device=tmpfs", "o=mode=0777" + (f",gid={fs_group}" if fs_group is not None else "")]
            size = (vol["emptyDir"] or {}).get("sizeLimit")
            if size:
                opts[-1] += f",size={int(quantity(size))}"
            name = f"{self.sandbox}-{vol['name']}"
            docker("volume", "create", "--label", self.kubelet.label, "--driver", "local",
                   *[x for o in opts for x in ("--opt", o)], name)
            return [f"type=volume,source={name}"]
        if "persistentVolumeClaim" in vol:
            volume = self.kubelet.claim_volume(vol["persistentVolumeClaim"]["claimName"], fs_group)
            return [f"type=volume,source={volume},volume-nocopy"]
        raise Unsupported(f"volume {vol['name']}: only emptyDir and persistentVolumeClaim are emulated")

    # -- one container's docker run arguments --
    def _container(self, name: str, init: bool) -> dict:
        pool = self.spec.get("initContainers" if init else "containers") or []
        for c in pool:
            if c["name"] == name:
                return c
        raise KeyError(f"{self.workload} has no {'init ' if init else ''}container {name!r}")

    def env(self, container: dict) -> dict[str, str]:
        k = self.kubelet
        env: dict[str, str] = {}
        for src in container.get("envFrom") or []:
            if "secretRef" not in src:
                raise Unsupported(f"envFrom {src}")
            env.update({src.get("prefix", "") + key: v for key, v in k.secret(src["secretRef"]["name"]).items()})
        fields = {"metadata.name": self.name, "metadata.namespace": k.namespace, "metadata.uid": self.uid,
                  "spec.nodeName": "docker-node", "spec.serviceAccountName": self.spec.get("serviceAccountName", "default")}
        for e in container.get("env") or []:
            if "value" in e:
                env[e["name"]] = _expand(str(e["value"]), env)
                continue
            src = e.get("valueFrom") or {}
            if "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                values = k.secret(ref["name"])
                if ref["key"] not in values:
                    if ref.get("optional"):
                        continue
                    raise KubeletRefused(f"couldn't find key {ref['key']} in Secret {ref['name']}")
                env[e["name"]] = values[ref["key"]]
            elif "fieldRef" in src and src["fieldRef"]["fieldPath"] in fields:
                env[e["name"]] = fields[src["fieldRef"]["fieldPath"]]
            else:
                raise Unsupported(f"env {e['name']}: {src}")
        return env

    def run_args(self, name: str, *, init: bool, extra_env: dict | None = None) -> tuple[list[str], dict]:
        """The `docker run` arguments for container `name` (without -d/--rm), and the container spec.
        extra_env is for measurements (PYTHONPROFILEIMPORTTIME=1, say), never for the tests."""
        self._ensure_sandbox()
        k = self.kubelet
        c = self._container(name, init)
        psc = self.spec.get("securityContext") or {}
        csc = c.get("securityContext") or {}
        args = ["--name", f"{self.sandbox}-{name}", "--label", k.label, "--network", f"container:{self.sandbox}"]

        image = self.images.get(c["image"])
        if image is None:
            raise KubeletRefused(f"image {c['image']} is not present (nothing pulls here: build it first)")

        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            effective = uid
            if effective is None:
                user = docker("image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip().split(":")[0]
                if not user.isdigit():
                    raise KubeletRefused(f"image has non-numeric user ({user or 'root'}), cannot verify user is non-root")
                effective = int(user)
            if int(effective) == 0:
                raise KubeletRefused("container has runAsNonRoot and image will run as root")
        if uid is not None:
            args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
        for group in ([psc["fsGroup"]] if "fsGroup" in psc else []) + list(psc.get("supplementalGroups") or []):
            args += ["--group-add", str(group)]
        if csc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        caps = csc.get("capabilities") or {}
        args += [x for cap in caps.get("drop") or [] for x in ("--cap-drop", cap)]
        args += [x for cap in caps.get("add") or [] for x in ("--cap-add", cap)]
        if csc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if csc.get("privileged"):
            args.append("--privileged")
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
        if seccomp == "Unconfined":
            args += ["--security-opt", "seccomp=unconfined"]
        elif seccomp != "RuntimeDefault":
            raise Unsupported(f"seccompProfile {seccomp}")

        resources = c.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        if "memory" in limits:
            memory = str(int(quantity(limits["memory"])))
            args += ["--memory", memory, "--memory-swap", memory]  # no swap, as on a node
        if "cpu" in limits:
            args += ["--cpus", f"{quantity(limits['cpu']):g}"]
        if "cpu" in requests:
            args += ["--cpu-shares", str(max(2, int(quantity(requests["cpu"]) * 1024)))]

        for mount in c.get("volumeMounts") or []:
            if mount.get("subPath") or mount.get("subPathExpr"):
                raise Unsupported("volumeMounts subPath")
            option = ",".join(self._volumes[mount["name"]] + [f"destination={mount['mountPath']}"])
            args += ["--mount", option + (",readonly" if mount.get("readOnly") else "")]

        env = {**self.env(c), **(extra_env or {})}
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        if c.get("workingDir"):
            args += ["--workdir", c["workingDir"]]
        grace = self.spec.get("terminationGracePeriodSeconds", 30)
        args += ["--stop-timeout", str(grace)]

        # command replaces ENTRYPOINT (and drops CMD), args replace CMD.
        command = [_expand(x, env) for x in c.get("command") or []]
        cargs = [_expand(x, env) for x in c.get("args") or []]
        if command:
            args += ["--entrypoint", command[0], image, *command[1:], *cargs]
        else:
            args += [image, *cargs]
        k.ran.append((self.workload, name))
        return args, c

    # -- running --
    def run(self, name: str, *, init: bool = False, timeout: float | None = None,
            extra_env: dict | None = None) -> Exited:
        """Run a container to completion (an init container, or a Job's container)."""
        args, _ = self.run_args(name, init=init, extra_env=extra_env)
        container = args[1]
        docker("rm", "-f", container, check=False)  # a retry of the same container
        began = time.time()
        docker("run", "-d", *args)
        deadline = timeout or self.spec.get("activeDeadlineSeconds") or 900
        try:
            docker("wait", container, timeout=deadline)
        except subprocess.TimeoutExpired:
            docker("kill", container, check=False)
        ended = time.time()
        result = self._exited(container, name)
        result.wall = ended - began
        return result

    def run_init_containers(self) -> list[Exited]:
        """Each init container in order, until one fails (the kubelet would retry it with back-off)."""
        results = []
        for c in self.spec.get("initContainers") or []:
            results.append(self.run(c["name"], init=True, timeout=600))
            if results[-1].code != 0:
                break
        return results

    def start(self, name: str | None = None) -> None:
        """Start the pod's (long-running) containers, or just `name`."""
        for c in self.spec.get("containers") or []:
            if name is None or c["name"] == name:
                args, _ = self.run_args(c["name"], init=False)
                docker("run", "-d", *args)
                self.running[c["name"]] = args[1]

    def _exited(self, container: str, name: str) -> Exited:
        state = json.loads(docker("inspect", "-f", "{{json .State}}", container).stdout)
        logs = docker("logs", container, check=False)
        return Exited(name, state["ExitCode"], logs.stdout, logs.stderr, parse_time(state["StartedAt"]),
                      parse_time(state["FinishedAt"]), state.get("OOMKilled", False))

    def state(self, name: str) -> dict:
        return json.loads(docker("inspect", "-f", "{{json .State}}", self.running[name]).stdout)

    def logs(self, name: str) -> str:
        proc = docker("logs", self.running[name], check=False)
        return proc.stdout + proc.stderr

    def exec(self, name: str, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return docker("exec", self.running[name], *command, check=False, timeout=timeout)

    def ip(self) -> str:
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return docker("inspect", "-f", fmt, self.sandbox).stdout.strip()

    # -- probes --
    def _port(self, c: dict, port) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise KubeletRefused(f"port {port!r} not found in container {c['name']}")

    def probe_url(self, name: str, kind: str = "readinessProbe") -> str:
        c = self._container(name, False)
        get = c[kind]["httpGet"]
        return f"{get.get('scheme', 'HTTP').lower()}://{self.ip()}:{self._port(c, get['port'])}{get.get('path', '/')}"

    def probe(self, name: str, kind: str = "readinessProbe") -> ProbeResult:
        """One probe of `kind` (readinessProbe, livenessProbe, startupProbe), judged as the kubelet does."""
        c = self._container(name, False)
        probe = c[kind]
        timeout = probe.get("timeoutSeconds", 1)
        if "exec" in probe:
            try:
                proc = self.exec(name, *probe["exec"]["command"], timeout=timeout + 10)
            except subprocess.TimeoutExpired:
                return ProbeResult(False, "exec probe timed out")
            return ProbeResult(proc.returncode == 0, (proc.stdout + proc.stderr).strip())
        if "httpGet" in probe:
            status, body = self.kubelet.http_get(self.probe_url(name, kind), timeout)
            return ProbeResult(200 <= status < 400, f"HTTP {status}: {body[:2000]}")
        if "tcpSocket" in probe:
            port = self._port(c, probe["tcpSocket"]["port"])
            return ProbeResult(self.kubelet.tcp_connect(self.ip(), port, timeout), f"tcp {port}")
        raise Unsupported(f"probe {probe}")

    def wait_ready(self, name: str, timeout: float = 120, interval: float = 0.2) -> ProbeResult:
        """Probe until Ready: the startupProbe first, if any (the kubelet runs no other probe before
        it passes), then readiness; polled faster than periodSeconds, a test need not wait for the period."""
        deadline = time.monotonic() + timeout
        kinds = [k for k in ("startupProbe", "readinessProbe") if k in self._container(name, False)]
        result = ProbeResult(True, "no probes")
        for kind in kinds:
            while True:
                result = self.probe(name, kind)
                if result.ok:
                    break
                if time.monotonic() > deadline:
                    return ProbeResult(False, f"{kind} still failing after {timeout} s: {result.detail}")
                if self.state(name)["Status"] != "running":
                    return ProbeResult(False, f"container exited: {self.logs(name)[-2000:]}")
                time.sleep(interval)
        return result

    def delete(self) -> None:
        """Stop and remove the pod's containers and emptyDirs; claims stay, as PersistentVolumeClaims do."""
        names = docker("ps", "-a", "--format", "{{.Names}}", "--filter", f"label={self.kubelet.label}").stdout.split()
        containers = [n for n in names if n.startswith(f"{self.sandbox}-")]
        if containers:  # each with its own grace period (--stop-timeout), as the kubelet stops them
            docker("stop", *containers, check=False, timeout=300)
            docker("rm", "-f", *containers, check=False)
        if self.sandbox in names:
            docker("rm", "-f", self.sandbox, check=False)  # `sleep` as PID 1 ignores SIGTERM: no grace to wait for
        for vol in self._volumes.values():
            source = vol[0].split("source=")[1].split(",")[0]
            if "-pvc-" not in source:
                docker("volume", "rm", "-f", source, check=False)
        self.running.clear()


_HTTP_GET = """
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))
    print(r.status); print(r.read().decode(errors="replace"))
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode(errors="replace"))
except Exception as e:
    print(0); print(repr(e))
"""

_HTTP_WAIT = """
import sys, time, urllib.request
url, timeout, interval = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
deadline = time.time() + timeout
while time.time() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            if 200 <= r.status < 400:
                print(time.time()); sys.exit(0)
    except Exception:
        pass
    time.sleep(interval)
sys.exit(1)
"""

_TCP = """
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
"""


# ---- the engine and the images ---------------------------------------------------------------

def why_no_engine() -> str | None:
    """Why containers cannot run here, or None."""
    if not shutil.which("docker") and not os.path.exists("/usr/bin/docker"):
        return "no docker client (scripts/install-system-deps installs docker.io)"
    if not shutil.which("debootstrap"):
        return "no debootstrap, which makes the base image (scripts/install-system-deps installs it)"
    if os.geteuid() != 0 and docker("info", check=False, timeout=60).returncode != 0:
        return "no Docker engine answers and only root can start dockerd"
    if os.geteuid() != 0:
        return "debootstrap needs root to make the base image"
    return None


def engine_and_images(python: str | None = None) -> dict[str, str]:
    """Start the engine, build the images (both cached); {image name: image ID}."""
    env = {**os.environ, **({"PYTHON": python} if python else {})}
    subprocess.run([str(REPO / "scripts/container-engine")], check=True, env=env)
    proc = subprocess.run([str(REPO / "scripts/container-images")], check=True, env=env, stdout=subprocess.PIPE,
                          text=True)
    return dict(line.split() for line in proc.stdout.splitlines() if line.strip())
