"""The schema health check behind `/health`, and a small HTTP server that serves it.

`check_health()` is a plain function: a real backend calls it from its own
/health handler (see the README, "Health endpoint"); `dbctl serve` is the
stand-in backend of this repository and serves the same report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dbctl import config
from dbctl.errors import DbctlError
from dbctl.urls import mask_url, redact


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
            "checked_at": self.checked_at,
            "latency_ms": round(self.latency_ms, 2),
            "database": self.database,
            "schema": self.schema,
            "problems": self.problems,
        }


def check_health(database_url: str, migrations_dir: str = config.DEFAULT_MIGRATIONS, tables=None,
                 timeout: float = 3.0) -> HealthReport:
    """Is the database reachable, every migration applied with its checksum, every critical table there?

    Never raises for a failed check: the answer is the report. The migration
    files are read on every call (a few small files), so a file that changed
    under a running server shows up at once.
    """
    from dbctl.engine import postgres
    from dbctl.engine.source import load_migrations
    from dbctl.engine.verify import check_schema

    start = time.perf_counter()
    tables = list(config.critical_tables() if tables is None else tables)
    report = HealthReport(ok=False, database={"url": mask_url(database_url), "reachable": False}, schema=None,
                          checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        migrations = load_migrations(migrations_dir)
        with postgres.connect(database_url, application_name="dbctl-health", timeout=timeout) as conn:
            report.database["reachable"] = True
            report.database["server_version"] = postgres.server_version(conn)
            schema = check_schema(conn, migrations, tables)
        report.schema = schema.as_dict()
        report.problems = list(schema.problems)
        report.ok = schema.ok
    except DbctlError as exc:  # unreachable, refused credentials, unreadable migrations
        report.problems.append(redact(" ".join(str(exc).split()), database_url))
    except Exception as exc:  # a query failed mid-check: still an answer, not a crash
        report.problems.append(redact(f"health check failed: {type(exc).__name__}: {exc}", database_url))
    report.latency_ms = (time.perf_counter() - start) * 1000
    return report


# ---------------------------------------------------------------- the HTTP server


class HealthHandler(BaseHTTPRequestHandler):
    """GET /health -> the report as JSON, 200 or 503. Everything else: 404."""

    server_version = "dbctl-serve"
    check = None  # set by make_server: a function returning a HealthReport

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/healthz"):
            report = self.check()
            self._send(report.http_status, report.as_dict())
        elif path == "/":
            self._send(HTTPStatus.OK, {"service": "kiro-backend (dbctl stand-in)", "health": "/health"})
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path {path}; try /health"})

    def do_HEAD(self):  # noqa: N802
        report = self.check()
        self.send_response(report.http_status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()

    def _send(self, status: int, body: dict) -> None:
        data = (json.dumps(body, indent=2) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # one line per request on stderr, no client noise
        import sys

        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def make_server(host: str, port: int, check) -> ThreadingHTTPServer:
    """A threading HTTP server answering /health with `check()`; port 0 picks a free one."""
    handler = type("BoundHealthHandler", (HealthHandler,), {"check": staticmethod(check)})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise DbctlError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port") from None
    server.daemon_threads = True
    return server
