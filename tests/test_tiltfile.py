"""The Tiltfiles as the real Tilt reads them: `tilt alpha tiltfile-result` (Tilt's own builtins, no cluster).

`local()` really runs `dbctl render`, so the cluster graph is built from the real YAML. Running the
no-cluster graph for real: tests/test_tilt_ci.py and tests/test_tilt_triggers.py.
"""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import REPO, require
from tilt_env import TiltEnv

EXTENSION = REPO / "tilt_extensions" / "db_migrations" / "Tiltfile"
EXTENSION_TEST = REPO / "tilt_extensions" / "db_migrations" / "test" / "Tiltfile"
TRIGGERS = ["db-migrate", "db-seed", "db-reset", "db-status", "dev-setup", "health-check"]
BUTTONS = {  # name -> (the resource it is on, the trigger whose command it runs)
    "btn-db-migrate": ("database-migration", "db-migrate"),
    "btn-db-status": ("postgres", "db-status"),
    "btn-db-seed": ("postgres", "db-seed"),
    "btn-db-reset": ("postgres", "db-reset"),
    "btn-health-check": ("backend", "health-check"),
}
# Tilt's model.TriggerMode: 0 runs at start and on changes; 2 runs only when triggered (auto_init=False).
AUTO, MANUAL = 0, 2
# The Tiltfile runs the project venv's dbctl when there is one, else `dbctl` from PATH.
VENV_DBCTL = REPO / ".venv" / "bin" / "dbctl"
DBCTL = str(VENV_DBCTL) if VENV_DBCTL.exists() else "dbctl"


@pytest.fixture(scope="module")
def tilt(tilt_bin):
    require(tilt_bin.exists(), "Tilt is not built (scripts/build-tilt)")
    env = TiltEnv(tilt_bin, project=REPO)
    for name in ("KIRO_PG_PORT", "KIRO_REDIS_PORT", "KIRO_BACKEND_PORT"):  # the defaults, as a developer gets them
        env.vars.pop(name)
    yield env
    env.remove()


@pytest.fixture(scope="module")
def cluster(tilt):
    return tilt.tiltfile_result()


@pytest.fixture(scope="module")
def local(tilt):
    return tilt.tiltfile_result("--no-cluster")


def manifests(result: dict) -> dict[str, dict]:
    return {m["Name"]: m for m in result["Manifests"]}


def api_objects(result: dict, plural: str) -> dict[str, dict]:
    return result["ObjectSet"].get(f"tilt.dev/v1alpha1, Resource={plural}", {})


def deps(manifest: dict) -> list[str]:
    return sorted(manifest["ResourceDependencies"] or [])


def startup_waves(result: dict) -> list[set[str]]:
    """The resources Tilt starts by itself, grouped by when they can start: each after all its deps."""
    auto = {name: set(deps(m)) for name, m in manifests(result).items() if m["TriggerMode"] == AUTO}
    waves, done = [], set()
    while len(done) < len(auto):
        wave = {name for name, needs in auto.items() if name not in done and needs <= done}
        assert wave, f"a dependency cycle or a dependency on a resource that never starts: {auto}"
        waves.append(wave)
        done |= wave
    return waves


def k8s_objects(manifest: dict) -> list[str]:
    return [f"{d['metadata']['name']}:{d['kind'].lower()}"
            for d in yaml.safe_load_all(manifest["DeployTarget"]["yaml"]) if d]


def trigger_args(result: dict, name: str) -> list[str]:
    return manifests(result)[name]["DeployTarget"]["UpdateCmdSpec"]["args"]


# ---------------------------------------------------------------- cluster mode (tilt up)

def test_cluster_graph_and_startup_order(cluster):
    m = manifests(cluster)
    assert set(m) == {"dev-base", "postgres-data", "postgres", "redis", "database-migration", "database-seed",
                      "backend", *TRIGGERS}
    assert startup_waves(cluster) == [{"dev-base"}, {"postgres-data", "redis"}, {"postgres"},
                                      {"database-migration"}, {"backend"}]
    assert deps(m["postgres"]) == ["dev-base", "postgres-data"]
    assert deps(m["database-migration"]) == ["postgres"]
    assert deps(m["backend"]) == ["database-migration", "redis"]
    assert deps(m["database-seed"]) == ["database-migration"]


