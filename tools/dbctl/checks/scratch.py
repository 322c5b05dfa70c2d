"""Throw-away databases for `dbctl drift` and `dbctl test`: created uniquely named, always dropped."""

from __future__ import annotations

import secrets
import time
from contextlib import contextmanager

from dbctl.engine import postgres
from dbctl.engine.migrator import INTERRUPTS
from dbctl.errors import Refused
from dbctl.text import quoted
from dbctl.urls import mask_url


@contextmanager
def scratch_database(server_url: str, purpose: str):
    """Yield the URL of a new empty database on `server_url`'s server; drop it afterwards, whatever happens."""
    name = f"dbctl_{purpose}_{secrets.token_hex(5)}"
    admin = postgres.connect(server_url, application_name=f"dbctl {purpose} scratch")
    try:
        try:
            admin.execute(postgres.create_database_sql(name))
        except postgres.Error as exc:
            reason = getattr(exc.diag, "message_primary", None) or " ".join(str(exc).split())
            raise Refused(
                f"cannot create a scratch database on {mask_url(server_url)}: {reason}; grant the role CREATEDB, "
                "or pass --scratch-url with a server (any database on it) where it may CREATE DATABASE"
            ) from None
        try:
            yield postgres.url_for_database(server_url, name)
        except INTERRUPTS as exc:
            # What the engine noted ("while applying ...", "stay applied") is about the scratch database, not
            # the user's: say so, or a SIGTERM during `dbctl drift` reads as if their database was migrated.
            exc.__notes__ = [f"while dbctl {purpose} worked in its scratch database {quoted(name)}, which is "
                             "dropped; no other database was changed"]
            raise
        finally:
            _drop(admin, server_url, name)
    finally:
        admin.close()


def _drop(admin, server_url: str, name: str) -> None:
    """Drop it once our own sessions in it have ended, without WITH (FORCE).

    Every session we opened in it is closed by now, but its server process may still be exiting.
    FORCE would signal such a process, and a session killed while it goes resets the TCP stream
    it came through: through `kubectl port-forward` (the Tilt triggers' way in) that ends the
    forward itself. A plain DROP waits for them instead.
    """
    if admin.closed or admin.broken:  # the server session died mid-run: a new one can still clean up
        admin = postgres.connect(server_url, application_name="dbctl scratch cleanup")
    wait_for_sessions_to_end(admin, name)
    try:
        admin.execute(postgres.drop_database_sql(name, force=False))
    except postgres.Error as exc:
        reason = getattr(exc.diag, "message_primary", None) or " ".join(str(exc).split())
        raise Refused(f"could not drop the scratch database {name} on {mask_url(server_url)}: {reason}; "
                      f"drop it by hand once nothing uses it (DROP DATABASE {name})") from None


def wait_for_sessions_to_end(admin, name: str, timeout: float = 10.0) -> None:
    """Until no session is in database `name`, or `timeout` seconds (DROP then says who is still there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()[0]:
            return
        time.sleep(0.05)
