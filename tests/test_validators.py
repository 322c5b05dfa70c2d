"""Every validator matches the whole value, in ASCII: a trailing newline, a non-ASCII look-alike digit or
letter, a value with something around it are refused wherever a value is checked.

Python's re.match and `$` accept a trailing newline, `\\d` and `\\w` match '٣' and 'é', and str.isdigit()
says yes to '²'. The validators are listed here with a value each accepts; hypothesis mutates those values
(appended newline, look-alikes, surrounding text) and every mutation must be refused. A scan of the source
finds any new `re.match`, `$`-anchored pattern or bare `isdigit()` that is not listed as safe.
"""

from __future__ import annotations

import ast
import re

import click
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import REPO, run_dbctl
from dbctl import config, urls
from dbctl.cli.common import DURATION, SECONDS
from dbctl.engine.source import MAX_VERSION
from dbctl.errors import ConfigError
from dbctl.k8s import render
from dbctl.urls import redis_address, require_url
from test_k8s_validate import NEWEST, strict_errors

PACKAGE = REPO / "tools" / "dbctl"


def accepts(check, value) -> bool:
    try:
        return check(value) is not False
    except (ConfigError, click.BadParameter, ValueError):
        return False


def _click(param_type):
    return lambda value: param_type.convert(value, None, None)


# name -> (check: returns False or raises when refused, values it accepts, the characters a look-alike may
# replace: None for any; URLs may hold any letter in a user name, so only their digits (the port, the db))
VALIDATORS = {
    "render label": (lambda v: render.check_label(v, "namespace") == [], ["kiro-dev", "database-migration", "a1"], None),
    "render image": (lambda v: render.check_image(v, "image") == [],
                     ["kiro-backend:dev", "registry.local:5000/kiro/backend:1.2", "postgres:16-alpine"], None),
    "render quantity": (lambda v: render.parse_quantity(v) is not None, ["128Mi", "100m", "1", "1.5Gi", "2e3"], None),
    "seconds option": (_click(SECONDS), ["30", "2.5", "0"], None),
    "duration option": (_click(DURATION), ["5s", "500ms", "15min", "0"], None),
    "TCP port": (lambda v: config.tcp_port(v) is not None, ["5432", "55432", "1"], None),
    "database URL": (require_url, ["postgresql://kiro@db:5432/kiro"], "0123456789"),
    "Redis URL": (redis_address, ["redis://redis:6379/0", "redis://:pw@redis:6380/1"], "0123456789"),
    "table name": (lambda v: config.check_table_name(v, "--table"), ["users", "public.users"], ""),
}
# These trim blank space around the value (an env var from `$(cat file)` ends in a newline), as PostgreSQL
# does for durations: only what is inside or not blank must be refused.
TRIMMED = {"seconds option", "duration option", "database URL", "Redis URL", "table name"}

LOOK_ALIKES = {"0": "٠０𝟎", "1": "١１¹", "2": "²٢", "3": "٣³", "5": "٥５", "6": "٦", "a": "аɑ", "e": "е", "o": "оο",
               "i": "і", "s": "ѕ", "c": "с", "k": "κ", "-": "‐−", ".": "․", ":": "：", "/": "∕"}


def mutations(value: str, swappable: str | None = None):
    """Strategies for what must be refused when `value` is accepted."""
    swaps = [(i, alike) for i, c in enumerate(value) for alike in LOOK_ALIKES.get(c, "")
             if swappable is None or c in swappable]
    around = st.sampled_from(["\n", "\r", "\t", "\x00", "\x0b", "\u2028", "\u00a0", "\x1b[2J"])
    strategies = [around.map(lambda s: value + s), around.map(lambda s: value[:1] + s + value[1:])]
    if swaps:  # (none for table names: PostgreSQL takes any letter in an identifier)
        strategies.append(st.sampled_from(swaps).map(lambda sw: value[:sw[0]] + sw[1] + value[sw[0] + 1:]))
    return st.one_of(strategies)


CASES = [(name, value) for name, (_, values, _) in VALIDATORS.items() for value in values]