def test_cluster_objects_each_in_its_resource(cluster):
    m = manifests(cluster)
    assert k8s_objects(m["database-migration"]) == ["database-migration:job"]
    assert k8s_objects(m["database-seed"]) == ["database-seed:job"]
    # The volume claim alone in a resource nothing triggers: a trigger deletes what its resource holds.
    claims = {name: o for name in m if "yaml" in m[name]["DeployTarget"]
              for o in k8s_objects(m[name]) if o.endswith(":persistentvolumeclaim")}
    assert claims == {"postgres-data": "postgres-data:persistentvolumeclaim"}
    assert k8s_objects(m["postgres-data"]) == ["postgres-data:persistentvolumeclaim"]
    assert {o.split(":")[1] for o in k8s_objects(m["dev-base"])} == {"namespace", "secret"}
    # Under Tilt the seed Job is rendered runnable (a suspended Job never completes) and manual.
    (seed_job,) = [d for d in yaml.safe_load_all(m["database-seed"]["DeployTarget"]["yaml"]) if d]
    assert not seed_job["spec"].get("suspend")
    assert m["database-migration"]["DeployTarget"]["PodReadinessMode"] == "succeeded"


def test_cluster_trigger_modes(cluster):
    m = manifests(cluster)
    for name in ("dev-base", "postgres-data", "postgres", "redis", "database-migration", "backend"):
        assert m[name]["TriggerMode"] == AUTO, name
    for name in ("database-seed", *TRIGGERS):
        assert m[name]["TriggerMode"] == MANUAL, name  # manual and not started by tilt up / tilt ci


def test_one_image_built_by_container_images_and_rebuilt_by_migrations(cluster):
    m = manifests(cluster)
    for name in ("database-migration", "database-seed", "backend"):
        (image,) = m[name]["ImageTargets"]
        assert image["selector"] == "kiro-backend:dev"
        build = image["BuildDetails"]
        assert "scripts/container-images" in build["args"][-1] and "$EXPECTED_REF" in build["args"][-1]
        assert str(REPO / "migrations") in build["Deps"] and str(REPO / "Dockerfile") in build["Deps"]
    for name in ("postgres", "redis", "dev-base", "postgres-data"):
        assert not m[name]["ImageTargets"], name


def test_cluster_labels_and_port_forwards(cluster):
    m = manifests(cluster)
    for name in ("dev-base", "postgres-data", "postgres", "redis", "database-migration"):
        assert m[name]["Labels"] == {"database": "database"}, name
    assert m["backend"]["Labels"] == {"app": "app"}
    for name in ("database-seed", *TRIGGERS):
        assert m[name]["Labels"] == {"tools": "tools"}, name

    def forwards(name):
        return [(f["localPort"], f["containerPort"], f.get("path", ""))
                for f in m[name]["DeployTarget"]["portForwardTemplateSpec"]["forwards"]]

    assert forwards("postgres") == [(5432, 5432, "")]
    assert forwards("redis") == [(6379, 6379, "")]
    assert forwards("backend") == [(8080, 8080, "health")]  # the link in Tilt's UI opens /health


def test_cluster_triggers_run_dbctl_against_the_cluster(cluster):
    for name in TRIGGERS:
        args = trigger_args(cluster, name)
        assert args[0] == DBCTL and "--cluster" in args and args[args.index("--namespace") + 1] == "kiro-dev"
    assert trigger_args(cluster, "db-migrate")[1:3] == ["dev", "migrate"]
    assert "--yes" not in trigger_args(cluster, "db-reset")  # confirmed by triggering twice
    assert trigger_args(cluster, "health-check")[1] == "health-check"
    assert "--backend-url" in trigger_args(cluster, "dev-setup")


# ---------------------------------------------------------------- both modes: buttons

