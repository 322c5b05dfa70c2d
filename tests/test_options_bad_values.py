"""Every option and DBCTL_* setting, fed bad values: a usage error (exit 2, one `Error:` line), never
`Error: unexpected ...`, never a traceback.

The bulk runs in-process through dbctl's real entry point (`main`, the same
error boundary a shell gets) in a scratch directory, against a closed port, so
hundreds of cases take seconds; a sample runs as real subprocesses. The
option list is read from `dbctl --help`'s own command tree, so a new option
without a case here fails `test_every_option_has_a_case`.
"""

from __future__ import annotations

import math
import shutil

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MIGRATIONS, SEEDS, free_port, leaf_commands, run_dbctl, run_main
from dbctl.cli.common import DURATION, INT32_MAX, SECONDS
from dbctl.cli.main import cli

CLOSED = f"postgresql://kiro:opt-pw-1234@127.0.0.1:{free_port()}/kiro"

NOT_A_NUMBER = ["", "abc", "ünï", "1,5", "5 parsecs", "x" * 3000]
NOT_FINITE_OR_NEGATIVE = ["nan", "NaN", "inf", "-inf", "1e400", "-1", "-0.5", str(2**31)]
NOT_AN_INT64 = ["", "abc", "1.5", "nan", "inf", str(2**63), str(-2**63 - 1), "99999999999999999999999"]
NEGATIVE = ["-1"]
NOT_A_DURATION = ["", "abc", "5 parsecs", "-5s", "5S", "1e3", "nan", "inf", "25d", "2147483648", "99999999999999999999h"]
NOT_A_TABLE = ["a b", "users;drop table x", "a.b.c", '"', "x" * 64, "1users"]
NOT_A_REDIS_URL = ["redis://:pw-1234@host:port/0", "redis://h:99999", "http://h", "redis://[::1", "rediss://h",
                   "redis://:p w@h"]

# command -> the arguments that make it otherwise valid, without side effects
BASE = {
    "migrate": ["migrate", "--database-url", CLOSED, "--dry-run", "--wait-timeout", "0"],
    "rollback": ["rollback", "--database-url", CLOSED, "--dry-run", "--wait-timeout", "0"],
    "verify": ["verify", "--database-url", CLOSED],
    "wait": ["wait", "--database-url", CLOSED, "--timeout", "0"],
    "status": ["status", "--database-url", CLOSED],
    "seed": ["seed", "--database-url", CLOSED],
    "reset": ["reset", "--database-url", CLOSED, "--yes"],
    "serve": ["serve", "--database-url", CLOSED, "--port", "70000"],  # never reaches serving
    "drift": ["drift", "--database-url", CLOSED],
    "lint": ["lint"],
    "test": ["test", "--scratch-url", CLOSED],
    "new": ["new", "a", "migration"],
    "render": ["render", "migration-job"],
    "k8s run-job": ["k8s", "run-job", "database-migration", "--timeout", "0", "--cluster"],
    "dev migrate": ["dev", "migrate", "--cluster", "--timeout", "0"],
    "dev seed": ["dev", "seed", "--cluster", "--timeout", "0"],
    "dev reset": ["dev", "reset", "--cluster", "--timeout", "0"],
}

