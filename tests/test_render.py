"""`dbctl render`: the committed k8s/dev files, what the manifests say, and refused options."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO, assert_clean_error, run_dbctl
from dbctl.k8s import render

K8S_DEV = REPO / "k8s" / "dev"


def docs_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind_name(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.fixture(scope="module")
def rendered():
    opts = render.RenderOptions()
    return by_kind_name(render.migration_documents(opts) + render.dev_documents(opts))


def env_of(container) -> dict:
    return {e["name"]: e for e in container["env"]}


# ---------------------------------------------------------------- committed files


@pytest.mark.parametrize("target", ["migration-job", "dev-manifests"])
def test_committed_file_is_what_dbctl_render_prints(target):
    result = run_dbctl("render", target)
    assert result.code == 0, result.output
    committed = (K8S_DEV / render.FILES[target]).read_text(encoding="utf-8")
    assert result.out == committed, f"k8s/dev/{render.FILES[target]} is stale: run dbctl render --write k8s/dev"


def test_render_all_prints_both_and_write_writes_both(tmp_path):
    result = run_dbctl("render", "all")
    assert result.code == 0, result.output
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs_of(result.out)]
    assert ("Job", "database-migration") in kinds and ("Job", "database-seed") in kinds
    assert ("Deployment", "backend") in kinds and kinds[0] == ("Namespace", "kiro-dev")

    written = run_dbctl("render", "--write", str(tmp_path / "out"))
    assert written.code == 0, written.output
    for name in render.FILES.values():
        assert (tmp_path / "out" / name).read_text() == (K8S_DEV / name).read_text()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(render.FILES.values())


# ---------------------------------------------------------------- what the manifests say


def test_migration_job(rendered):
    job = rendered[("Job", "database-migration")]
    spec = job["spec"]
    assert job["metadata"]["namespace"] == "kiro-dev"
    assert spec["backoffLimit"] == 3
    assert spec["ttlSecondsAfterFinished"] == 86400
    assert spec["activeDeadlineSeconds"] > 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == "kiro-backend:dev"
    assert container["command"][:2] == ["dbctl", "migrate"]
    # Reserve 100m, burst to a core: a 100m quota stretches Python's start-up tenfold.
    assert container["resources"] == {"requests": {"memory": "128Mi", "cpu": "100m"},
                                      "limits": {"memory": "128Mi", "cpu": "1"}}
    env = env_of(container)
    for key in ("DATABASE_URL", "PGPASSWORD"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "kiro-db-credentials", "key": key}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["DBCTL_MIGRATIONS"]["value"] == "/app/migrations"


def test_seed_job_is_suspended_with_the_same_image_and_resources(rendered):
    seed = rendered[("Job", "database-seed")]
    migration = rendered[("Job", "database-migration")]
    assert seed["spec"]["suspend"] is True
    (container,) = seed["spec"]["template"]["spec"]["containers"]
    (migrate,) = migration["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["dbctl", "seed"]
    assert container["image"] == migrate["image"]
    assert container["resources"] == migrate["resources"]
    assert env_of(container)["DBCTL_SEEDS"]["value"] == "/app/seeds"

    tilt = render.seed_job(render.make_options(seed_suspend=False))
    assert tilt["spec"]["suspend"] is False


def test_no_credential_is_inline_in_any_container(rendered):
    for doc in rendered.values():
        if doc["kind"] not in ("Job", "Deployment"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            text = yaml.safe_dump(container)
            assert render.DEV_PASSWORD not in text, (doc["metadata"]["name"], container["name"])
            for entry in container.get("env", []):
                if entry["name"] in ("DATABASE_URL", "PGPASSWORD", "POSTGRES_PASSWORD"):
                    assert "secretKeyRef" in entry["valueFrom"], entry


def test_secret_holds_the_dev_credentials(rendered):
    data = rendered[("Secret", "kiro-db-credentials")]["stringData"]
    assert set(data) == {"DATABASE_URL", "PGPASSWORD", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    assert data["DATABASE_URL"] == f"postgresql://kiro:{data['PGPASSWORD']}@postgres:5432/kiro"
    assert data["POSTGRES_USER"] == data["POSTGRES_DB"] == "kiro"
    assert data["POSTGRES_PASSWORD"] == data["PGPASSWORD"]


def test_backend_has_one_init_container_that_waits_for_both_and_verifies(rendered):
    pod = rendered[("Deployment", "backend")]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["name"] == "wait-and-verify"
    assert init["command"] == ["dbctl", "verify", "--wait-timeout", "300", "--redis-url", "redis://redis:6379"]
    assert init["resources"]["requests"]["cpu"] == "100m" and init["resources"]["limits"]["cpu"] == "1"
    (backend,) = pod["containers"]
    assert backend["command"][:2] == ["dbctl", "serve"]
    assert {p["name"]: p["containerPort"] for p in backend["ports"]} == {"http": 8080}


def test_backend_probes_liveness_never_depends_on_the_schema(rendered):
    (backend,) = rendered[("Deployment", "backend")]["spec"]["template"]["spec"]["containers"]
    assert backend["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert backend["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    # started = the process answers; probed every second so readiness follows at once
    assert backend["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert backend["startupProbe"]["periodSeconds"] == 1
    assert backend["startupProbe"]["periodSeconds"] * backend["startupProbe"]["failureThreshold"] >= 60
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert backend[probe]["timeoutSeconds"] >= 2, probe


def test_redis_states_the_settings_the_backend_relies_on(rendered):
    (redis,) = rendered[("Deployment", "redis")]["spec"]["template"]["spec"]["containers"]
    command = redis["command"]
    assert command[0] == "redis-server"
    settings = {}
    for arg in command[1:]:  # redis-server --name value [value...]
        if arg.startswith("--"):
            name = arg[2:]
            settings[name] = []
        else:
            settings[name].append(arg)
    assert settings["bind"] == ["0.0.0.0"] and settings["protected-mode"] == ["no"]
    assert settings["save"] == [""] and settings["appendonly"] == ["no"] and settings["dir"] == ["/data"]
    assert settings["port"] == ["6379"]
    # the memory ceiling stays under the container's limit and evicts rather than failing writes
    ceiling = int(settings["maxmemory"][0].removesuffix("mb")) * 2**20
    assert ceiling < render.parse_quantity(redis["resources"]["limits"]["memory"])
    assert settings["maxmemory-policy"] == ["allkeys-lru"]


def test_dev_manifests_have_the_original_names(rendered):
    for kind, name in [("Namespace", "kiro-dev"), ("Deployment", "postgres"), ("Service", "postgres"),
                       ("PersistentVolumeClaim", "postgres-data"), ("Deployment", "redis"), ("Service", "redis"),
                       ("Deployment", "backend"), ("Service", "backend")]:
        assert (kind, name) in rendered
    pg = rendered[("Deployment", "postgres")]["spec"]
    assert pg["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in pg["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "postgres-data"
    # every Service selects the pods of the Deployment of the same name
    for (kind, name), doc in rendered.items():
        if kind == "Service":
            labels = rendered[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"].items() <= labels.items()


def test_options_change_what_they_name():
    opts = render.make_options(image="registry.example.com:5000/kiro/backend:abc123", namespace="alice-dev",
                               secret_name="creds", migration_job_name="migrate-now", ttl=60, backoff_limit=0,
                               active_deadline=120, memory="256Mi", cpu="0.5", image_pull_policy="Never")
    docs = render.migration_documents(opts) + render.dev_documents(opts)
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] != "Namespace"} == {"alice-dev"}
    job = docs[0]
    assert job["metadata"]["name"] == "migrate-now"
    assert job["spec"]["ttlSecondsAfterFinished"] == 60 and job["spec"]["backoffLimit"] == 0
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == opts.image and container["imagePullPolicy"] == "Never"
    assert container["resources"] == {"requests": {"memory": "256Mi", "cpu": "0.5"},
                                      "limits": {"memory": "256Mi", "cpu": "1"}}
    limited = render.migration_job(render.make_options(cpu="250m", cpu_limit="500m"))
    assert limited["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "500m"
    assert env_of(container)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "creds"


# ---------------------------------------------------------------- refused options


@pytest.mark.parametrize("args, fragment", [
    (["--image", "Kiro Backend:dev"], 'image "Kiro Backend:dev" is not an image reference'),
    (["--image", "kiro-backend:"], "is not an image reference"),
    (["--image", "Kiro-Backend:dev"], "repository names are lower case"),
    (["--namespace", "Kiro_Dev"], 'namespace "Kiro_Dev" is not a DNS-1123 label'),
    (["--namespace", "a" * 64], "is not a DNS-1123 label"),
    (["--migration-job-name", "-migrate"], 'migration-job-name "-migrate" is not a DNS-1123 label'),
    (["--secret-name", "creds.v2"], 'secret-name "creds.v2" is not a DNS-1123 label'),
    (["--memory", "128MB"], 'memory "128MB" is not a Kubernetes quantity'),
    (["--memory", "128m"], "write 128Mi"),
    (["--cpu", "100 m"], 'cpu "100 m" is not a Kubernetes quantity'),
    (["--cpu", "-1"], "cpu must be more than zero"),
    (["--cpu", "0.0001"], "below Kubernetes' CPU precision"),
    (["--cpu-limit", "one"], 'cpu-limit "one" is not a Kubernetes quantity'),
    (["--cpu-limit", "50m"], "cpu-limit 50m is below the cpu request 100m"),
    (["--cpu", "2"], "cpu-limit 1 is below the cpu request 2; raise --cpu-limit"),
    (["--ttl", "-5"], "ttl -5 must be a whole number at least 0"),
    (["--backoff-limit", "-1"], "backoff-limit -1"),
    (["--active-deadline", "0"], "active-deadline 0"),
])
def test_invalid_options_are_refused_before_anything_is_written(tmp_path, args, fragment):
    out = tmp_path / "out"
    result = run_dbctl("render", "--write", str(out), *args)
    assert_clean_error(result, 2, fragment)
    assert not out.exists()
    assert result.out == ""


def test_all_problems_are_reported_at_once():
    result = run_dbctl("render", "--namespace", "Bad", "--memory", "lots", "--image", "a b")
    assert_clean_error(result, 2, 'namespace "Bad"', 'memory "lots"', 'image "a b"')


@pytest.mark.parametrize("quantity", ["128Mi", "1Gi", "512M", "0.5", "100m", "1e3", "2E", "1.5Gi", ".5", "250u"])
def test_quantities_kubernetes_accepts(quantity):
    assert render.parse_quantity(quantity) is not None


@pytest.mark.parametrize("quantity", ["128MB", "1 Gi", "Mi", "", "1.2.3", "1Kb", "0x10", " 1Mi", "1Mi ", "ten"])
def test_quantities_kubernetes_rejects(quantity):
    assert render.parse_quantity(quantity) is None


def test_quantity_values():
    assert render.parse_quantity("128Mi") == 128 * 2**20
    assert render.parse_quantity("100m") == render.parse_quantity("0.1")
    assert render.parse_quantity("1e3") == render.parse_quantity("1k") == 1000


@pytest.mark.parametrize("image", ["kiro-backend:dev", "postgres", "library/postgres:16.4-bookworm",
                                   "localhost:5000/kiro-backend:e2e", "ghcr.io/org/app@sha256:" + "a" * 64,
                                   "registry.example.com/a/b/c:v1.2_3", "kiro__backend"])
def test_image_references_accepted(image):
    assert render.check_image(image, "image") == []


@pytest.mark.parametrize("image", ["", "kiro backend", "kiro-backend:", ":dev", "app@sha256:xyz",
                                   "-app", "kiro/Backend", "app:" + "x" * 129, "app//x"])
def test_image_references_refused(image):
    assert render.check_image(image, "image")


# ---------------------------------------------------------------- options files


def test_options_file_sets_values_and_flags_override_it(tmp_path):
    options = tmp_path / "render.yaml"
    options.write_text("image: registry.local/kiro:abc\nnamespace: bob-dev\nseed-suspend: false\nttl: 600\n"
                       "cpu: 1\n")
    result = run_dbctl("render", "migration-job", "--options", str(options), "--namespace", "carol-dev")
    assert result.code == 0, result.output
    migration, seed = docs_of(result.out)
    assert migration["metadata"]["namespace"] == "carol-dev"
    assert migration["spec"]["ttlSecondsAfterFinished"] == 600
    assert seed["spec"]["suspend"] is False
    container = migration["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.local/kiro:abc"
    assert container["resources"]["requests"]["cpu"] == "1"


@pytest.mark.parametrize("content, fragments", [
    ("imagee: kiro:dev\n", ['unknown option "imagee"', "known options: image"]),
    ("ttl: soon\n", ['ttl must be a whole number, not "soon"']),
    ("seed_suspend: maybe\n", ["seed_suspend must be true or false"]),
    ("- image\n", ["must be a YAML mapping"]),
    ("image: [unclosed\n", ["is not valid YAML at line"]),
    ("namespace: Not_A_Label\n", ['namespace "Not_A_Label" is not a DNS-1123 label']),
])
def test_bad_options_files_are_refused(tmp_path, content, fragments):
    options = tmp_path / "render.yaml"
    options.write_text(content)
    result = run_dbctl("render", "--write", str(tmp_path / "out"), "--options", str(options))
    assert_clean_error(result, 2, *fragments)
    assert not (tmp_path / "out").exists()


def test_missing_options_file(tmp_path):
    result = run_dbctl("render", "--options", str(tmp_path / "nope.yaml"))
    assert_clean_error(result, 2, "cannot read options file", "nope.yaml")


def test_unknown_target_is_a_usage_error():
    result = run_dbctl("render", "everything")
    assert result.code == 2
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- the image


def test_dockerfile_matches_the_manifests():
    dockerfile = (REPO / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user, "the Dockerfile must name a numeric USER uid:gid"
    assert int(user[1]) == render.APP_UID and int(user[2]) == render.APP_UID
    assert f"DBCTL_MIGRATIONS={render.APP_DIR}/migrations" in dockerfile
    assert f"DBCTL_SEEDS={render.APP_DIR}/seeds" in dockerfile
    assert re.search(rf"^WORKDIR {render.APP_DIR}$", dockerfile, re.M)
    # The root filesystem is read-only: nothing can write .pyc files at run time,
    # so the image holds them (else every start compiles every module again).
    assert "PYTHONDONTWRITEBYTECODE=1" in dockerfile
    assert "compileall" in dockerfile
    # From the build context (not from another stage): exactly what .dockerignore lets in.
    sources = re.findall(r"^COPY (?!.*--from)(?:--\S+ )*(\S+) ", dockerfile, re.M)
    assert {"migrations/", "seeds/"} <= set(sources)
    ignored = (REPO / ".dockerignore").read_text().split()
    for source in sources:
        assert f"!{source}" in ignored, source
