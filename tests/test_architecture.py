"""The package's import directions, read from the source with ast (imports inside functions count too).

Layers, bottom to top: the foundation (errors, config, urls), the engine, then
checks and devdata, then k8s, then devenv, then the command line. A module may
import its own subpackage and anything below; only the engine's database
modules import a PostgreSQL driver, and only dbctl.k8s.cluster the Kubernetes
client, inside its functions, so no command pays its import (about a second)
until it talks to a cluster.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "tools" / "dbctl"
FOUNDATION = {"dbctl", "dbctl.errors", "dbctl.config", "dbctl.urls", "dbctl.text"}
MAY_IMPORT = {
    "foundation": set(),
    "engine": {"engine"},
    "checks": {"engine", "checks"},
    "devdata": {"engine", "devdata"},
    "k8s": {"engine", "k8s"},
    "devenv": {"engine", "checks", "devdata", "k8s", "devenv"},
    "cli": {"engine", "checks", "devdata", "k8s", "devenv", "cli"},
}
DRIVERS = {"psycopg", "psycopg2", "psycopg_binary", "psycopg_c"}
# psycopg2 is the one driver: connection.py makes its connections, postgres.py speaks SQL over them.
DRIVER_MODULES = {"dbctl.engine.connection", "dbctl.engine.postgres"}
# urls.py masks passwords with libpq's own conninfo parser (README, "Reliability"): that parser and its
# exceptions only, imported lazily; it never connects. Every layer prints URLs, so it lives in the foundation.
CONNINFO_PARSER = {"dbctl.urls": {"psycopg2", "psycopg2.Error", "psycopg2.extensions",
                                  "psycopg2.extensions.parse_dsn"}}


# The official client and the HTTP library under it (whose exceptions are the client's).
KUBE_CLIENT = {"kubernetes", "urllib3"}
KUBE_CLIENT_MODULE = "dbctl.k8s.cluster"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            # `from dbctl.engine import postgres` imports the module dbctl.engine.postgres
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layer(module: str) -> str:
    if module in FOUNDATION:
        return "foundation"
    if module == "dbctl.__main__":  # `python -m dbctl`
        return "cli"
    parts = module.split(".")
    assert len(parts) >= 2 and parts[1] in MAY_IMPORT, f"{module} is in no layer: add it to the architecture"
    return parts[1]


ALL = modules()


def test_every_module_has_a_layer_and_every_subpackage_says_what_it_owns():
    for name, path in ALL.items():
        layer(name)
        if path.name == "__init__.py" and name != "dbctl":
            doc = ast.get_docstring(ast.parse(path.read_text()))
            assert doc and "Imports:" in doc, f"{path} needs a docstring saying what it owns and may import"


@pytest.mark.parametrize("name", sorted(ALL))
def test_imports_go_down_the_layers(name):
    allowed = MAY_IMPORT[layer(name)]
    for imported in imports_of(ALL[name]):
        if not imported.startswith("dbctl.") or imported not in ALL:
            continue
        target = layer(imported)
        assert target == "foundation" or target in allowed, f"{name} imports {imported} ({target} is above it)"


@pytest.mark.parametrize("name", sorted(ALL))
def test_only_the_database_modules_import_a_driver(name):
    drivers = {i for i in imports_of(ALL[name]) if i.split(".")[0] in DRIVERS} - CONNINFO_PARSER.get(name, set())
    assert not drivers or name in DRIVER_MODULES, f"{name} imports {sorted(drivers)}"


def test_the_checker_sees_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from dbctl.cli import common\n    import psycopg\n")
    assert {"dbctl.cli", "dbctl.cli.common", "psycopg"} <= imports_of(bad)
    assert layer("dbctl.cli.common") not in MAY_IMPORT["engine"]


@pytest.mark.parametrize("name", sorted(ALL))
def test_only_the_cluster_module_imports_the_kubernetes_client(name):
    client = {i for i in imports_of(ALL[name]) if i.split(".")[0] in KUBE_CLIENT}
    assert not client or name == KUBE_CLIENT_MODULE, f"{name} imports {sorted(client)}"


def module_level_imports(path: Path) -> set[str]:
    """What importing the module itself imports: its top-level statements, not its functions'."""
    tree = ast.parse(path.read_text(), str(path))
    top = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    return imports_of_nodes(top)


def imports_of_nodes(nodes) -> set[str]:
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_kubernetes_client_is_imported_inside_functions_only():
    client = {i for i in module_level_imports(ALL[KUBE_CLIENT_MODULE]) if i.split(".")[0] in KUBE_CLIENT}
    assert not client, f"{KUBE_CLIENT_MODULE} imports {sorted(client)} when it is imported"
    assert {"kubernetes", "kubernetes.client.exceptions"} & imports_of(ALL[KUBE_CLIENT_MODULE])


def test_loading_every_command_does_not_import_the_kubernetes_client():
    """The real CLI, every command's module loaded (as `dbctl --help` and each command's help do)."""
    probe = (
        "import sys\n"
        "from conftest import leaf_commands\n"
        "from dbctl.cli.main import cli\n"
        "list(leaf_commands(cli))\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'urllib3'))\n"
        "print(' '.join(loaded))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO / "tests", capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported by loading the CLI: {proc.stdout}"