@pytest.mark.parametrize("mode", ["cluster", "local"])
def test_buttons_on_their_resources_run_the_trigger_commands(mode, request):
    result = request.getfixturevalue(mode)
    buttons, cmds = api_objects(result, "uibuttons"), api_objects(result, "cmds")
    assert set(buttons) == set(BUTTONS) == set(cmds)
    for name, (resource, trigger) in BUTTONS.items():
        spec = buttons[name]["spec"]
        assert spec["location"] == {"componentType": "Resource", "componentID": resource}, name
        assert buttons[name]["metadata"]["annotations"]["tilt.dev/resource"] == resource
        cmd = cmds[name]["spec"]
        assert cmd["startOn"]["uiButtons"] == [name]
        assert cmds[name]["metadata"]["annotations"]["tilt.dev/resource"] == resource  # its log goes there
        expected = trigger_args(result, trigger) + (["--yes"] if name == "btn-db-reset" else [])
        assert cmd["args"] == expected, name
        assert sorted(cmd["env"]) == ["DBCTL_MIGRATIONS=migrations", "DBCTL_SEEDS=seeds"]
        assert bool(spec.get("requiresConfirmation")) == (name == "btn-db-reset"), name
    assert {name: b["spec"]["text"] for name, b in buttons.items()} == {
        "btn-db-migrate": "Migrate", "btn-db-status": "DB status", "btn-db-seed": "Seed", "btn-db-reset": "Reset DB",
        "btn-health-check": "Health"}
    reset_inputs = buttons["btn-db-reset"]["spec"]["inputs"]
    assert reset_inputs == [{"name": "DBCTL_RESET_SEED", "label": "seed after reset",
                             "bool": {"trueString": "1", "falseString": "0"}}]  # unchecked by default


# ---------------------------------------------------------------- no-cluster mode (tilt up -- --no-cluster)

def test_no_cluster_graph_and_startup_order(local):
    m = manifests(local)
    assert set(m) == {"postgres", "redis", "database-migration", "database-seed", "backend", *TRIGGERS}
    assert startup_waves(local) == [{"postgres", "redis"}, {"database-migration"}, {"backend"}]
    assert deps(m["backend"]) == ["database-migration", "redis"]
    assert deps(m["database-seed"]) == ["database-migration"]
    assert all(not m[name]["ImageTargets"] for name in m)  # nothing for Kubernetes or Docker
    for name in ("database-seed", *TRIGGERS):
        assert m[name]["TriggerMode"] == MANUAL, name
    for name in ("postgres", "redis", "database-migration", "backend"):
        assert m[name]["TriggerMode"] == AUTO, name


