"""/health and /livez over real HTTP against a real PostgreSQL, and check_health() as a library call."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request

import psycopg
import pytest
from psycopg import sql

from conftest import REPO, assert_clean_error, free_port, run_dbctl
from dbctl.devenv.health_server import check_health


class Served:
    def __init__(self, url: str, migrations, extra=()):
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DATABASE_URL": url, "DBCTL_MIGRATIONS": str(migrations)}
        self.proc = subprocess.Popen([sys.executable, "-m", "dbctl", "serve", "--port", "0", *extra], cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"serving (http://[\d.]+:\d+)/health", line)
        assert match, line + self.proc.stderr.read()
        self.base = match[1]
        self.banner = line

    def get(self, path: str = "/health") -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=15) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def get_text(self, path: str) -> tuple[int, str, str]:
        """(status, Content-Type, body) of a GET whose answer is not JSON."""
        try:
            with urllib.request.urlopen(self.base + path, timeout=15) as response:
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)

    def log(self) -> str:
        """Everything the server wrote to stderr, after stopping it."""
        assert self.stop() == 0
        return self.proc.stderr.read()


@pytest.fixture
def serve():
    started = []

    def start(url, migrations, *extra):
        served = Served(url, migrations, extra)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()


def migrate(db, migrations_dir):
    result = run_dbctl("migrate", "--database-url", db.url, "--migrations", str(migrations_dir))
    assert result.code == 0, result.output


def test_503_before_migrations_200_after_503_when_a_file_changes(db, migrations_dir, serve):
    served = serve(db.url, migrations_dir)
    assert "s3cret-pw" not in served.banner

    status, body = served.get()
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["database"]["reachable"] is True
    assert body["schema"]["pending"] == list(range(1, 9))
    assert any("8 pending migration(s)" in p for p in body["problems"])
    assert isinstance(body["latency_ms"], float) and body["latency_ms"] >= 0

    migrate(db, migrations_dir)
    status, body = served.get()
    assert status == 200, body
    assert body["status"] == "ok" and body["problems"] == []
    assert body["schema"]["current_version"] == body["schema"]["expected_version"] == 8
    assert body["schema"]["missing_tables"] == []

    changed = migrations_dir / "006_health_check_table.sql"
    changed.write_bytes(changed.read_bytes() + b"\n-- edited after it was applied\n")
    status, body = served.get()
    assert status == 503
    assert body["schema"]["modified"] == [6]
    assert any("006_health_check_table" in p and "changed after it was applied" in p for p in body["problems"])

    assert served.stop() == 0


def test_503_when_a_critical_table_is_missing(db, migrations_dir, serve):
    migrate(db, migrations_dir)
    db.query("DROP TABLE health_checks")
    status, body = serve(db.url, migrations_dir).get()
    assert status == 503
    assert body["schema"]["missing_tables"] == ["health_checks"]
    assert "missing tables: health_checks" in body["problems"]


def test_503_when_a_new_migration_is_pending(db, migrations_dir, serve):
    migrate(db, migrations_dir)
    (migrations_dir / "009_add_avatars.sql").write_text("ALTER TABLE users ADD COLUMN avatar TEXT;\n")
    status, body = serve(db.url, migrations_dir).get()
    assert status == 503 and body["schema"]["pending"] == [9]


def test_503_when_the_database_is_unreachable(migrations_dir, serve):
    url = f"postgresql://kiro:s3cret-pw@127.0.0.1:{free_port()}/kiro"
    served = serve(url, migrations_dir)
    status, body = served.get()
    assert status == 503
    assert body["database"]["reachable"] is False and body["schema"] is None
    assert "nothing is listening" in body["problems"][0]
    assert "s3cret-pw" not in json.dumps(body)
    assert body["database"]["url"] == url.replace("s3cret-pw", "****")


def test_503_with_wrong_credentials_and_no_password_in_the_answer(db, migrations_dir, serve):
    url = db.url.replace("s3cret-pw", "wrong-password")
    status, body = serve(url, migrations_dir).get()
    assert status == 503
    assert "rejected the credentials" in body["problems"][0]
    assert "wrong-password" not in json.dumps(body)


def test_other_paths_and_head(db, migrations_dir, serve):
    served = serve(db.url, migrations_dir)
    assert served.get("/nope")[0] == 404
    assert served.get("/")[0] == 200
    request = urllib.request.Request(served.base + "/health", method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 503


def test_check_health_is_a_plain_function_a_backend_can_call(db, migrations_dir):
    report = check_health(db.url, str(migrations_dir), tables=["users"])
    assert not report.ok and report.http_status == 503
    migrate(db, migrations_dir)
    report = check_health(db.url, str(migrations_dir), tables=["users", "no_such_table"])
    assert report.http_status == 503 and report.schema["missing_tables"] == ["no_such_table"]
    report = check_health(db.url, str(migrations_dir), tables=["users"])
    assert report.ok and report.http_status == 200
    body = report.as_dict()
    assert set(body) == {"status", "summary", "checked_at", "latency_ms", "database", "schema", "problems"}
    assert body["database"]["server_version"]


def test_serve_without_a_database_url_is_a_usage_error():
    assert_clean_error(run_dbctl("serve"), 2, "no database URL")


def test_serve_with_a_bad_migrations_directory_is_refused(db, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x_no_version.sql").write_text("SELECT 1;")
    result = run_dbctl("serve", "--database-url", db.url, "--migrations", str(tmp_path / "bad"))
    assert_clean_error(result, 2)


def test_serve_on_a_port_in_use_is_refused(db, migrations_dir, serve):
    served = serve(db.url, migrations_dir)
    port = served.base.rsplit(":", 1)[1]
    result = run_dbctl("serve", "--database-url", db.url, "--migrations", str(migrations_dir), "--port", port)
    assert_clean_error(result, 1, f"cannot listen on 127.0.0.1:{port}")


def test_port_from_the_environment(db, migrations_dir):
    port = free_port()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "DATABASE_URL": db.url, "DBCTL_MIGRATIONS": str(migrations_dir),
           "PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "dbctl", "serve"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert f"serving http://127.0.0.1:{port}/health" in proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------- liveness, logging, disconnects


def test_livez_says_live_whatever_the_database_says(migrations_dir, serve):
    url = f"postgresql://kiro:s3cret-pw@127.0.0.1:{free_port()}/kiro"  # nothing listens there
    served = serve(url, migrations_dir)
    assert served.get("/health")[0] == 503
    status, body = served.get("/livez")
    assert status == 200 and body == {"status": "live"}
    request = urllib.request.Request(served.base + "/livez", method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and response.read() == b""


def test_livez_stays_live_while_migrations_are_pending(db, migrations_dir, serve):
    served = serve(db.url, migrations_dir)
    assert served.get("/health")[0] == 503  # not ready: 8 pending
    assert served.get("/livez")[0] == 200  # but never restarted for it


def test_readyz_gives_the_same_answer_in_one_line_for_probes(db, migrations_dir, serve):
    """Tilt prints a readiness probe's body, a log line per body line: /readyz keeps it to one."""
    served = serve(db.url, migrations_dir)
    status, content_type, body = served.get_text("/readyz")
    assert (status, content_type) == (503, "text/plain; charset=utf-8")
    assert body.count("\n") == 1 and body.startswith("not ready: 8 pending migration(s)"), body
    assert "run dbctl migrate" in body
    migrate(db, migrations_dir)
    assert served.get_text("/readyz") == (200, "text/plain; charset=utf-8",
                                          "ready: schema at version 8, every migration applied\n")
    assert served.get("/health")[0] == 200  # the same decision, as the JSON report


