"""Every setting is checked from every source it can come from, whichever one wins, and a guard holds
whichever source sets the environment (README, "The safety rules").

The (source, value) combinations are generated: a bad environment variable beside a good flag, a good
variable beside a bad flag, and every pair of --env / DBCTL_ENV values, known, unknown and
production-like. The option list is read from the command tree, so a new option with an environment
variable is covered without being listed here.
"""

from __future__ import annotations

import os

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MIGRATIONS, SEEDS, assert_clean_error, leaf_commands, run_dbctl, run_main
from dbctl import config
from dbctl.cli.common import Setting
from dbctl.cli.main import cli
from test_options_bad_values import BASE, CLOSED, ENV_USAGE, assert_usage_error, workdir  # noqa: F401

# A good flag value for each option an environment variable also sets.
GOOD_FLAG = {
    "--wait-timeout": "0", "--lock-wait-timeout": "1", "--lock-timeout": "5s", "--statement-timeout": "1min",
    "--migrations": "migrations", "--seeds": "seeds", "--since": "1", "--lint-since": "1",
    "--redis-url": "redis://127.0.0.1:1", "--database-url": CLOSED, "--scratch-url": CLOSED,
    "--port": "0"}
# Bad values per variable: test_options_bad_values' ones (whatever command it feeds them to), and more.
BAD_VALUES = {variable: values for (_, variable), values in ENV_USAGE.items()}
BAD_VALUES["DBCTL_SCRATCH_URL"] = ["mysql://x@h/d", "postgresql://k:p@ss-word@h/d", "postgresql://h:99999/d"]
BAD_VALUES["DBCTL_SERVE_PORT"] = BAD_VALUES["PORT"] = ["80a", "70000"]


def options_with_envvars():
    """(command path, option) for every option of every command that an environment variable can set."""
    for path, command in leaf_commands(cli):
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                yield " ".join(path), param
    for param in cli.params:
        if isinstance(param, click.Option) and param.envvar:
            yield "", param


def variables(param) -> list[str]:
    return [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)


def test_every_option_with_an_environment_variable_checks_both_sources():
    loose = [f"{name} {param.opts[0]}" for name, param in options_with_envvars() if not isinstance(param, Setting)]
    assert loose == [], f"options whose environment variable goes unchecked when the flag is given: {loose}"


def test_every_variable_has_bad_values():
    """A new option with an environment variable needs bad values here (and a good flag value), or this fails."""
    missing = sorted({f"{v} ({param.opts[0]})" for _, param in options_with_envvars() if not param.is_flag
                      for v in variables(param) if v not in BAD_VALUES or param.opts[0] not in GOOD_FLAG})
    assert missing == [], f"settings without bad values or a good flag value: {missing}"


def _shadowed_cases():
    """Every command of BASE x each of its options an environment variable sets x that variable's bad values."""
    for name, param in options_with_envvars():
        if name not in BASE or param.is_flag or name == "serve":  # a good --port would serve: tested below
            continue
        for variable in variables(param):
            for value in BAD_VALUES.get(variable, ()):
                yield pytest.param(name, variable, param.opts[0], value,
                                   id=f"{name} {param.opts[0]} + {variable}={value[:20]!r}")


@pytest.mark.parametrize("command, variable, flag, value", list(_shadowed_cases()))
def test_a_bad_variable_is_refused_even_when_a_good_flag_wins(workdir, monkeypatch, command, variable, flag, value):
    monkeypatch.setenv(variable, value)
    args = [a for a in BASE[command]]
    if flag in args:
        del args[args.index(flag):args.index(flag) + 2]
    if variable == "DBCTL_REDIS_URL":
        args += ["--no-postgres"]
    code, _, err = _run(args + [flag, GOOD_FLAG[flag]])
    assert_usage_error(code, err, f"{command} {flag} {GOOD_FLAG[flag]} with {variable}={value[:40]!r}")
    assert variable in err


@pytest.mark.parametrize("variable", ["DBCTL_SERVE_PORT", "PORT"])
def test_serve_port_variables_are_checked_beside_the_flag(variable):
    result = run_dbctl("serve", "--database-url", CLOSED, "--port", "0", env={variable: "80a"}, timeout=30)
    assert_usage_error(result.code, result.err, f"serve --port 0 with {variable}=80a")
    assert variable in result.err