def test_no_cluster_processes_and_probes(local):
    m = {name: man["DeployTarget"] for name, man in manifests(local).items()}
    assert m["postgres"]["ServeCmd"]["Argv"] == [DBCTL, "dev", "postgres"]
    assert m["postgres"]["ReadinessProbe"]["exec"]["command"] == [DBCTL, "dev", "postgres-ready"]
    assert m["redis"]["ServeCmd"]["Argv"][:3] == ["redis-server", "--port", "6379"]
    assert m["redis"]["ReadinessProbe"]["tcpSocket"]["port"] == 6379
    assert m["database-migration"]["UpdateCmdSpec"]["args"] == [DBCTL, "dev", "run", "--", "migrate"]
    assert m["database-migration"]["Deps"] == [str(REPO / "migrations")]  # a new file re-runs it
    assert m["backend"]["ServeCmd"]["Argv"] == [DBCTL, "dev", "run", "--", "serve", "--host", "127.0.0.1",
                                                "--port", "8080"]
    assert m["backend"]["ReadinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080, "host": "127.0.0.1"}
    (link,) = m["backend"]["Links"]
    assert link["Name"] == "backend /health" and link["URL"]["Host"] == "localhost:8080"
    assert link["URL"]["Path"] == "/health"
    for name in ("postgres", "backend"):
        assert m[name]["ServeCmd"]["Dir"] == str(REPO)
    for name in TRIGGERS:
        args = m[name]["UpdateCmdSpec"]["args"]
        assert args[0] == DBCTL and "--cluster" not in args, name
    assert "--redis-url" in m["health-check"]["UpdateCmdSpec"]["args"]


def test_no_cluster_labels(local):
    m = manifests(local)
    for name in ("postgres", "redis", "database-migration"):
        assert m[name]["Labels"] == {"database": "database"}
    assert m["backend"]["Labels"] == {"app": "app"}
    for name in ("database-seed", *TRIGGERS):
        assert m[name]["Labels"] == {"tools": "tools"}


def test_local_ports_move_with_the_environment(tilt):
    result = tilt.tiltfile_result("--no-cluster", env={"KIRO_REDIS_PORT": "16379", "KIRO_BACKEND_PORT": "18080"})
    m = {name: man["DeployTarget"] for name, man in manifests(result).items()}
    assert m["redis"]["ServeCmd"]["Argv"][:3] == ["redis-server", "--port", "16379"]
    assert m["backend"]["ReadinessProbe"]["httpGet"]["port"] == 18080
    assert "http://localhost:18080/health" in m["health-check"]["UpdateCmdSpec"]["args"]


def test_no_cluster_without_redis_server_leaves_redis_out(tilt, tmp_path):
    # A PATH with no redis-server anywhere (-v: Tilt prints the Tiltfile's warnings on stderr).
    proc = tilt.run("alpha", "tiltfile-result", "-v", "--", "--no-cluster", env={"PATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    m = manifests(json.loads(proc.stdout))
    assert "redis" not in m
    assert deps(m["backend"]) == ["database-migration"]
    assert "redis-server is not installed" in proc.stderr and "apt-get install redis-server" in proc.stderr


# ---------------------------------------------------------------- refusals, as Tilt reports them

@pytest.mark.parametrize("args, env, message", [
    (["--no-clusterr"], {}, "invalid Tiltfile config args: unknown flag: --no-clusterr"),
    (["--no-cluster"], {"KIRO_BACKEND_PORT": "eighty"},
     'KIRO_BACKEND_PORT="eighty" is not a TCP port; use a number like 8080'),
])
def test_bad_settings_fail_the_tiltfile(tilt, args, env, message):
    proc = tilt.run("alpha", "tiltfile-result", "--", *args, env=env)
    assert proc.returncode == 5, proc.stdout + proc.stderr  # Tilt's exit code for a Tiltfile error
    assert message in proc.stderr


@pytest.mark.parametrize("call, message", [
    ("db_migrations(no_cluster=True, dbctl=[])", "dbctl must be a command as a list"),
    ("db_migrations(no_cluster=True, backend_port=0)", "backend_port must be a TCP port number, got 0"),
])
def test_extension_refuses_bad_parameters(tilt, tmp_path, call, message):
    tiltfile = tmp_path / "Tiltfile"
    tiltfile.write_text(f"load({str(EXTENSION)!r}, 'db_migrations')\n{call}\n")
    proc = tilt.run("alpha", "tiltfile-result", "-f", str(tiltfile))
    assert proc.returncode == 5 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", [[], ["--no-cluster"]])
def test_extension_test_tiltfile(tilt, args):
    result = tilt.tiltfile_result(*args, tiltfile=EXTENSION_TEST)
    m = manifests(result)
    assert deps(m["backend"]) == ["database-migration", "redis"]
    assert deps(m["frontend"]) == ["backend"]  # a caller's frontend waits for the backend the extension returns
    assert m["postgres"]["Labels"] == {"db": "db"} and m["backend"]["Labels"] == {"service": "service"}
    assert m["db-seed"]["Labels"] == {"buttons": "buttons"}
    assert trigger_args(result, "db-status")[0] == DBCTL  # the repository's, found from the Tiltfile's place
    if not args:
        (image,) = m["backend"]["ImageTargets"]
        assert image["selector"] == "kiro-backend:extension-test" and image["BuildDetails"]["dir"] == str(REPO)
        namespaces = {d["metadata"].get("namespace") for name in m if "yaml" in m[name]["DeployTarget"]
                      for d in yaml.safe_load_all(m[name]["DeployTarget"]["yaml"]) if d and d["kind"] != "Namespace"}
        assert namespaces == {"kiro-extension-test"}
        assert "kiro-extension-test" in trigger_args(result, "db-status")