def test_readyz_when_the_database_is_unreachable_is_one_line(migrations_dir, serve):
    served = serve(f"postgresql://kiro:s3cret-pw@127.0.0.1:{free_port()}/kiro", migrations_dir)
    status, _, body = served.get_text("/readyz")
    assert status == 503 and body.startswith("not ready: ") and body.count("\n") == 1, body
    assert "s3cret-pw" not in body


def test_probes_are_logged_when_their_answer_changes(db, migrations_dir, serve):
    served = serve(db.url, migrations_dir)
    assert served.get("/health")[0] == 503
    assert served.get("/health")[0] == 503
    assert served.get_text("/readyz")[0] == 503
    migrate(db, migrations_dir)
    for _ in range(5):
        assert served.get("/health")[0] == 200
        assert served.get("/livez")[0] == 200
    assert served.get("/nope")[0] == 404
    lines = served.log().splitlines()
    probes = [line for line in lines if "GET /health" in line or "GET /readyz" in line]
    # the failure once, with what is wrong (not again while it stays the same); then once when it
    # became ready; the passing ones after it are quiet
    assert len(probes) == 2, lines
    assert " 503: " in probes[0] and "8 pending migration(s)" in probes[0], probes
    assert " 200" in probes[1]
    assert not any("/livez" in line for line in lines), lines
    assert any("GET /nope" in line and " 404" in line for line in lines), lines
    assert "s3cret-pw" not in "\n".join(lines)