# (command, option): bad values that must be exit 2
USAGE = {
    ("migrate", "--wait-timeout"): NOT_A_NUMBER + NOT_FINITE_OR_NEGATIVE,
    ("migrate", "--lock-wait-timeout"): NOT_A_NUMBER + NOT_FINITE_OR_NEGATIVE,
    ("migrate", "--lock-timeout"): NOT_A_DURATION,
    ("migrate", "--statement-timeout"): NOT_A_DURATION,
    ("migrate", "--target"): NOT_AN_INT64,  # any i64 is a version, as in sqlx
    ("migrate", "--migrations"): ["", "x" * 5000, "/etc/passwd"],
    ("rollback", "--wait-timeout"): NOT_FINITE_OR_NEGATIVE,
    ("rollback", "--lock-wait-timeout"): NOT_FINITE_OR_NEGATIVE,
    ("rollback", "--lock-timeout"): NOT_A_DURATION,
    ("rollback", "--statement-timeout"): NOT_A_DURATION,
    ("rollback", "--to"): NOT_AN_INT64,
    ("rollback", "--steps"): NOT_AN_INT64 + NEGATIVE + ["0"],
    ("verify", "--wait-timeout"): NOT_A_NUMBER + NOT_FINITE_OR_NEGATIVE,
    ("verify", "--table"): NOT_A_TABLE,
    ("verify", "--redis-url"): NOT_A_REDIS_URL,
    ("wait", "--timeout"): NOT_A_NUMBER + NOT_FINITE_OR_NEGATIVE,
    ("wait", "--redis-url"): NOT_A_REDIS_URL,
    ("status", "--migrations"): ["", "x" * 5000, "/etc/passwd"],
    ("status", "--lock-wait-timeout"): NOT_A_NUMBER + NOT_FINITE_OR_NEGATIVE,
    ("verify", "--lock-wait-timeout"): NOT_FINITE_OR_NEGATIVE,
    ("drift", "--lock-wait-timeout"): NOT_FINITE_OR_NEGATIVE,
    ("seed", "--lock-wait-timeout"): NOT_FINITE_OR_NEGATIVE,
    ("seed", "--seeds"): ["", "x" * 5000, "/etc/passwd", "/nonexistent-seeds"],
    ("seed", "--env"): ["prod", "", "ünï"],
    ("reset", "--seeds"): ["", "/etc/passwd"],
    ("reset", "--env"): ["prod", ""],
    ("serve", "--table"): NOT_A_TABLE,
    ("lint", "--since"): NOT_AN_INT64 + NEGATIVE,
    ("lint", "--busy-rows"): NOT_AN_INT64 + NEGATIVE,
    ("test", "--lint-since"): NOT_AN_INT64 + NEGATIVE,
    ("new", "--migrations"): ["", "/etc/passwd"],
    ("render", "--ttl"): NOT_AN_INT64 + NEGATIVE + [str(2**31)],
    ("render", "--backoff-limit"): NOT_AN_INT64 + NEGATIVE + ["101", str(2**31)],
    ("render", "--active-deadline"): NOT_AN_INT64 + NEGATIVE + ["0", str(2**63)],
    ("render", "--memory"): ["", "abc", "-1Mi", "0", "1e400", "99999999999999999999", "128m", "1e999999999"],
    ("render", "--cpu"): ["", "abc", "-1", "0", "1e400", "99999999999999999999", "0.0001"],
    ("render", "--cpu-limit"): ["", "abc", "-1", "1e400"],
    ("render", "--image"): ["", "Bad Image", "x" * 300],
    ("render", "--namespace"): ["", "Bad_NS", "x" * 64],
    ("render", "--options"): ["/nonexistent.yaml", "/"],
    ("k8s run-job", "--timeout"): NOT_FINITE_OR_NEGATIVE,
    ("k8s run-job", "--postgres-port"): ["0", "70000", "abc"],
    ("dev migrate", "--timeout"): NOT_FINITE_OR_NEGATIVE,
    ("dev seed", "--timeout"): NOT_FINITE_OR_NEGATIVE,
    ("dev reset", "--timeout"): NOT_FINITE_OR_NEGATIVE,
}

