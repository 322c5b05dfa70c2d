"""`dbctl wait`: block until PostgreSQL (and optionally Redis) accept connections."""

from __future__ import annotations

import socket
import time

from dbctl.errors import ConnectError
from dbctl.urls import mask_url, print_line, redis_address
from dbctl.text import quoted


def ping_redis(url: str, timeout: float = 2.0) -> None:
    """One RESP PING (with AUTH when the URL has a password); raises OSError or ConnectError."""
    address = redis_address(url)  # the one rule every Redis URL is read by (dbctl.urls)
    with socket.create_connection((address.host, address.port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        if address.password:
            secret = [address.user, address.password] if address.user else [address.password]
            _command(sock, ["AUTH", *secret])
        reply = _command(sock, ["PING"])
        if not reply.startswith(b"+PONG"):
            raise ConnectError(f"Redis at {mask_url(url)} answered {quoted(reply[:80].decode('utf-8', 'backslashreplace'))} to PING")


def _command(sock, args: list[str]) -> bytes:
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
    )
    sock.sendall(payload)
    reply = sock.recv(512)
    if reply.startswith(b"-"):
        message = reply[1:].decode(errors="replace").strip()
        if "LOADING" in message:
            raise OSError(message)
        raise ConnectError(f"Redis refused: {message}; check the password in the Redis URL")
    return reply


def wait_for_redis(url: str, timeout: float, say=print_line) -> None:
    redis_address(url)  # a malformed URL is a usage error now, not after the wait
    deadline = time.monotonic() + timeout
    last_error = None
    reported = 0.0
    while True:
        try:
            ping_redis(url)
            return
        except OSError as exc:
            last_error = exc.strerror or str(exc)
        if time.monotonic() >= deadline:
            raise ConnectError(f"Redis at {mask_url(url)} not reachable after {timeout:g}s: {last_error}")
        if time.monotonic() - reported >= 5:
            say(f"waiting for Redis at {mask_url(url)}: {last_error}")
            reported = time.monotonic()
        time.sleep(0.3)