@pytest.mark.parametrize("name, value", CASES, ids=[f"{n}:{v}" for n, v in CASES])
def test_the_listed_values_are_accepted(name, value):
    assert accepts(VALIDATORS[name][0], value)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_every_validator_refuses_a_mutated_value(data):
    name, value = data.draw(st.sampled_from(CASES))
    check, _, swappable = VALIDATORS[name]
    bad = data.draw(mutations(value, swappable).filter(lambda b: name not in TRIMMED or b.strip() != value))
    urls._remembered.clear()  # each URL checked is remembered for masking; keep the set small
    assert not accepts(check, bad), (name, bad)


# ---------------------------------------------------------------- render: accepted means valid

name_text = st.one_of(
    st.sampled_from(["kiro-dev", "db-migration", "a", "x" * 63, "x" * 64, "Kiro", "-a", "a-", "a.b", "a_b"]),
    st.text(alphabet="abz09-.\n é٣", min_size=1, max_size=12),
)
image_text = st.one_of(
    st.sampled_from(["kiro-backend:dev", "localhost:5000/kiro:1", "kiro@sha256:" + "a" * 64, "Kiro:dev", "k:é"]),
    st.text(alphabet="abk09-.:/@_\n é٣", min_size=1, max_size=20),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(namespace=name_text, job=name_text, image=image_text, memory=st.sampled_from(["128Mi", "128Mi\n", "１28Mi"]))
def test_what_render_accepts_validates_strictly(namespace, job, image, memory):
    opts = render.RenderOptions(namespace=namespace, migration_job_name=job, image=image, memory=memory)
    if render.problems(opts):
        return
    assert all(c.isascii() and c.isprintable() for c in namespace + job + image + memory)
    docs = render.migration_documents(opts)
    errors = [error for doc in docs for error in strict_errors(doc, NEWEST)]
    assert errors == [], errors


@pytest.mark.parametrize("option, value", [("--namespace", "kiro-dev\n"), ("--image", "kiro-backend:dev\n"),
                                           ("--image", "kiro-backend:dév"), ("--migration-job-name", "db\n"),
                                           ("--memory", "128Mi\n"), ("--cpu", "١٠٠m")])
def test_render_refuses_a_value_kubectl_would(option, value):
    result = run_dbctl("render", "migration-job", option, value)
    assert result.code == 2 and result.out == "", result.output
    assert [line for line in result.err.splitlines() if line.startswith("Error:")], result.err


# ---------------------------------------------------------------- dbctl new past the largest version

def test_new_after_the_largest_bigint_version_is_refused(tmp_path):
    (tmp_path / f"{MAX_VERSION}_last.sql").write_text("SELECT 1;\n")
    result = run_dbctl("new", "one", "more", "--migrations", str(tmp_path))
    assert result.code == 2, result.output
    assert "largest a BIGINT holds" in result.err and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{MAX_VERSION}_last.sql"]


# ---------------------------------------------------------------- the source scan

# Uses that look like the flaw but are not validators, with why.
NOT_VALIDATORS = {
    ("checks/lint.py", "_IGNORE.match"): "reads a lint directive from a comment that has no newline",
    ("devdata/seeding.py", "_LARGE_INSERT.match"): "finds the table of an INSERT at a known offset, not a check",
    ("engine/source.py", "token.match"): "the lexer: matches a token at a position",
    ("urls.py", "_SCHEME.match"): "finds the scheme at the start of a URL: a prefix by design",
}


def test_no_validator_uses_match_dollar_or_isdigit():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = str(path.relative_to(PACKAGE))
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("isdigit", "match"):
                method = node.func.attr
                text = ast.unparse(node)
                if method == "isdigit" and "ascii_digits" not in module + text and module != "config.py":
                    found.append(f"{module}: {text} (str.isdigit accepts '²'; use config.ascii_digits)")
                if method == "match" and not any(module == m and key in text for (m, key) in NOT_VALIDATORS):
                    found.append(f"{module}: {text} (use fullmatch)")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"[^\\]\$\)?\Z", node.value):
                if re.search(r"[\[\]()*+?]", node.value):  # a regular expression ending in $
                    found.append(f"{module}: {node.value!r} ($ accepts a trailing newline; use fullmatch)")
    assert found == [], "\n".join(found)