def test_critical_tables_variable_is_checked_beside_table_flags(workdir):
    code, _, err = _run(BASE["verify"] + ["--table", "users"], {"DBCTL_CRITICAL_TABLES": "users, a b"})
    assert_usage_error(code, err, "verify --table users with DBCTL_CRITICAL_TABLES='users, a b'")
    assert "DBCTL_CRITICAL_TABLES" in err
    result = run_dbctl("serve", "--database-url", CLOSED, "--port", "0", "--table", "users",
                       env={"DBCTL_CRITICAL_TABLES": "users, a b"}, timeout=30)
    assert_usage_error(result.code, result.err, "serve --table users with DBCTL_CRITICAL_TABLES='users, a b'")


def test_busy_tables_variable_is_checked(workdir):
    code, _, err = _run(["lint", "--all"], {"DBCTL_BUSY_TABLES": "users;drop"})
    assert_usage_error(code, err, "DBCTL_BUSY_TABLES")


def _run(args, env=None):
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        result = run_main(*args)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return result.code, result.out, result.err


# ---------------------------------------------------------------- the environment guard

KNOWN = list(config.ENVIRONMENTS)
UNKNOWN = ["prod", "production-eu", "prd", "live", "Staging2", "stage", "dev", "ünï", "production\n", "x" * 300]
ENV_VALUES = st.one_of(st.none(), st.sampled_from(KNOWN + [v.upper() for v in KNOWN] + UNKNOWN),
                       st.text(max_size=12))


def expected(flag: str | None, variable: str | None) -> str:
    """What a guard must decide: usage (exit 2) if any source is not one of, else the strictest."""
    given_values = []
    for source, raw in (("flag", flag), ("variable", variable)):
        if raw is None or (source == "variable" and raw == ""):
            continue
        value = raw.strip().lower()
        if value not in KNOWN:
            return "usage"
        given_values.append(value)
    strictest = max(given_values, key=KNOWN.index, default="development")
    return "refused" if strictest in ("staging", "production") else "allowed"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["seed", "reset"]), flag=ENV_VALUES, variable=ENV_VALUES)
def test_the_environment_guard_holds_for_every_pair_of_sources(workdir, command, flag, variable):
    if variable is not None and "\x00" in variable:
        variable = variable.replace("\x00", "")  # an environment variable cannot hold a NUL
    args = BASE[command] + ([f"--env={flag}"] if flag is not None else [])
    env = {"DBCTL_ENV": variable} if variable is not None else {}
    if variable is None:
        os.environ.pop("DBCTL_ENV", None)
    code, out, err = _run(args, env)
    verdict = expected(flag, variable)
    what = f"{command} --env={flag!r} DBCTL_ENV={variable!r}: {code} {err}"
    assert "Traceback" not in err and "unexpected" not in err, what
    if verdict == "usage":
        assert code == 2, what
    elif verdict == "refused":
        assert code == 1 and "refusing to" in err, what
    else:  # allowed: it goes on and fails only at the closed port
        assert code == 1 and "refusing to" not in err, what


def test_an_unknown_production_like_variable_with_env_development_drops_nothing(db):
    assert run_dbctl("migrate", "--migrations", str(MIGRATIONS), env={"DATABASE_URL": db.url}).code == 0
    for name in ("prod", "prd", "production-eu", "live"):
        result = run_dbctl("reset", "--yes", "--env", "development", "--migrations", str(MIGRATIONS),
                           "--seeds", str(SEEDS), env={"DATABASE_URL": db.url, "DBCTL_ENV": name})
        assert_clean_error(result, 2, f'DBCTL_ENV "{name}" is not one of')
        assert len(db.history()) == 8 and "users" in db.tables()


def test_a_flag_cannot_weaken_a_protected_variable_but_can_strengthen(db):
    assert run_dbctl("migrate", "--migrations", str(MIGRATIONS), env={"DATABASE_URL": db.url}).code == 0
    for variable, flag in (("production", "development"), ("staging", "test"), ("development", "production")):
        result = run_dbctl("reset", "--yes", "--env", flag, "--migrations", str(MIGRATIONS),
                           env={"DATABASE_URL": db.url, "DBCTL_ENV": variable})
        assert_clean_error(result, 1, "refusing to reset")
        assert len(db.history()) == 8