# DBCTL_* settings (README, Configuration): bad values that must be exit 2
ENV_USAGE = {
    ("migrate", "DBCTL_WAIT_TIMEOUT"): ["nan", "-1", "inf", "soon"],
    ("migrate", "DBCTL_LOCK_WAIT_TIMEOUT"): ["nan", "-5", "1e400"],
    ("migrate", "DBCTL_LOCK_TIMEOUT"): ["5 parsecs", "-1s", "nan"],
    ("migrate", "DBCTL_STATEMENT_TIMEOUT"): ["forever", "25d"],
    ("migrate", "DBCTL_MIGRATIONS"): ["x" * 5000, "/etc/passwd"],
    ("seed", "DBCTL_SEEDS"): ["x" * 5000, "/etc/passwd"],
    ("seed", "DBCTL_ENV"): ["prod", "ünï"],
    ("verify", "DBCTL_CRITICAL_TABLES"): ["users,a b", "users;drop", "a.b.c", "x" * 64],
    ("lint", "DBCTL_LINT_SINCE"): ["-1", "abc", str(2**63)],
    ("wait", "DBCTL_REDIS_URL"): ["redis://:pw-1234@host:port/0", "http://h"],
    ("dev migrate", "DBCTL_KUBE_TIMEOUT"): ["nan", "inf", "-1", "0", "soon"],
    ("migrate", "DATABASE_URL"): ["mysql://x@h/d", "postgresql://k:p@ss-word@h/d", "postgresql://h:99999/d",
                                  "host=h password=a b", "k:pass-word@h/d"],
}


