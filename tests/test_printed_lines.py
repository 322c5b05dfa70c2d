"""Every printed line goes through dbctl.urls.printable: passwords masked, control characters escaped.

Hostile text reaches the output from the network (/health's request lines), from
file names and from server messages; the tests check the raw bytes written, and
a scan of the source finds any new print that bypasses the one function.
"""

from __future__ import annotations

import ast
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings, strategies as st

from conftest import REPO, dbctl_env
from dbctl.urls import MASK, printable

PACKAGE = REPO / "tools" / "dbctl"
# Bytes that would act on a terminal or Tilt's log pane: C0 controls but newline and tab, DEL, C1 controls.
CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
PASSWORD = "hunter2-Secret"

# The output calls that may print something not made by printable(), and why.
RAW_OUTPUT = {
    ("cli/local.py", "click.echo(url if show_password else mask_url(url))"):
        "`dbctl local url --show-password` prints the URL for a script to use; the URL is dbctl's own",
    ("cli/k8s.py", "click.echo(text, nl=False)"): "the rendered YAML, from validated options",
    ("cli/common.py", "click.echo(redact_line(message))"): "say() itself",
    ("cli/common.py", "click.echo(redact_line(message), err=True)"): "warn() itself",
}
SAFE_CALLS = ("printable(", "redact_line(", "_one_line(", "json.dumps(", "log_line(")


def output_calls():
    """(module, call source, first argument's source) of every click.echo, print and sys.std*.write."""
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in ("click.echo", "print", "sys.stderr.write", "sys.stdout.write", "click.secho"):
                argument = ast.unparse(node.args[0]) if node.args else ""
                yield str(path.relative_to(PACKAGE)), ast.unparse(node), argument, node.args


def test_print_is_never_a_say_or_warn_callback():
    """A library caller that takes the default say/warn prints through printable too (urls.print_line)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            values = []
            if isinstance(node, ast.arguments):
                values = node.defaults + [d for d in node.kw_defaults if d is not None]
            elif isinstance(node, ast.Call):
                values = node.args + [k.value for k in node.keywords]
            found += [f"{path.relative_to(PACKAGE)}:{v.lineno}" for v in values
                      if isinstance(v, ast.Name) and v.id == "print"]
    assert found == [], found


def test_every_output_call_goes_through_printable():
    bypassing = []
    for module, call, argument, args in output_calls():
        constant = all(isinstance(a, ast.Constant) for a in args)
        if constant or any(safe in argument for safe in SAFE_CALLS) or (module, call) in RAW_OUTPUT:
            continue
        bypassing.append(f"{module}: {call}")
    assert bypassing == [], "print these through dbctl.urls.printable (or say/warn):\n" + "\n".join(bypassing)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\x1b\r\n\t\x07\x9b\u202e\x00")))
def test_printable_leaves_no_control_character(text):
    for one_line in (False, True):
        shown = printable(text, one_line=one_line)
        allowed = "" if one_line else "\n\t"
        assert all(c.isprintable() or c in allowed for c in shown), repr(shown)
    if text.isprintable() and "@" not in text and "=" not in text:
        assert printable(text) == text  # ordinary text is left alone


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(codec="ascii", exclude_characters="@/:%#? "), min_size=4, max_size=12)
       .filter(lambda p: p.strip() == p and p.isprintable()))
def test_printable_masks_before_escaping(password):
    line = f"GET /?url=postgresql://kiro:{password}@db:5432/kiro\x1b[2J HTTP/1.1\r"
    shown = printable(line, one_line=True)
    assert f"kiro:{MASK}@db" in shown and "\x1b" not in shown and "\r" not in shown


def start_serve(url: str, migrations: Path) -> tuple[subprocess.Popen, int]:
    env = dbctl_env({"DATABASE_URL": url, "DBCTL_MIGRATIONS": str(migrations)})
    proc = subprocess.Popen([sys.executable, "-m", "dbctl", "serve", "--port", "0"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline().decode()
    match = re.search(r"serving http://[\d.]+:(\d+)/health", line)
    assert match, line
    return proc, int(match[1])


def send_raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


HOSTILE_REQUESTS = [
    b"GET /\x1b[2J\x1b]0;owned\x07 HTTP/1.0\r\n\r\n",  # clear screen, set the window title, bell
    b"GET /nope\rFAKE 200 all good HTTP/1.0\r\n\r\n",  # a carriage return overwriting the line
    ("GET /?db=postgresql://kiro:" + PASSWORD + "@db:5432/kiro HTTP/1.0\r\n\r\n").encode(),
    ("GET /x?redis=redis://:" + PASSWORD + "@redis:6379 HTTP/1.0\r\n\r\n").encode(),
    b"\x1b[31mBREW /coffee HTTP/1.0\r\n\r\n",  # an unknown method: http.server's own error log line
    "GET /\u202egnp.exe\x9b2J HTTP/1.0\r\n\r\n".encode(),  # right-to-left override, a C1 CSI
    b"GET /" + b"\x1b" * 3000 + b" HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\x00\x1b[A\r\n\r\n",  # a bad request line: the 400 is logged too
]


def test_health_access_log_is_masked_and_escaped(db, migrations_dir):
    proc, port = start_serve(db.url, migrations_dir)
    try:
        for request in HOSTILE_REQUESTS:
            send_raw(port, request)
        send_raw(port, b"GET /health HTTP/1.0\r\n\r\n")  # a 503 (not migrated) is logged with its reason
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    log = proc.stderr.read()
    assert log.count(b"\n") >= len(HOSTILE_REQUESTS), log
    assert not CONTROL.search(log), log
    assert "\u202e".encode() not in log
    assert PASSWORD.encode() not in log and b"s3cret-pw" not in log
    assert b"kiro:****@db" in log and b"\\x1b[2J" in log


def test_hostile_file_names_reach_no_terminal(db, migrations_dir):
    """A migration named with escape sequences, a carriage return and a bell: migrate and status print it escaped."""
    name = "020_evil\x1b[2J\rFAKE\x07name\x9b.sql"
    (migrations_dir / name).write_text("CREATE TABLE evil_name (id int);\n")
    outputs = []
    for command in (["migrate"], ["status"], ["verify"]):
        proc = subprocess.run([sys.executable, "-m", "dbctl", *command, "--migrations", str(migrations_dir)],
                              cwd=REPO, env=dbctl_env({"DATABASE_URL": db.url}), capture_output=True, timeout=120)
        outputs.append((command, proc.returncode, proc.stdout + proc.stderr))
    for command, code, output in outputs:
        assert not CONTROL.search(output), (command, output)
        assert b"s3cret-pw" not in output
    assert outputs[0][1] == 0, outputs[0]
    assert b"\\x1b[2J" in outputs[1][2]


def test_an_error_line_from_a_hostile_value_is_one_escaped_line(tmp_path):
    bad = tmp_path / "a\x1b[2Jb\rc"
    bad.write_text("")
    result = subprocess.run([sys.executable, "-m", "dbctl", "status", "--migrations", str(bad)], cwd=REPO,
                            env=dbctl_env({"DATABASE_URL": "postgresql://u:" + PASSWORD + "@127.0.0.1:9/db"}),
                            capture_output=True, timeout=60)
    assert result.returncode == 2, result
    assert not CONTROL.search(result.stderr) and PASSWORD.encode() not in result.stderr
    assert result.stderr.count(b"Error:") == 1
