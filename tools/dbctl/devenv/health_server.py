"""The schema health check behind `/health`, and a small HTTP server that serves it.

`check_health()` is a plain function: a real backend calls it from its own
/health handler (see the README, "Health endpoint"); `dbctl serve` is the
stand-in backend of this repository and serves the same report.

Two probes, two questions. `/livez` (liveness): does this process still
answer? It never looks at the database, so a migration, a reset or a database
restart never gets the backend restarted. `/health` (readiness): should it
get traffic now? It reports the schema state; a database migrated by a newer
image (versions this image has no file for, all newer than its own) stays
ready, so a rollout never takes the old pods out before the new ones are in.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dbctl import config
from dbctl.errors import ConnectError, DbctlError
from dbctl.urls import mask_url, printable, redact


@dataclass
class HealthReport:
    ok: bool
    database: dict
    schema: dict | None
    problems: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    checked_at: str = ""

    @property
    def http_status(self) -> int:
        return HTTPStatus.OK if self.ok else HTTPStatus.SERVICE_UNAVAILABLE

    def as_dict(self) -> dict:
        return {
            "status": "ok" if self.ok else "unavailable",
            "summary": self.one_line(),
            "checked_at": self.checked_at,
            "latency_ms": round(self.latency_ms, 2),
            "database": self.database,
            "schema": self.schema,
            "problems": self.problems,
        }

    def one_line(self) -> str:
        """The same answer in one line of text: what a readiness probe prints.

        Tilt logs a probe's whole body, a line per line, whenever its result
        changes; the JSON report would fill the backend's log pane.
        """
        if not self.ok:
            text = "not ready: " + "; ".join(self.problems or ["the health check failed"])
        else:
            schema = self.schema or {}
            text = f"ready: schema at version {schema.get('current_version')}, every migration applied"
            if schema.get("newer"):
                text += f"; versions {schema['newer']} are from a newer image"
            if schema.get("warnings"):
                text += "; warning: " + "; ".join(schema["warnings"])
        return " ".join(text.split())


def check_health(database_url: str, migrations_dir: str = config.DEFAULT_MIGRATIONS, tables=None,
                 timeout: float = 3.0, session: KeptConnection | None = None) -> HealthReport:
    """Is the database reachable, every migration applied with its checksum, every critical table there?

    Never raises for a failed check: the answer is the report. The migration
    files are read on every call (a few small files), so a file that changed
    under a running server shows up at once. Versions applied after every file
    this copy has (a newer image migrated) are reported in schema.newer and do
    not make it unavailable. `session`: check on its kept connection (a server
    checking every few seconds) rather than on a new one.
    """
    from dbctl.engine import postgres
    from dbctl.engine.source import load_migrations
    from dbctl.engine.verify import check_schema

    def check(conn):
        report.database["reachable"] = True
        report.database["server_version"] = postgres.server_version(conn)
        return check_schema(conn, migrations, tables, allow_newer=True, lock_wait=timeout)  # never hangs on a lock

    start = time.perf_counter()
    tables = list(config.critical_tables() if tables is None else tables)
    report = HealthReport(ok=False, database={"url": mask_url(database_url), "reachable": False}, schema=None,
                          checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        migrations = load_migrations(migrations_dir)
        if session is not None:
            schema = session.run(check)
        else:
            with postgres.connect(database_url, application_name=HEALTH_APPLICATION, timeout=timeout) as conn:
                schema = check(conn)
        report.schema = schema.as_dict()
        report.problems = list(schema.problems)
        report.ok = schema.ok
    except DbctlError as exc:  # unreachable, refused credentials, unreadable migrations
        if isinstance(exc, ConnectError):  # a kept session that answered before was lost, and no new one came
            report.database.pop("server_version", None)
            report.database["reachable"] = False
        report.problems.append(redact(" ".join(str(exc).split()), database_url))
    except Exception as exc:  # a query failed mid-check: still an answer, not a crash
        report.problems.append(redact(f"health check failed: {type(exc).__name__}: {exc}", database_url))
    report.latency_ms = (time.perf_counter() - start) * 1000
    return report


HEALTH_APPLICATION = "dbctl-health"


class KeptConnection:
    """One connection kept from check to check, as a backend's pool keeps its connections.

    A probe every few seconds then costs its queries alone, not a name lookup, a
    TCP connect and authentication each time (any of which, slow on a busy node,
    could make a healthy backend answer 503). A connection found lost (the server
    restarted, `dbctl reset` ended it) is replaced within the same check; only
    a failure on a new connection is the answer. Used by one check at a time
    (SharedCheck).
    """

    def __init__(self, url: str, timeout: float = 3.0):
        self.url, self.timeout = url, timeout
        self._conn = None

    def run(self, work):
        """work(conn) on the kept connection, or on a new one when the kept one turns out to be lost."""
        from dbctl.engine import postgres

        if self._conn is not None and not self._conn.closed:
            try:
                return work(self._conn)
            except postgres.Error:
                if not self._conn.broken:
                    raise
                self.close()  # lost since the last check: a new connection gives the answer
        self._conn = postgres.connect(self.url, application_name=HEALTH_APPLICATION, timeout=self.timeout)
        return work(self._conn)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ---------------------------------------------------------------- the HTTP server

LIVENESS_PATHS = ("/livez",)
REPORT_PATHS = ("/health", "/healthz")  # the report, JSON: for people (Tilt's link) and programs
PROBE_PATHS = ("/readyz",)  # the same decision in one line of text: for readiness probes
READINESS_PATHS = REPORT_PATHS + PROBE_PATHS


class HealthHandler(BaseHTTPRequestHandler):
    """GET /livez -> 200 while the process serves; GET /health -> the report, 200 or 503;
    GET /readyz -> the same status with a one-line text body; else 404."""

    server_version = "dbctl-serve"
    protocol_version = "HTTP/1.0"  # one request per connection: nothing to keep open between probes
    timeout = 30  # a client that connects and sends nothing does not hold a thread for ever
    check = None  # set by make_server: a function returning a HealthReport

    def do_GET(self):  # noqa: N802 (http.server's naming)
        status, body = self._answer()
        self._send(status, body)

    def do_HEAD(self):  # noqa: N802
        status, body = self._answer()
        self._send(status, body, with_body=False)

    def _answer(self) -> tuple[int, dict | str]:
        path = self.path.split("?", 1)[0]
        self.problems = []
        if path in LIVENESS_PATHS:
            return HTTPStatus.OK, {"status": "live"}
        if path in READINESS_PATHS:
            report = self.check()
            self.problems = report.problems
            return report.http_status, report.one_line() if path in PROBE_PATHS else report.as_dict()
        if path == "/":
            return HTTPStatus.OK, {"service": "kiro-backend (dbctl stand-in)", "liveness": "/livez",
                                   "readiness": "/health", "readiness_probe": "/readyz"}
        return HTTPStatus.NOT_FOUND, {"error": f"no such path {path}; try /health or /livez"}

    def _send(self, status: int, body: dict | str, with_body: bool = True) -> None:
        if isinstance(body, str):
            data, content_type = (body + "\n").encode(), "text/plain; charset=utf-8"
        else:
            data, content_type = (json.dumps(body, indent=2) + "\n").encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def log_request(self, code="-", size="-"):
        """Probes are logged when their answer changes: the kubelet (or Tilt) asks every few seconds.

        The first answer after start-up is logged, then each change: ready to
        not ready with what is wrong, a different problem, ready again. A
        failure that stays the same is not repeated. Liveness is logged only
        when it fails; other paths always are.
        """
        path = self.path.split("?", 1)[0] if hasattr(self, "path") else ""
        code = int(code) if config.ascii_digits(str(code)) else 0
        if path in LIVENESS_PATHS + READINESS_PATHS:
            failed = code >= 400
            answer = (code, tuple(getattr(self, "problems", None) or ()))
            if path in READINESS_PATHS and not self.server.note_readiness(answer):
                return
            if path in LIVENESS_PATHS and not failed:
                return
        why = f": {'; '.join(self.problems)}" if getattr(self, "problems", None) and code >= 400 else ""
        self.log_message('"%s" %s%s', getattr(self, "requestline", ""), code, why)

    def log_message(self, format, *args):  # one line per logged request on stderr
        log_line(f"{self.address_string()} {format % args}")


def log_line(text: str) -> None:
    """One line on stderr: the request line is the client's text, so masked and escaped like every line."""
    sys.stderr.write(printable(text, one_line=True) + "\n")
    sys.stderr.flush()


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops connections in a burst (the kernel retries them after 1, 3, 7 s,
    # past a probe's timeout); the burst is cheap now that it shares one database check.
    request_queue_size = 128

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self._lock = threading.Lock()
        self._last_answer: tuple | None = None

    def note_readiness(self, answer: tuple) -> bool:
        """Record a readiness answer (status, problems); True when it is worth a log line: it differs
        from the last one. A probe asking every few seconds gets one line per change, not per probe."""
        with self._lock:
            changed = answer != self._last_answer
            self._last_answer = answer
        return changed

    def handle_error(self, request, client_address):
        """A client that went away (a probe timing out, curl interrupted) is not an error; the rest is one line."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        log_line(f"{client_address[0]} request failed: {type(exc).__name__}: {exc}")


class SharedCheck:
    """At most one database check in flight: requests arriving while one runs wait for it and share its report.

    Probes, a load balancer and a curl loop together open one connection at a time, not one each (150
    requests at once would otherwise exhaust the server's max_connections). Each answer is from a check
    that started no earlier than the oldest waiting request's arrival minus one check's duration.
    """

    def __init__(self, check):
        self._check = check
        self._lock = threading.Lock()
        self._flight = None  # (threading.Event, [report]) of the check running now

    def __call__(self) -> HealthReport:
        with self._lock:
            leader = self._flight is None
            if leader:
                self._flight = (threading.Event(), [])
            done, answer = self._flight
        if leader:
            try:
                answer.append(self._check())
            finally:
                with self._lock:
                    self._flight = None
                done.set()
        else:
            done.wait()
        if not answer:  # the check itself failed (check_health never raises; a stand-in might)
            raise RuntimeError("the shared health check failed")
        return answer[0]


def make_server(host: str, port: int, check) -> HealthServer:
    """A threading HTTP server answering /livez and /health (with `check()`, one in flight at a time);
    port 0 picks a free one."""
    handler = type("BoundHealthHandler", (HealthHandler,), {"check": staticmethod(SharedCheck(check))})
    try:
        return HealthServer((host, port), handler)
    except OSError as exc:
        raise DbctlError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port") from None