def run_in_process(args: list[str]) -> tuple[int, str, str]:
    result = run_main(*args)
    return result.code, result.out, result.err


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch working directory with migrations/ and seeds/; no DBCTL_* from the outside."""
    shutil.copytree(MIGRATIONS, tmp_path / "migrations")
    shutil.copytree(SEEDS, tmp_path / "seeds")
    monkeypatch.chdir(tmp_path)
    for name in [n for n in __import__("os").environ if n.startswith(("DBCTL_", "DATABASE_URL", "PG", "KIRO_"))]:
        monkeypatch.delenv(name)
    return tmp_path


def assert_usage_error(code: int, err: str, what: str) -> None:
    assert code == 2, f"{what}: exit {code}: {err}"
    assert "unexpected" not in err and "Traceback" not in err, f"{what}: {err}"
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, f"{what}: {err}"
    assert "opt-pw-1234" not in err and "pw-1234" not in err and "pass-word" not in err and "ss-word" not in err


def _cases():
    for (command, option), values in USAGE.items():
        for value in values:
            yield pytest.param(command, option, value, id=f"{command} {option} {value[:24]!r}")


@pytest.mark.parametrize("command, option, value", list(_cases()))
def test_a_bad_option_value_is_a_usage_error(workdir, command, option, value):
    code, _, err = run_in_process(BASE[command] + [option, value])
    assert_usage_error(code, err, f"{command} {option} {value[:40]!r}")


def _env_cases():
    for (command, name), values in ENV_USAGE.items():
        for value in values:
            yield pytest.param(command, name, value, id=f"{command} {name}={value[:24]!r}")


@pytest.mark.parametrize("command, name, value", list(_env_cases()))
def test_a_bad_setting_is_a_usage_error(workdir, monkeypatch, command, name, value):
    monkeypatch.setenv(name, value)
    args = [a for a in BASE[command]]
    if name == "DATABASE_URL":
        args = ["migrate", "--dry-run", "--wait-timeout", "0"]
    if name == "DBCTL_REDIS_URL":
        args += ["--no-postgres"]
    for flag in ("--wait-timeout", "--timeout"):  # the setting, not the flag, must be what is read
        if flag in args and name in ("DBCTL_WAIT_TIMEOUT",):
            i = args.index(flag)
            del args[i:i + 2]
    code, _, err = run_in_process(args)
    assert_usage_error(code, err, f"{name}={value[:40]!r}")


# Options whose every string is acceptable (names, hosts, URLs checked by the commands) or which are flags.
FREE_TEXT = {"--database-url", "--scratch-url", "--secret-name", "--migration-job-name", "--seed-job-name",
             "--host", "--backend-url", "--postgres-image", "--redis-image", "--write", "--busy-table", "--port"}


def test_every_option_has_a_case():
    """A typed option added later gets a bad-value case here, or this fails."""
    covered = {option for _, option in USAGE}
    missing = []
    for name, command in ((" ".join(path), command) for path, command in leaf_commands(cli)):
        for param in command.params:
            if not isinstance(param, click.Option) or param.is_flag or param.hidden:
                continue
            option = param.opts[0]
            if option not in covered and option not in FREE_TEXT and not isinstance(param.type, click.Choice):
                missing.append(f"{name} {option}")
    assert missing == [], f"options without a bad-value case: {missing}"


GENERIC_BAD = ["", "-1", "nan", "1e400", "ünï", "x" * 3000, "/etc/passwd"]


@pytest.mark.parametrize("command", sorted(BASE))
def test_no_option_value_ends_in_unexpected(workdir, command):
    """Every value option of the command, fed each generic bad value: a clean exit, never `unexpected`."""
    _, cmd = next((n, c) for n, c in ((" ".join(path), command) for path, command in leaf_commands(cli)) if n == command)
    for param in cmd.params:
        if not isinstance(param, click.Option) or param.is_flag or param.hidden:
            continue
        option = param.opts[0]
        if option in ("--write", "--host", "--port"):  # would write files or listen: covered above
            continue
        for value in GENERIC_BAD:
            code, out, err = run_in_process(BASE[command] + [option, value])
            what = f"{command} {option} {value[:30]!r}"
            assert code in (0, 1, 2), f"{what}: {code}"
            assert "unexpected" not in err and "Traceback" not in err + out, f"{what}: {err}"


@pytest.mark.parametrize("args, fragment", [
    (["migrate", "--lock-wait-timeout", "nan"], "finite number of seconds"),
    (["migrate", "--lock-timeout", "-5s"], "not a PostgreSQL duration"),
    (["verify", "--table", "a b"], "not a table name"),
    (["render", "--ttl", str(2**31)], "at most 2147483647"),
    (["new", "--migrations", "/etc/passwd", "x"], "/etc/passwd"),
])
def test_a_sample_as_real_subprocesses(args, fragment):
    result = run_dbctl(*args, env={"DATABASE_URL": CLOSED})
    assert_usage_error(result.code, result.err, " ".join(args))
    assert fragment in result.err


def test_critical_tables_setting_with_an_odd_name_is_a_usage_error_in_a_subprocess():
    result = run_dbctl("verify", env={"DATABASE_URL": CLOSED, "DBCTL_CRITICAL_TABLES": "users, a b"})
    assert_usage_error(result.code, result.err, "DBCTL_CRITICAL_TABLES")
    assert "DBCTL_CRITICAL_TABLES" in result.err


# ---------------------------------------------------------------- the types themselves

@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=20)))
def test_seconds_are_finite_and_non_negative_or_refused(text):
    try:
        value = SECONDS.convert(text, None, None)
    except click.BadParameter:
        return
    assert math.isfinite(value) and 0 <= value <= INT32_MAX


DURATION_TEXT = st.builds(
    lambda number, space, unit: f"{number}{space}{unit}",
    st.one_of(st.integers(-10, 2**33).map(str), st.floats(0, 1e7, allow_nan=False).map(lambda f: f"{f:.3f}"),
              st.sampled_from(["", ".5", "1.", "nan", "1e3"])),
    st.sampled_from(["", " "]),
    st.sampled_from(["", "us", "ms", "s", "min", "h", "d", "S", "sec", "m", "days"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(DURATION_TEXT)
def test_every_duration_we_accept_postgresql_accepts(db, text):
    """Our check against PostgreSQL's own parser: nothing we let through is refused by lock_timeout."""
    try:
        value = DURATION.convert(text, None, None)
    except click.BadParameter:
        return
    with db.connect() as conn:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (value,))
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (value,))
