"""A connection to PostgreSQL: psycopg2, with what the engine relies on.

psycopg2 is dbctl's only driver: it imports in a fifth of psycopg 3's time,
which is most of a short command's start-up (README, "Benchmarks").

- Every wait for the server goes through `_wait` (psycopg2's wait callback), so
  SIGTERM (Kubernetes deleting a Job's pod) or Ctrl-C during a long statement
  cancels it on the server; the engine then rolls back, records and unlocks. A
  blocking libpq call would see the signal only once the statement finished.
- Waiting that way, libpq does not enforce connect_timeout (only its blocking
  connect does), so `_wait` does.
- `execute()` returns the cursor; `with connect(...) as conn` closes it.
"""

from __future__ import annotations

import select
import time
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions as _ext

Error = psycopg2.Error
OperationalError = psycopg2.OperationalError

IDLE = _ext.TRANSACTION_STATUS_IDLE
INTRANS = _ext.TRANSACTION_STATUS_INTRANS
INERROR = _ext.TRANSACTION_STATUS_INERROR
_CONNECTED = (_ext.STATUS_READY, _ext.STATUS_BEGIN, _ext.STATUS_PREPARED)
# psycopg2 raises this for a query with no statement (empty, or comments only), which PostgreSQL runs as
# nothing (EmptyQueryResponse), as it does for sqlx: not an error here.
_EMPTY_QUERY = "can't execute an empty query"


class Rollback(Exception):
    """Raised inside `Connection.transaction()`: roll back, and carry on after the block."""


class Connection(_ext.connection):
    def __init__(self, dsn: str, deadline: float | None = None):
        self.deadline = deadline  # of the connection attempt, read by _wait while connecting
        self.interrupted = None  # the signal's exception that made _wait cancel the statement
        super().__init__(dsn)
        self.deadline = None

    def execute(self, query, params=None):
        """Run `query` (str, bytes or psycopg2.sql), with %s / %(name)s parameters when given.

        A signal during it raises its exception here, once the statement has ended."""
        cursor = self.cursor()
        try:
            cursor.execute(query, params)
        except Error as exc:
            empty = isinstance(exc, psycopg2.ProgrammingError) and exc.pgcode is None and str(exc) == _EMPTY_QUERY
            if self.interrupted is None and not empty:
                raise
        interrupted, self.interrupted = self.interrupted, None
        if interrupted is not None:
            raise interrupted from None
        return cursor

    @property
    def broken(self) -> bool:
        return self.closed == 2  # psycopg2's mark of a connection lost under it

    @contextmanager
    def transaction(self):
        """BEGIN ... COMMIT; ROLLBACK when the block raises (Rollback is then swallowed)."""
        self.execute("BEGIN")
        try:
            yield self
        except Rollback:
            self.execute("ROLLBACK")
            return
        except BaseException:
            if not self.closed and self.info.transaction_status != IDLE:
                try:
                    self.execute("ROLLBACK")
                except Error:
                    pass  # the error that ended the block is the one worth reporting
            raise
        self.execute("COMMIT")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(conninfo: str, *, timeout: float, **params) -> Connection:
    """An autocommit connection; `params` are libpq keywords added to the URL or key=value string."""
    seconds = max(1, int(timeout))  # libpq's connect_timeout is whole seconds, at least 1
    dsn = make_dsn(conninfo, connect_timeout=seconds, **params)
    conn = Connection(dsn, time.monotonic() + seconds)
    conn.autocommit = True
    return conn


def make_dsn(conninfo: str, **params) -> str:
    """libpq's keyword string for `conninfo` with `params` added; a psycopg2.Error (never a
    UnicodeDecodeError) when libpq's parser refuses it or it percent-encodes bytes that are not UTF-8."""
    try:
        return _ext.make_dsn(conninfo, **params)
    except UnicodeDecodeError:
        raise psycopg2.ProgrammingError("invalid dsn: it percent-encodes bytes that are not UTF-8") from None


def _wait(conn) -> None:
    """Wait for the server. A signal cancels the running statement and is kept for execute() to raise
    once the statement has ended: an exception raised here would make psycopg2 close the connection,
    and the engine still needs it to roll back, record the attempt and unlock."""
    while True:
        try:
            state = conn.poll()
            if state == _ext.POLL_OK:
                break
            timeout = None
            deadline = getattr(conn, "deadline", None)
            if deadline is not None and conn.status not in _CONNECTED:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise OperationalError("timeout expired")
            if state == _ext.POLL_READ:
                select.select([conn.fileno()], [], [], timeout)
            else:
                select.select([], [conn.fileno()], [], timeout)
        except (KeyboardInterrupt, SystemExit) as exc:
            if getattr(conn, "interrupted", None) is not None or conn.status not in _CONNECTED:
                raise  # a second signal, or one while connecting: nothing to cancel
            conn.interrupted = exc
            try:
                conn.cancel()
            except Error:
                raise exc from None


_ext.set_wait_callback(_wait)
