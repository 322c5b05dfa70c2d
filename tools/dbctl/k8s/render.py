"""Kubernetes manifests for the Kiro dev environment, as Python documents and YAML text.

`dbctl render` prints them; the rendered defaults are committed under k8s/dev/
(a test keeps them identical), so `kubectl apply -f k8s/dev/` needs no Python.

Every pod meets the Pod Security Standards "restricted" profile: non-root
numeric users, no privilege escalation, all capabilities dropped, the
RuntimeDefault seccomp profile, a read-only root filesystem with an emptyDir
wherever a process must write, and no service-account token (nothing here
talks to the Kubernetes API: the backend's init containers ask the database
whether migrations are done).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path

from dbctl.errors import ConfigError
from dbctl.text import quoted

# The image's fixed non-root user (the Dockerfile's USER); the manifests name it
# numerically so the kubelet can prove runAsNonRoot without reading /etc/passwd.
APP_UID = 10001
# The official postgres and redis images (Debian variants) both create their
# user and group with id 999; running as that id keeps file ownership what the
# images expect.
POSTGRES_UID = 999
REDIS_UID = 999

APP_DIR = "/app"
SERVE_PORT = 8080
PART_OF = "kiro"

# Dev-only credentials, committed on purpose: the namespace is a developer's own.
DEV_USER = "kiro"
DEV_DATABASE = "kiro"
DEV_PASSWORD = "kiro-dev-password"

FILES = {"dev-manifests": "dev-manifests.yaml", "migration-job": "migration-job.yaml"}


@dataclass(frozen=True)
class RenderOptions:
    image: str = "kiro-backend:dev"
    namespace: str = "kiro-dev"
    secret_name: str = "kiro-db-credentials"
    migration_job_name: str = "database-migration"
    seed_job_name: str = "database-seed"
    ttl: int = 86400
    backoff_limit: int = 3
    active_deadline: int = 900
    memory: str = "128Mi"
    cpu: str = "100m"
    cpu_limit: str = "1"
    seed_suspend: bool = True
    image_pull_policy: str = "IfNotPresent"
    postgres_image: str = "postgres:16-bookworm"
    redis_image: str = "redis:7-bookworm"
    postgres_name: str = "postgres"
    redis_name: str = "redis"
    backend_name: str = "backend"
    storage: str = "1Gi"


OPTION_NAMES = tuple(f.name for f in fields(RenderOptions))

# ---------------------------------------------------------------- validation

# Every pattern is ASCII-only and used with fullmatch: `$` and re.match accept a trailing newline, and
# \w and \d match non-ASCII letters and digits that kubectl refuses.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.ASCII)
# Kubernetes' resource.Quantity: a decimal number, then a binary-SI suffix, a
# decimal-SI suffix, or a decimal exponent.
_QUANTITY = re.compile(r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][-+]?[0-9]+)?",
                       re.ASCII)
# A container image reference (the grammar of the distribution/reference
# package): [registry[:port]/]path[:tag][@digest], path components lower case.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:localhost|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]+)?"
_IMAGE = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?",
    re.ASCII,
)
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def check_image(value: str, option: str) -> list[str]:
    if not isinstance(value, str) or not value:
        return [f"{option} must be an image reference such as kiro-backend:dev"]
    match = _IMAGE.fullmatch(value)
    # "host:5000/app" parses either way; a domain only counts before a slash.
    if not match or len(value) > 255:
        hint = " (repository names are lower case)" if value.lower() != value and _IMAGE.fullmatch(value.lower()) else ""
        return [f"{option} {quoted(value)} is not an image reference{hint}; use NAME[:TAG][@sha256:DIGEST], "
                "e.g. kiro-backend:dev or registry.example.com/kiro/backend:1.2"]
    return []


def check_label(value, option: str) -> list[str]:
    if not isinstance(value, str) or not _DNS_LABEL.fullmatch(value) or len(value) > 63:
        return [f"{option} {quoted(value)} is not a DNS-1123 label; use at most 63 lower-case letters, digits "
                "and '-', starting and ending with a letter or digit"]
    return []


def parse_quantity(value) -> Decimal | None:
    """The quantity's value in base units, or None when Kubernetes would reject it."""
    if not isinstance(value, str):
        return None
    match = _QUANTITY.fullmatch(value)
    if not match:
        return None
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    binary = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    decimal = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1, "k": Decimal("1e3"),
               "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"),
               "E": Decimal("1e18")}
    try:
        if suffix in binary:
            return number * binary[suffix]
        if suffix in decimal:
            return number * decimal[suffix]
        return number * (Decimal(10) ** int(suffix[1:]))
    except (ArithmeticError, ValueError):  # InvalidOperation, and Overflow for 1e999999999
        return None


INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# Kubernetes reads requests and limits as int64 bytes and int64 millicores.
QUANTITY_MAX = {"memory": Decimal(INT64_MAX), "cpu": Decimal(INT64_MAX) / 1000}


def check_quantity(value, option: str, kind: str) -> list[str]:
    example = "128Mi or 512M" if kind == "memory" else "100m or 0.5"
    amount = parse_quantity(value)
    if amount is None:
        return [f"{option} {quoted(value)} is not a Kubernetes quantity; use e.g. {example}"]
    if amount > QUANTITY_MAX[kind]:
        return [f"{option} {quoted(value)} is more than Kubernetes can hold (it counts {kind} in int64 "
                f"{'bytes' if kind == 'memory' else 'millicores'}); use e.g. {example}"]
    if amount <= 0:
        return [f"{option} must be more than zero; use e.g. {example}"]
    if kind == "memory" and str(value).endswith("m"):
        # Kubernetes accepts "128m" but means 0.128 bytes: nobody wants that.
        return [f"{option} {quoted(value)} means {value[:-1]} thousandths of a byte; write {value[:-1]}Mi (mebibytes)"]
    if kind == "cpu" and amount < Decimal("0.001"):
        return [f"{option} {quoted(value)} is below Kubernetes' CPU precision of 1m; use e.g. {example}"]
    return []


def _check_int(value, option: str, minimum: int, maximum: int | None = None) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bound = f"between {minimum} and {maximum}" if maximum is not None and maximum <= 1000 else f"at least {minimum}"
        return [f"{option} {quoted(value)} must be a whole number {bound}"]
    if maximum is not None and value > maximum:
        return [f"{option} {quoted(value)} must be a whole number at most {maximum} (the Kubernetes field's limit)"]
    return []


def problems(opts: RenderOptions) -> list[str]:
    """Everything wrong with the options, in one list (empty when they are fine)."""
    found: list[str] = []
    found += check_image(opts.image, "image")
    found += check_image(opts.postgres_image, "postgres-image")
    found += check_image(opts.redis_image, "redis-image")
    for name in ("namespace", "migration_job_name", "seed_job_name", "secret_name", "postgres_name",
                 "redis_name", "backend_name"):
        found += check_label(getattr(opts, name), name.replace("_", "-"))
    names = [opts.postgres_name, opts.redis_name, opts.backend_name]
    if len(set(names)) != len(names):
        found.append(f"postgres-name, redis-name and backend-name must differ (got {', '.join(names)})")
    if opts.migration_job_name == opts.seed_job_name:
        found.append("migration-job-name and seed-job-name must differ")
    # The Job fields' own types: ttlSecondsAfterFinished is int32, activeDeadlineSeconds int64.
    found += _check_int(opts.ttl, "ttl", 0, INT32_MAX)
    found += _check_int(opts.backoff_limit, "backoff-limit", 0, 100)
    found += _check_int(opts.active_deadline, "active-deadline", 1, INT64_MAX)
    found += check_quantity(opts.memory, "memory", "memory")
    found += check_quantity(opts.cpu, "cpu", "cpu")
    found += check_quantity(opts.cpu_limit, "cpu-limit", "cpu")
    if not found and parse_quantity(opts.cpu_limit) < parse_quantity(opts.cpu):
        found.append(f"cpu-limit {opts.cpu_limit} is below the cpu request {opts.cpu}; "
                     "raise --cpu-limit or lower --cpu")
    found += check_quantity(opts.storage, "storage", "memory")
    if not isinstance(opts.seed_suspend, bool):
        found.append(f"seed-suspend {quoted(opts.seed_suspend)} must be true or false")
    if opts.image_pull_policy not in PULL_POLICIES:
        found.append(f"image-pull-policy {quoted(opts.image_pull_policy)} must be one of {', '.join(PULL_POLICIES)}")
    return found


