"""The Tiltfiles, evaluated in a real Starlark interpreter with Tilt's builtins (tests/tilt_harness.py).

`local()` really runs `dbctl render`, so the graph is built from the real YAML.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import REPO
from tilt_harness import TRIGGER_MODE_AUTO, TRIGGER_MODE_MANUAL, TiltfileError, evaluate

ROOT = REPO / "Tiltfile"
EXTENSION_TEST = REPO / "tilt_extensions" / "db_migrations" / "test" / "Tiltfile"
TRIGGERS = ["db-migrate", "db-seed", "db-reset", "db-status", "dev-setup", "health-check"]


@pytest.fixture(scope="module")
def cluster():
    return evaluate(ROOT)


@pytest.fixture(scope="module")
def local():
    return evaluate(ROOT, ["--no-cluster"])


def test_cluster_graph_startup_order(cluster):
    r = cluster.resources
    assert set(r) >= {"postgres", "redis", "database-migration", "database-seed", "backend", *TRIGGERS}
    assert "uncategorized" not in r  # every object has a home
    assert r["database-migration"].resource_deps == ["postgres"]
    assert set(r["backend"].resource_deps) == {"database-migration", "redis"}
    assert r["database-migration"].objects == ["database-migration:job"]
    assert r["database-seed"].objects == ["database-seed:job"]
    # postgres and redis depend only on the namespace/secret/volume set-up, never on app resources
    assert set(r["postgres"].resource_deps) <= {"dev-base", "postgres-data"}
    assert set(r["redis"].resource_deps) <= {"dev-base"}


def test_seed_job_is_manual_and_never_blocks_tilt_up(cluster):
    seed = cluster.resources["database-seed"]
    assert seed.trigger_mode == TRIGGER_MODE_MANUAL and seed.auto_init is False
    # rendered runnable: under Tilt a suspended Job would never complete
    job = next(e for e in cluster.objects_of("Job") if e["metadata"]["name"] == "database-seed")
    assert not job["spec"].get("suspend")
    for name in ("postgres", "redis", "database-migration", "backend"):
        assert cluster.resources[name].auto_init is True
        assert cluster.resources[name].trigger_mode == TRIGGER_MODE_AUTO


def test_postgres_volume_is_in_no_triggered_resource(cluster):
    claims = [f"{e['metadata']['name']}:persistentvolumeclaim" for e in cluster.objects_of("PersistentVolumeClaim")]
    assert claims
    for claim in claims:
        home = cluster.resource_of(claim)
        assert home not in {"postgres", "database-migration", "database-seed", "backend", *TRIGGERS}
        assert cluster.resources[home].objects == [claim]  # alone in its resource
    assert "postgres" in cluster.resources and "postgres-data" in cluster.resources["postgres"].resource_deps


def test_one_image_from_the_dockerfile_rebuilt_by_migrations(cluster):
    (image,) = cluster.images
    assert image["dockerfile"] == str(REPO / "Dockerfile")
    assert "migrations" in image["only"] and "seeds" in image["only"] and "tools" in image["only"]
    for name in ("database-migration", "database-seed", "backend"):
        assert cluster.resources[name].images == [image["ref"]]
    assert not [w for w in cluster.warnings if "Image not used" in w]


def test_yaml_comes_from_dbctl_render(cluster):
    renders = [c["command"] for c in cluster.local_calls if "render" in c["command"]]
    assert {cmd[cmd.index("render") + 1] for cmd in renders} == {"dev-manifests", "migration-job"}
    jobs = [c for c in renders if "migration-job" in c]
    assert all("--no-seed-suspend" in c for c in jobs)


def test_labels_and_port_forwards(cluster):
    r = cluster.resources
    assert r["postgres"].labels == ["database"] and r["redis"].labels == ["database"]
    assert r["database-migration"].labels == ["database"]
    assert r["backend"].labels == ["app"]
    for name in TRIGGERS + ["database-seed"]:
        assert r[name].labels == ["tools"], name
    assert [(p["local_port"], p["container_port"]) for p in r["postgres"].port_forwards] == [(5432, 5432)]
    assert [(p["local_port"], p["container_port"]) for p in r["redis"].port_forwards] == [(6379, 6379)]
    (backend_pf,) = r["backend"].port_forwards
    assert backend_pf["local_port"] == 8080 and backend_pf["link_path"] == "/health"


@pytest.mark.parametrize("mode", ["cluster", "local"])
def test_triggers_are_manual_and_not_started(mode, request):
    result = request.getfixturevalue(mode)
    for name in TRIGGERS:
        res = result.resources[name]
        assert res.type == "local"
        assert res.trigger_mode == TRIGGER_MODE_MANUAL and res.auto_init is False, name
        assert isinstance(res.cmd, list) and res.cmd[0].endswith("dbctl")
    cmds = {n: result.resources[n].cmd[1:] for n in TRIGGERS}
    assert cmds["db-migrate"][:2] == ["dev", "migrate"]
    assert cmds["db-reset"][:2] == ["dev", "reset"] and "--yes" not in cmds["db-reset"]
    assert cmds["dev-setup"][0] == "doctor" and cmds["health-check"][0] == "health-check"
    assert "--backend-url" in cmds["health-check"]
    assert ("--cluster" in cmds["db-status"]) == (mode == "cluster")


@pytest.mark.parametrize("mode", ["cluster", "local"])
def test_buttons_on_resources_run_the_trigger_commands(mode, request):
    result = request.getfixturevalue(mode)
    buttons, cmds = result.buttons, result.cmds
    assert set(buttons) == {"btn-db-migrate", "btn-db-status", "btn-db-seed", "btn-db-reset", "btn-health-check"}
    for name, button in buttons.items():
        loc = button["location"]
        assert loc["component_type"] == "Resource" and loc["component_id"] in result.resources
        cmd = cmds[name]
        assert cmd["start_on"] == {"ui_buttons": [name]}
        assert cmd["annotations"]["tilt.dev/resource"] == loc["component_id"]
    assert buttons["btn-db-migrate"]["location"]["component_id"] == "database-migration"
    assert buttons["btn-health-check"]["location"]["component_id"] == "backend"
    reset = buttons["btn-db-reset"]
    assert reset["requires_confirmation"] is True
    assert [i["name"] for i in reset["inputs"]] == ["DBCTL_RESET_SEED"]
    assert cmds["btn-db-reset"]["args"] == result.resources["db-reset"].cmd + ["--yes"]
    assert cmds["btn-db-migrate"]["args"] == result.resources["db-migrate"].cmd
    assert not [b for b in buttons.values() if b["requires_confirmation"] and b["name"] != "btn-db-reset"]


def test_no_cluster_graph(local):
    r = local.resources
    assert local.images == [] and local.entities == []  # nothing for Kubernetes
    assert set(r) == {"postgres", "redis", "database-migration", "database-seed", "backend", *TRIGGERS}
    assert r["postgres"].serve_cmd[1:] == ["dev", "postgres"]
    assert r["postgres"].readiness_probe.fields["exec"] is not None
    assert r["redis"].serve_cmd[0] == "redis-server"
    assert r["database-migration"].cmd[1:] == ["dev", "run", "--", "migrate"]
    assert r["database-migration"].resource_deps == ["postgres"]
    assert r["database-migration"].deps == [str(REPO / "migrations")]  # a new file re-runs it
    assert r["database-seed"].trigger_mode == TRIGGER_MODE_MANUAL and r["database-seed"].auto_init is False
    assert set(r["backend"].resource_deps) == {"database-migration", "redis"}
    assert r["backend"].serve_cmd[1:5] == ["dev", "run", "--", "serve"]
    probe = r["backend"].readiness_probe.fields["http_get"]
    assert probe.kind == "HTTPGetAction" and probe.fields["path"] == "/health"


def test_no_cluster_without_redis_server_leaves_redis_out(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # no redis-server anywhere on this PATH
    result = evaluate(ROOT, ["--no-cluster"], env=env)
    assert "redis" not in result.resources
    assert result.resources["backend"].resource_deps == ["database-migration"]
    assert any("redis-server is not installed" in w for w in result.warnings)


def test_unknown_config_flag_fails_as_in_tilt():
    with pytest.raises(TiltfileError, match="flag provided but not defined"):
        evaluate(ROOT, ["--no-clusterr"])


def test_harness_rejects_unknown_parameters(tmp_path):
    tiltfile = tmp_path / "Tiltfile"
    tiltfile.write_text("local_resource('x', cmd='true', trigger='manual')\n")
    with pytest.raises(TiltfileError, match="unexpected keyword argument 'trigger'"):
        evaluate(tiltfile)
    tiltfile.write_text("load('ext://uibutton', 'cmd_button')\n")
    with pytest.raises(TiltfileError, match="network"):
        evaluate(tiltfile)
    tiltfile.write_text("k8s_resource('nothing-here', labels=['x'])\n")
    with pytest.raises(TiltfileError, match="No Kubernetes resource found"):
        evaluate(tiltfile)


@pytest.mark.parametrize("args", [[], ["--no-cluster"]])
def test_extension_test_tiltfile_loads(args):
    result = evaluate(EXTENSION_TEST, args)
    r = result.resources
    assert set(r["backend"].resource_deps) >= {"database-migration"}
    assert r["postgres"].labels == ["db"] and r["backend"].labels == ["service"] and r["db-seed"].labels == ["buttons"]
    if not args:
        ns = {e["metadata"].get("namespace") for e in result.entities if e["kind"] != "Namespace"}
        assert ns == {"kiro-extension-test"}


def test_tilt_down_declares_no_buttons():
    result = evaluate(ROOT, subcommand="down")
    assert result.buttons == {} and result.cmds == {}


# ---------------------------------------------------------------- with a real Tilt

def _tilt_result(args):
    proc = subprocess.run(["tilt", "alpha", "tiltfile-result", "-f", str(ROOT), "--", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("args", [[], ["--no-cluster"]])
def test_real_tilt_agrees_with_the_harness(args):
    if shutil.which("tilt") is None:
        pytest.skip("no `tilt` binary on PATH: cannot compare with `tilt alpha tiltfile-result`")
    data = _tilt_result(args)
    manifests = {m["Name"]: m for m in data.get("Manifests", [])}
    ours = evaluate(ROOT, args).resources
    assert set(manifests) == set(ours)
    for name, m in manifests.items():
        deps = m.get("ResourceDependencies") or []
        assert sorted(deps) == sorted(ours[name].resource_deps), name


def test_tilt_ci_runs_the_whole_graph():
    missing = [tool for tool in ("tilt", "kind", "docker") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} on PATH to run `tilt ci` on a kind cluster")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("docker is installed but no Docker engine answers (docker info failed)")
    if subprocess.run(["kubectl", "cluster-info", "--request-timeout=5s"], capture_output=True).returncode != 0:
        pytest.skip("no reachable Kubernetes cluster (kind create cluster first)")
    proc = subprocess.run(["tilt", "ci", "--timeout", "15m"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    try:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    finally:
        subprocess.run(["tilt", "down"], cwd=REPO, capture_output=True, timeout=600)