def _send_and_hang_up(base: str, path: str) -> None:
    """Send a request and close at once, before the answer: with SO_LINGER 0 the close is a reset."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


def test_a_client_that_hangs_up_early_leaves_no_traceback_and_the_server_answers(db, migrations_dir, serve):
    migrate(db, migrations_dir)
    served = serve(db.url, migrations_dir)
    for _ in range(10):
        _send_and_hang_up(served.base, "/health")
        _send_and_hang_up(served.base, "/livez")
    status, body = served.get("/health")
    assert status == 200 and body["status"] == "ok"
    assert served.get("/livez")[0] == 200
    log = served.log()
    assert "Traceback" not in log and "Exception" not in log and "Error" not in log, log


# ---------------------------------------------------------------- an older image against a newer database


def test_an_older_image_against_a_newer_database_stays_live_and_ready(db, migrations_dir, tmp_path, serve):
    newer = tmp_path / "newer-image-migrations"
    shutil.copytree(migrations_dir, newer)
    (newer / "009_add_avatars.sql").write_text("ALTER TABLE users ADD COLUMN avatar TEXT;\n")
    migrate(db, newer)  # the newer image's Job ran

    served = serve(db.url, migrations_dir)  # the older backend, 8 files
    status, body = served.get("/health")
    assert status == 200, body
    assert body["schema"]["newer"] == [9] and body["schema"]["missing"] == []
    assert body["schema"]["current_version"] == 9 and body["schema"]["expected_version"] == 8
    assert served.get("/livez")[0] == 200

    # A NEW pod of the older image does not start: its init container refuses, as its migrate would.
    result = run_dbctl("verify", "--database-url", db.url, "--migrations", str(migrations_dir))
    assert_clean_error(result, 1, "version 9 (add avatars) is applied but has no file")


def test_a_migration_file_missing_below_the_newest_is_not_ready(db, migrations_dir, serve):
    migrate(db, migrations_dir)
    (migrations_dir / "005_content_moderation.sql").unlink()
    status, body = serve(db.url, migrations_dir).get()
    assert status == 503
    assert body["schema"]["missing"] == [5] and body["schema"]["newer"] == []


def health_sessions(db) -> list[int]:
    return [row[0] for row in db.query("SELECT pid FROM pg_stat_activity WHERE application_name = 'dbctl-health' "
                                       "AND datname = current_database() ORDER BY pid")]


def test_the_server_keeps_one_session_from_check_to_check(db, migrations_dir, serve):
    """As a backend's pool does: a probe is its queries, not a lookup, a connect and authentication each time."""
    migrate(db, migrations_dir)
    served = serve(db.url, migrations_dir)
    assert served.get()[0] == 200
    (pid,) = health_sessions(db)
    for _ in range(5):
        assert served.get()[0] == 200
    assert health_sessions(db) == [pid]


def test_a_kept_session_that_was_lost_is_replaced_within_the_check(db, migrations_dir, serve):
    migrate(db, migrations_dir)
    served = serve(db.url, migrations_dir)
    assert served.get()[0] == 200
    (pid,) = health_sessions(db)
    db.query(f"SELECT pg_terminate_backend({pid}, 5000)")  # as a server restart or `dbctl reset` would end it
    status, body = served.get()
    assert status == 200, body
    (replacement,) = health_sessions(db)
    assert replacement != pid
    assert "Traceback" not in served.log()


def test_a_failure_on_a_new_session_is_the_answer_and_the_next_check_connects_again(db, pg_server, migrations_dir,
                                                                                     serve):
    migrate(db, migrations_dir)
    served = serve(db.url, migrations_dir)
    assert served.get()[0] == 200
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(db.name)))
        try:
            admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                          "WHERE application_name = 'dbctl-health' AND datname = %s", (db.name,))
            status, body = served.get()
            assert status == 503 and body["database"]["reachable"] is False, body
            assert "not currently accepting connections" in body["problems"][0], body
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(db.name)))
    assert served.get()[0] == 200