def validated(opts: RenderOptions) -> RenderOptions:
    found = problems(opts)
    if found:
        raise ConfigError("invalid render options: " + "; ".join(found))
    return opts


def options_from_mapping(data, source: str = "options file") -> dict:
    """Option values from a mapping (an options file); keys may use '-' or '_'."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a YAML mapping of option: value; e.g. image: kiro-backend:dev")
    values = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in OPTION_NAMES:
            known = ", ".join(n.replace("_", "-") for n in OPTION_NAMES)
            raise ConfigError(f"{source}: unknown option {quoted(key)}; known options: {known}")
        expected = type(getattr(RenderOptions(), name))
        if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # "cpu: 1" or "tag: 2" are fine as numbers in YAML
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            kind = {int: "a whole number", str: "a string", bool: "true or false"}[expected]
            raise ConfigError(f"{source}: {key} must be {kind}, not {quoted(value)}")
        values[name] = value
    return values


def load_options_file(path: str | Path) -> dict:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read options file {path}: {exc.strerror}; check the path") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"options file {path} is not valid YAML{where}; fix it or remove --options") from None
    return options_from_mapping(data, f"options file {path}")


def make_options(**values) -> RenderOptions:
    """RenderOptions from keyword values, validated."""
    return validated(dataclasses.replace(RenderOptions(), **values))


# ---------------------------------------------------------------- building blocks


def _labels(name: str, component: str) -> dict:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": PART_OF}


KEEP_ON_TILT_DOWN = {"tilt.dev/down-policy": "keep"}


def _meta(name: str, opts: RenderOptions, component: str) -> dict:
    return {"name": name, "namespace": opts.namespace, "labels": _labels(name, component)}


def _pod_security(uid: int, fs_group: bool = False) -> dict:
    context = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid,
               "seccompProfile": {"type": "RuntimeDefault"}}
    if fs_group:
        # Makes the volume group-writable for the database user on storage that honours fsGroup.
        context["fsGroup"] = uid
        context["fsGroupChangePolicy"] = "OnRootMismatch"
    return context


def _container_security() -> dict:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}}


def _secret_env(opts: RenderOptions, *keys: str) -> list[dict]:
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": opts.secret_name, "key": key}}} for key in keys]


def _dbctl_env(opts: RenderOptions) -> list[dict]:
    """What every dbctl container gets: credentials by reference, the image's paths, its pod name."""
    return _secret_env(opts, "DATABASE_URL", "PGPASSWORD") + [
        {"name": "DBCTL_MIGRATIONS", "value": f"{APP_DIR}/migrations"},
        {"name": "DBCTL_SEEDS", "value": f"{APP_DIR}/seeds"},
        {"name": "DBCTL_ENV", "value": "development"},
        # Recorded in _dbctl_migration_attempts, so each attempt names the pod that ran it.
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


def _resources(memory: str, cpu: str, limit_memory: str | None = None, limit_cpu: str | None = None) -> dict:
    return {"requests": {"memory": memory, "cpu": cpu},
            "limits": {"memory": limit_memory or memory, "cpu": limit_cpu or cpu}}


def _tmp_volume() -> dict:
    return {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}


def _tmp_mount() -> dict:
    return {"name": "tmp", "mountPath": "/tmp"}


def _dbctl_container(name: str, command: list[str], opts: RenderOptions, extra_env=()) -> dict:
    return {
        "name": name,
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": command,
        "env": _dbctl_env(opts) + list(extra_env),
        # The request is what the scheduler reserves; the limit is a CFS quota
        # that throttles every period. A dbctl process is short-lived and spends
        # most of its life starting Python (0.3-0.7 s of CPU), which a 100m
        # quota stretches tenfold; a one-core limit lets it start at full speed
        # and still bounds a runaway. Memory: request = limit (not compressible).
        "resources": _resources(opts.memory, opts.cpu, opts.memory, opts.cpu_limit),
        "securityContext": _container_security(),
        "volumeMounts": [_tmp_mount()],
    }


def _app_pod_spec(opts: RenderOptions, containers: list[dict], restart: str, init=()) -> dict:
    spec = {
        "restartPolicy": restart,
        # No container here calls the Kubernetes API: no token, no RBAC.
        "automountServiceAccountToken": False,
        # Service links would add POSTGRES_PORT=tcp://... and friends to every
        # container; nothing reads them and they can shadow real settings.
        "enableServiceLinks": False,
        "securityContext": _pod_security(APP_UID),
    }
    if init:
        spec["initContainers"] = list(init)
    spec["containers"] = containers
    spec["volumes"] = [_tmp_volume()]
    return spec


# ---------------------------------------------------------------- the Jobs


def migration_job(opts: RenderOptions) -> dict:
    name = opts.migration_job_name
    command = ["dbctl", "migrate", "--wait-timeout", "120"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(name, opts, "migration"),
        "spec": {
            "backoffLimit": opts.backoff_limit,
            # A migration stuck behind a lock must not hold the pipeline forever.
            "activeDeadlineSeconds": opts.active_deadline,
            # Kept a day for `kubectl logs job/...`; the backend does not need the
            # Job to exist, it asks the database (dbctl verify).
            "ttlSecondsAfterFinished": opts.ttl,
            "template": {
                "metadata": {"labels": _labels(name, "migration")},
                "spec": _app_pod_spec(opts, [_dbctl_container("migrate", command, opts)], "Never"),
            },
        },
    }


def seed_job(opts: RenderOptions) -> dict:
    name = opts.seed_job_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(name, opts, "seed"),
        "spec": {
            # Suspended: applying it creates no pod; un-suspend to seed
            # (kubectl patch job database-seed -n kiro-dev -p '{"spec":{"suspend":false}}').
            "suspend": opts.seed_suspend,
            "backoffLimit": opts.backoff_limit,
            "activeDeadlineSeconds": opts.active_deadline,
            "ttlSecondsAfterFinished": opts.ttl,
            "template": {
                "metadata": {"labels": _labels(name, "seed")},
                "spec": _app_pod_spec(opts, [_dbctl_container("seed", ["dbctl", "seed"], opts)], "Never"),
            },
        },
    }


