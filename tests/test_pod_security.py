"""Every pod meets the Pod Security Standards "restricted" profile (baseline included), init containers too.

The rules are those of the Kubernetes documentation's "Pod Security Standards"
page (restricted, v1.30 and later), checked here by our own code.
"""

from __future__ import annotations

import copy

import pytest

from dbctl.k8s import render

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(pod: dict) -> list[str]:
    """What in this pod spec breaks the restricted profile; empty when nothing does."""
    found = []
    psc = pod.get("securityContext") or {}
    containers = [("container", c) for c in pod.get("containers", [])]
    containers += [("initContainer", c) for c in pod.get("initContainers", [])]
    containers += [("ephemeralContainer", c) for c in pod.get("ephemeralContainers", [])]

    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append(f"pod: {field} is true")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']}: type {', '.join(sorted(kinds))} is not allowed")
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"pod: sysctl {sysctl['name']} is not safe")
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        found.append("pod: seccompProfile Unconfined")
    if psc.get("runAsUser") == 0:
        found.append("pod: runAsUser 0")
    if psc.get("runAsNonRoot") is False:
        found.append("pod: runAsNonRoot false")
    _selinux(psc, "pod", found)
    if (psc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        found.append("pod: appArmorProfile Unconfined")

    for kind, c in containers:
        where = f"{kind} {c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            found.append(f"{where}: privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"{where}: capabilities.drop does not include ALL")
        extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            found.append(f"{where}: adds capabilities {sorted(extra)}")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation is not set to false")
        if sc.get("runAsNonRoot") is False or (psc.get("runAsNonRoot") is not True and sc.get("runAsNonRoot") is not True):
            found.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            found.append(f"{where}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: seccompProfile is {seccomp or 'unset'}, not RuntimeDefault or Localhost")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{where}: procMount {sc['procMount']}")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{where}: hostProcess")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            found.append(f"{where}: appArmorProfile Unconfined")
        _selinux(sc, where, found)
        for port in c.get("ports", []):
            if port.get("hostPort"):
                found.append(f"{where}: hostPort {port['hostPort']}")
    return found


def _selinux(context: dict, where: str, found: list[str]) -> None:
    options = context.get("seLinuxOptions") or {}
    if options.get("type") not in SELINUX_TYPES:
        found.append(f"{where}: seLinuxOptions.type {options['type']}")
    for field in ("user", "role"):
        if options.get(field):
            found.append(f"{where}: seLinuxOptions.{field} is set")


def pods(opts=None) -> dict[str, dict]:
    opts = opts or render.RenderOptions()
    docs = render.migration_documents(opts) + render.dev_documents(opts)
    return {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
            for d in docs if d["kind"] in ("Job", "Deployment")}


def all_containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def test_every_pod_meets_the_restricted_profile():
    found = pods()
    assert set(found) == {"Job/database-migration", "Job/database-seed", "Deployment/postgres",
                          "Deployment/redis", "Deployment/backend"}
    problems = {name: restricted_violations(pod) for name, pod in found.items()}
    assert all(not p for p in problems.values()), problems
    assert sum(len(p.get("initContainers", [])) for p in found.values()) == 1  # the backend's, checked too


@pytest.mark.parametrize("breakage, expected", [
    (lambda pod: pod["initContainers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
     "initContainer wait-and-verify: capabilities.drop does not include ALL"),
    (lambda pod: pod["initContainers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
     "initContainer wait-and-verify: allowPrivilegeEscalation is not set to false"),
    (lambda pod: pod["containers"][0]["securityContext"].update(runAsUser=0), "container backend: runAsUser 0"),
    (lambda pod: (pod["securityContext"].pop("runAsNonRoot"), pod["containers"][0]["securityContext"].pop("runAsNonRoot")),
     "container backend: runAsNonRoot is not true"),
    (lambda pod: pod["securityContext"].pop("seccompProfile"), "seccompProfile is unset"),
    (lambda pod: pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
     "volume host: type hostPath is not allowed"),
    (lambda pod: pod.update(hostNetwork=True), "pod: hostNetwork is true"),
    (lambda pod: pod["initContainers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
     "initContainer wait-and-verify: adds capabilities ['SYS_ADMIN']"),
    (lambda pod: pod["containers"][0]["ports"][0].update(hostPort=8080), "container backend: hostPort 8080"),
])
def test_the_checker_catches_each_breakage(breakage, expected):
    pod = copy.deepcopy(pods()["Deployment/backend"])
    assert restricted_violations(pod) == []
    breakage(pod)
    assert any(expected in v for v in restricted_violations(pod)), restricted_violations(pod)


def test_no_token_read_only_root_and_limits_everywhere():
    for name, pod in pods().items():
        assert pod["automountServiceAccountToken"] is False, name
        assert pod.get("serviceAccountName") is None, name
        mounted = set()
        volumes = {v["name"] for v in pod["volumes"]}
        for c in all_containers(pod):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert c["resources"]["limits"]["memory"] and c["resources"]["limits"]["cpu"], (name, c["name"])
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), (name, c["name"])
            mounted |= {m["name"] for m in c["volumeMounts"]}
        assert mounted == volumes, name  # no volume declared and forgotten, none mounted and undeclared


def test_postgres_and_redis_can_write_where_they_must():
    found = pods()
    pg = found["Deployment/postgres"]
    assert pg["securityContext"]["runAsUser"] == pg["securityContext"]["fsGroup"] == 999
    (container,) = pg["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pg["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/run/postgresql"]]
    assert "persistentVolumeClaim" in volumes[mounts["/var/lib/postgresql/data"]]
    pgdata = {e["name"]: e.get("value") for e in container["env"]}["PGDATA"]
    assert pgdata.startswith("/var/lib/postgresql/data/") and pgdata != "/var/lib/postgresql/data/"

    redis = found["Deployment/redis"]
    assert redis["securityContext"]["runAsUser"] == 999
    (container,) = redis["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in {v["name"]: v for v in redis["volumes"]}[mounts["/data"]]
    assert container["command"][container["command"].index("--dir") + 1] == "/data"

    for name in ("Job/database-migration", "Job/database-seed", "Deployment/backend"):
        assert found[name]["securityContext"]["runAsUser"] == render.APP_UID


def test_the_namespace_enforces_the_restricted_profile():
    ns = render.namespace(render.RenderOptions())
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
