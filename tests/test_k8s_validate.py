"""Every rendered document validates strictly (kubernetes-validate) against Kubernetes 1.30 and the newest shipped.

kubernetes-validate's own validate() stops at the first error; this test
builds the same strict schema it uses and collects every error instead.
"""

from __future__ import annotations

import copy
import re

import jsonschema
import pytest
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

from dbctl.k8s import render

OLDEST = "1.30"
NEWEST = kv.major_minor(kv.latest_version())
VERSIONS = sorted({OLDEST, NEWEST})


def strict_errors(doc: dict, version: str) -> list[str]:
    """All strict-schema errors of one document, as 'kind/name: path: message'."""
    shipped = [v for v in kv.all_versions() if kv.major_minor(v) == version]
    assert shipped, f"kubernetes-validate {kv.__version__} ships no schema for Kubernetes {version}"
    schema_dir = f"kubernetes-json-schema/v{shipped[-1]}-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
    try:
        schema = kv.schema_contents(f"{schema_dir}/{doc['kind'].lower()}-{api}.json", version)
    except FileNotFoundError:
        return [f"{doc['kind']}: no schema for {doc['apiVersion']} in Kubernetes {version}"]
    definitions = kv.schema_contents(f"{schema_dir}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
    where = f"{doc['kind'].lower()}/{doc.get('metadata', {}).get('name')}"
    return [f"{where}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator.iter_errors(doc)]


def all_documents(opts=None):
    opts = opts or render.RenderOptions()
    return render.migration_documents(opts) + render.dev_documents(opts)


def test_the_pinned_versions_are_shipped():
    assert OLDEST in {kv.major_minor(v) for v in kv.all_versions()}
    assert tuple(map(int, NEWEST.split("."))) >= (1, 37)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("seed_suspend", [True, False])
def test_every_rendered_document_validates_strictly(version, seed_suspend):
    docs = all_documents(render.make_options(seed_suspend=seed_suspend))
    assert len(docs) == 11
    errors = [error for doc in docs for error in strict_errors(doc, version)]
    assert errors == [], "\n".join(errors)


@pytest.mark.parametrize("version", VERSIONS)
def test_committed_yaml_validates_strictly(version):
    import yaml

    from conftest import REPO

    for name in render.FILES.values():
        docs = [d for d in yaml.safe_load_all((REPO / "k8s" / "dev" / name).read_text()) if d]
        errors = [error for doc in docs for error in strict_errors(doc, version)]
        assert errors == [], "\n".join(errors)


def test_every_error_is_reported_not_only_the_first():
    job = copy.deepcopy(render.migration_job(render.RenderOptions()))
    pod = job["spec"]["template"]["spec"]
    pod["restartPolcy"] = "Never"  # an unknown field: strict mode refuses it
    pod["containers"][0]["resources"]["limits"]["memory"] = {"a": 1}  # wrong type
    job["spec"]["backoffLimit"] = "three"  # wrong type
    errors = strict_errors(job, NEWEST)
    assert len(errors) == 3, errors
    assert any("restartPolcy" in e for e in errors)
    assert any("backoffLimit" in e for e in errors)
    assert any("limits.memory" in e for e in errors)


def test_an_unknown_kind_is_an_error_not_a_pass():
    assert strict_errors({"apiVersion": "batch/v1", "kind": "Jobb", "metadata": {"name": "x"}}, NEWEST)