def migration_documents(opts: RenderOptions) -> list[dict]:
    return [migration_job(opts), seed_job(opts)]


# ---------------------------------------------------------------- the dev environment


def database_url(opts: RenderOptions) -> str:
    return f"postgresql://{DEV_USER}:{DEV_PASSWORD}@{opts.postgres_name}:5432/{DEV_DATABASE}"


def redis_url(opts: RenderOptions) -> str:
    return f"redis://{opts.redis_name}:6379"


def namespace(opts: RenderOptions) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": opts.namespace,
            # The API server itself refuses pods that break the restricted profile.
            "labels": {"app.kubernetes.io/part-of": PART_OF,
                       "pod-security.kubernetes.io/enforce": "restricted",
                       "pod-security.kubernetes.io/enforce-version": "latest"},
            # `tilt down` deletes what Tilt applied; deleting the namespace would take the claim with it.
            "annotations": dict(KEEP_ON_TILT_DOWN),
        },
    }


def secret(opts: RenderOptions) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(opts.secret_name, opts, "credentials"),
        "type": "Opaque",
        "stringData": {
            "DATABASE_URL": database_url(opts),
            "PGPASSWORD": DEV_PASSWORD,
            "POSTGRES_USER": DEV_USER,
            "POSTGRES_PASSWORD": DEV_PASSWORD,
            "POSTGRES_DB": DEV_DATABASE,
        },
    }


def _service(name: str, opts: RenderOptions, component: str, port: int, target) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, opts, component),
        "spec": {"selector": {"app.kubernetes.io/name": name},
                 "ports": [{"name": component if component != "api" else "http", "port": port,
                            "targetPort": target, "protocol": "TCP"}]},
    }


