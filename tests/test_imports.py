"""What each short command imports (README, "Benchmarks"): an import list per layer, not a timer.

Every pod of the system starts a dbctl process and a developer presses these buttons all day, so a
command loads only what its layer needs: under a 100m CPU limit each 10 ms of start-up costs 0.1 s.
The real CLI runs each command against a real database; the modules loaded when it exits are checked
against the command's list (dbctl's own modules and the third-party packages it may use) and against
modules that no short command needs (asyncio, logging, pglast, the Kubernetes client, psycopg 3...).
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from conftest import MIGRATIONS, REPO, dbctl_env

# The real CLI's main, with the loaded modules written to a file when the process exits.
PROBE = """
import atexit, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
from dbctl.cli.main import main
main()
"""

FOUNDATION = {"dbctl", "dbctl.cli", "dbctl.cli.main", "dbctl.cli.common", "dbctl.config", "dbctl.errors",
              "dbctl.text", "dbctl.urls"}
ENGINE = FOUNDATION | {"dbctl.cli.engine", "dbctl.engine", "dbctl.engine.connection", "dbctl.engine.postgres",
                       "dbctl.engine.source", "dbctl.engine.plan"}
DRIVER = {"click", "psycopg2"}
# Loaded by none of these commands: each is a cost (asyncio alone is 40 ms of CPU) or a layer above.
NEVER = {"asyncio", "logging", "email", "http", "concurrent", "multiprocessing", "xml", "sqlite3", "ctypes",
         "importlib.metadata", "subprocess", "urllib.request", "tempfile", "zipfile", "argparse",
         "psycopg", "psycopg_binary", "pglast", "yaml", "kubernetes", "urllib3"}
# The interpreter's own start-up (site) and `python -c`.
STARTUP = {"__main__", "_distutils_hack", "sitecustomize"}

# name -> (arguments, dbctl modules it may load, third-party packages it may load, modules it must load)
COMMANDS = {
    "migrate, fresh database": (["migrate"], ENGINE | {"dbctl.engine.migrator"}, DRIVER, {"psycopg2"}),
    "migrate, nothing to apply": (["migrate"], ENGINE | {"dbctl.engine.migrator"}, DRIVER, {"psycopg2"}),
    # status formats durations with dbctl.text.format_ns: it never loads the migrator.
    "status": (["status"], ENGINE | {"dbctl.engine.status", "dbctl.devdata", "dbctl.devdata.seeding"}, DRIVER,
               {"dbctl.engine.status"}),
    "status --json": (["status", "--json"], ENGINE | {"dbctl.engine.status", "dbctl.devdata",
                                                      "dbctl.devdata.seeding"}, DRIVER, {"json"}),
    "verify": (["verify"], ENGINE | {"dbctl.engine.verify"}, DRIVER, {"dbctl.engine.verify"}),
    "wait": (["wait", "--timeout", "10"], ENGINE, DRIVER, {"dbctl.engine.connection"}),
}


def loaded_by(args: list[str], env: dict, tmp_path) -> set[str]:
    out = tmp_path / "modules.txt"
    proc = subprocess.run([sys.executable, "-c", PROBE, str(out), *args], cwd=REPO, env=dbctl_env(env),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return set(out.read_text().split())


def problems(modules: set[str], dbctl_allowed: set[str], third_party: set[str], required: set[str],
             never: set[str] = NEVER) -> list[str]:
    found = [f"{m} is not in its layer's list" for m in sorted(modules)
             if m.startswith("dbctl.") and m not in dbctl_allowed]
    tops = {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - {"dbctl"} - STARTUP
    found += [f"{t} (a third-party package) is not in its list" for t in sorted(tops - third_party)
              if not t.startswith("_")]  # C extensions' private helpers (_cffi_backend...) go with their package
    found += [f"{m} is imported, and no short command needs it" for m in sorted(modules & never)]
    found += [f"{m} was expected and is missing: is the probe seeing the command?" for m in sorted(required - modules)]
    return found


@pytest.fixture(scope="module")
def loaded(pg_server, tmp_path_factory):
    """Every command of COMMANDS, run in order on one database: fresh, then migrated."""
    from conftest import create_database, drop_database

    db = create_database(pg_server, f"imports_{uuid.uuid4().hex[:10]}")
    env = {"DATABASE_URL": db.url, "DBCTL_MIGRATIONS": str(MIGRATIONS)}
    try:
        yield {name: loaded_by(args, env, tmp_path_factory.mktemp("probe")) for name, (args, *_) in COMMANDS.items()}
    finally:
        drop_database(pg_server, db.name)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_command_imports_only_what_its_layer_needs(loaded, name):
    _, dbctl_allowed, third_party, required = COMMANDS[name]
    assert problems(loaded[name], dbctl_allowed, third_party, required) == []


def test_version_loads_the_cli_only(tmp_path):
    modules = loaded_by(["--version"], {}, tmp_path)
    assert problems(modules, FOUNDATION, {"click"}, {"dbctl.cli.main"}) == []


def test_the_check_sees_a_module_out_of_place():
    modules = {"dbctl", "dbctl.cli", "dbctl.k8s.render", "yaml", "asyncio", "click", "psycopg2"}
    found = problems(modules, ENGINE, DRIVER, {"dbctl.engine.status"})
    assert found == ["dbctl.k8s.render is not in its layer's list",
                     "yaml (a third-party package) is not in its list",
                     "asyncio is imported, and no short command needs it",
                     "yaml is imported, and no short command needs it",
                     "dbctl.engine.status was expected and is missing: is the probe seeing the command?"]