def _deployment(name: str, opts: RenderOptions, component: str, pod_spec: dict, recreate: bool = False) -> dict:
    spec = {
        "replicas": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
        "template": {"metadata": {"labels": _labels(name, component)}, "spec": pod_spec},
    }
    if recreate:
        # One pod at a time owns the ReadWriteOnce volume.
        spec["strategy"] = {"type": "Recreate"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, opts, component), "spec": spec}


def postgres_claim(opts: RenderOptions) -> dict:
    # The database's data survives `tilt down` (and `make down`), as it does a trigger.
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {**_meta(f"{opts.postgres_name}-data", opts, "database"), "annotations": dict(KEEP_ON_TILT_DOWN)},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": opts.storage}}},
    }


def postgres_deployment(opts: RenderOptions) -> dict:
    container = {
        "name": "postgres",
        "image": opts.postgres_image,
        "imagePullPolicy": "IfNotPresent",
        "env": _secret_env(opts, "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB") + [
            # A subdirectory of the volume: its root may hold lost+found and
            # belongs to root; the entrypoint creates this one as uid 999 and
            # chmods it 0700 as initdb requires.
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        ],
        "ports": [{"name": "postgres", "containerPort": 5432, "protocol": "TCP"}],
        # Over TCP: during first-time setup the entrypoint's private server
        # listens on the socket only, so this stays false until it is done.
        "readinessProbe": {"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-U", DEV_USER, "-d", DEV_DATABASE]},
                           "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-U", DEV_USER, "-d", DEV_DATABASE]},
                          "initialDelaySeconds": 30, "periodSeconds": 20, "failureThreshold": 6},
        "resources": _resources("256Mi", "100m", "512Mi", "1"),
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
            # The socket and postmaster lock live here; the image's own
            # directory is on the read-only root filesystem.
            {"name": "run", "mountPath": "/var/run/postgresql"},
            _tmp_mount(),
        ],
    }
    pod = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # The image's postgres user (uid/gid 999), which its entrypoint and initdb expect.
        "securityContext": _pod_security(POSTGRES_UID, fs_group=True),
        "containers": [container],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": f"{opts.postgres_name}-data"}},
            {"name": "run", "emptyDir": {}},
            _tmp_volume(),
        ],
    }
    return _deployment(opts.postgres_name, opts, "database", pod, recreate=True)


# What the backend relies on, stated rather than left to the image's
# compiled-in defaults (a stand-in or a differently built redis-server has
# other ones): reachable on the pod's address without a password (the dev
# namespace is a developer's own; protected mode would refuse every client
# from another pod), a cache that forgets (no snapshots, no append-only file:
# nothing is written but /data, an emptyDir, and a restart starts clean), and
# a memory ceiling under the container's limit that evicts the least recently
# used keys instead of failing writes or being OOM-killed.
REDIS_SETTINGS = ["--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "",
                  "--appendonly", "no", "--dir", "/data", "--maxmemory", "96mb", "--maxmemory-policy", "allkeys-lru"]


def redis_deployment(opts: RenderOptions) -> dict:
    container = {
        "name": "redis",
        "image": opts.redis_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["redis-server", *REDIS_SETTINGS],
        "ports": [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "initialDelaySeconds": 10, "periodSeconds": 20},
        "resources": _resources("64Mi", "50m", "128Mi", "250m"),
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, _tmp_mount()],
    }
    pod = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # The image's redis user (uid/gid 999).
        "securityContext": _pod_security(REDIS_UID, fs_group=True),
        "containers": [container],
        "volumes": [{"name": "data", "emptyDir": {}}, _tmp_volume()],
    }
    return _deployment(opts.redis_name, opts, "cache", pod)


def backend_deployment(opts: RenderOptions) -> dict:
    # One init container, one Python start-up: wait for PostgreSQL and Redis,
    # then verify. It asks the database, not the Kubernetes API: no RBAC, and
    # it does not matter whether the Job still exists (ttlSecondsAfterFinished).
    # Until the migration Job has finished it fails and the kubelet retries it.
    init = [_dbctl_container("wait-and-verify", ["dbctl", "verify", "--wait-timeout", "300",
                                                  "--redis-url", redis_url(opts)], opts)]
    backend = _dbctl_container("backend", ["dbctl", "serve", "--host", "0.0.0.0", "--port", str(SERVE_PORT)], opts,
                               extra_env=[{"name": "REDIS_URL", "value": redis_url(opts)}])
    backend["ports"] = [{"name": "http", "containerPort": SERVE_PORT, "protocol": "TCP"}]
    # Started = the process answers /livez. Probed every second, so the
    # kubelet runs the readiness probe as soon as the server listens instead of
    # a readiness period later; 2 minutes allowed for a slow start.
    backend["startupProbe"] = {"httpGet": {"path": "/livez", "port": "http"}, "periodSeconds": 1,
                               "timeoutSeconds": 2, "failureThreshold": 120}
    # Readiness asks about the schema: pending, changed or missing migrations or
    # an unreachable database take the backend out of the Service until fixed.
    backend["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 10,
                                 "timeoutSeconds": 5, "failureThreshold": 3}
    # Liveness only asks whether the process answers: a migration, a reset or a
    # database restart never gets the backend restarted.
    backend["livenessProbe"] = {"httpGet": {"path": "/livez", "port": "http"}, "periodSeconds": 20,
                                "timeoutSeconds": 5, "failureThreshold": 3}
    backend["resources"] = _resources("128Mi", opts.cpu, "256Mi", opts.cpu_limit)
    pod = _app_pod_spec(opts, [backend], "Always", init=init)
    return _deployment(opts.backend_name, opts, "api", pod)


def dev_documents(opts: RenderOptions) -> list[dict]:
    return [
        namespace(opts),
        secret(opts),
        postgres_claim(opts),
        postgres_deployment(opts),
        _service(opts.postgres_name, opts, "database", 5432, "postgres"),
        redis_deployment(opts),
        _service(opts.redis_name, opts, "cache", 6379, "redis"),
        backend_deployment(opts),
        _service(opts.backend_name, opts, "api", SERVE_PORT, "http"),
    ]


# ---------------------------------------------------------------- YAML

_HEADER = """\
# {what}
# Generated by `dbctl render {target}`; do not edit by hand.
# Regenerate: dbctl render --write k8s/dev   (a test keeps this file in sync)
"""


def documents(target: str, opts: RenderOptions) -> list[dict]:
    if target == "migration-job":
        return migration_documents(opts)
    if target == "dev-manifests":
        return dev_documents(opts)
    raise ConfigError(f"unknown manifest {quoted(target)}; use one of {', '.join(FILES)} or all")


def to_yaml(docs: list[dict]) -> str:
    import yaml

    return "---\n".join(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120) for doc in docs)


def render(target: str, opts: RenderOptions) -> str:
    """The YAML text of one file: 'migration-job' or 'dev-manifests'."""
    validated(opts)
    what = {
        "migration-job": "The migration Job and the (suspended) seed Job of the Kiro dev environment.",
        "dev-manifests": "Namespace, dev credentials, PostgreSQL, Redis and the backend of the Kiro dev environment.",
    }[target] if target in FILES else ""
    return _HEADER.format(what=what, target=target) + to_yaml(documents(target, opts))


def render_all(opts: RenderOptions) -> str:
    return "---\n".join(render(target, opts) for target in FILES)


def write(directory: str | Path, opts: RenderOptions) -> list[Path]:
    """Write both files into `directory`; everything is rendered (and validated) before anything is written."""
    texts = {FILES[target]: render(target, opts) for target in FILES}
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in texts.items():
            path = directory / name
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
            written.append(path)
    except OSError as exc:
        raise ConfigError(f"cannot write manifests into {directory}: {exc.strerror}; check the directory") from None
    return written


def container_commands(opts: RenderOptions | None = None) -> dict:
    """(job or deployment name, container name) -> (command, env list), read from the rendered YAML.

    Used by scripts/test-migration-job.sh and the tests to run exactly what a pod would run.
    """
    import yaml

    opts = opts or RenderOptions()
    found = {}
    for target in FILES:
        for doc in yaml.safe_load_all(render(target, opts)):
            pod = _pod_spec_of(doc)
            if pod is None:
                continue
            for container in pod.get("initContainers", []) + pod["containers"]:
                found[(doc["metadata"]["name"], container["name"])] = container
    return found


def _pod_spec_of(doc: dict) -> dict | None:
    if doc.get("kind") in ("Job", "Deployment"):
        return doc["spec"]["template"]["spec"]
    return None


def local_command(workload: str, container: str, *, database_url: str, app_dir: str | Path,
                  pod_name: str | None = None, overrides: dict | None = None,
                  opts: RenderOptions | None = None) -> tuple[list[str], dict]:
    """(argv, env) to run a rendered container's command on this machine, exactly as the pod would.

    The command and every env entry come from the rendered YAML; only what the
    cluster would supply is translated: the Secret's DATABASE_URL/PGPASSWORD
    point at `database_url`, the image's /app is `app_dir`, metadata.name is
    `pod_name`, and `dbctl` is this Python's dbctl. `overrides` replaces the
    value of env entries the container has (e.g. a Redis URL with a local port).
    """
    import sys
    from dbctl.urls import postgres_params

    opts = opts or RenderOptions()
    spec = container_commands(opts).get((workload, container))
    if spec is None:
        known = ", ".join(f"{w}/{c}" for w, c in container_commands(opts))
        raise ConfigError(f"no container {workload}/{container} in the rendered manifests; one of: {known}")
    secret_values = dict(secret(opts)["stringData"])
    secret_values["DATABASE_URL"] = database_url
    params = postgres_params(database_url)  # as libpq reads it
    secret_values["PGPASSWORD"] = params.get("password", "")
    secret_values["POSTGRES_USER"] = params.get("user", secret_values["POSTGRES_USER"])
    secret_values["POSTGRES_DB"] = params.get("dbname", secret_values["POSTGRES_DB"])
    env = {}
    for entry in spec.get("env", []):
        if "value" in entry:
            value = entry["value"]
            env[entry["name"]] = str(Path(app_dir) / value[len(APP_DIR) + 1:]) if value.startswith(APP_DIR + "/") else value
        elif "secretKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            if ref["name"] != opts.secret_name:
                raise ConfigError(f"{workload}/{container} reads Secret {quoted(ref['name'])}, which is not rendered")
            env[entry["name"]] = secret_values[ref["key"]]
        elif entry["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[entry["name"]] = pod_name or f"{workload}-local"
        else:
            raise ConfigError(f"{workload}/{container}: cannot supply env {entry['name']} outside a cluster")
    for name, value in (overrides or {}).items():
        if name not in env:
            raise ConfigError(f"{workload}/{container} has no env {name} to override")
        env[name] = value
    command = list(spec["command"])
    if command and command[0] == "dbctl":
        command = [sys.executable, "-m", "dbctl", *command[1:]]
    return command, env


def _main(argv: list[str]) -> int:
    """python -m dbctl.k8s.render run WORKLOAD CONTAINER: run a rendered container's command here (DATABASE_URL)."""
    import os
    import subprocess
    import sys

    from dbctl.urls import printable, require_url

    if len(argv) != 3 or argv[0] != "run":
        print("usage: python -m dbctl.k8s.render run WORKLOAD CONTAINER   (e.g. run database-migration migrate)")
        return 2
    try:
        url = require_url(os.environ.get("DATABASE_URL"))
        command, env = local_command(argv[1], argv[2], database_url=url, app_dir=Path.cwd())
    except ConfigError as exc:
        print(f"Error: {printable(str(exc), one_line=True)}", file=sys.stderr)
        return exc.exit_code
    print(printable("running the rendered command: " + " ".join(["dbctl", *command[3:]])), flush=True)
    # Only what the pod would have, plus PATH: no DBCTL_* settings leak in from this shell.
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return subprocess.call(command, env={**base, **env})


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
