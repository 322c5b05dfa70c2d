"""`dbctl wait`: block until PostgreSQL (and optionally Redis) accept connections."""

from __future__ import annotations

import socket
import time
from urllib.parse import unquote, urlsplit

from dbctl.errors import ConfigError, ConnectError
from dbctl.urls import mask_url, remember
from dbctl.text import quoted


def redis_address(url: str):
    """(host, port, parts) of a redis:// URL; ConfigError (exit 2) for anything dbctl cannot ping."""
    remember(url)
    example = "e.g. redis://localhost:6379/0 or redis://:password@redis:6379"
    if "\x00" in url or any(c.isspace() for c in url.strip()):
        raise ConfigError(f"Redis URL {mask_url(url)} contains spaces or control characters; "
                          f"percent-encode them in the password ({example})")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = parts.hostname
    except ValueError:  # urllib's message repeats the bad part, which may be a piece of the password
        raise ConfigError(f"Redis URL {mask_url(url)} is malformed: the port must be a number from 1 to 65535 "
                          f"and a password's @ / # ? percent-encoded ({example})") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"Redis URL {mask_url(url)} must start with redis://; {example}")
    if parts.scheme == "rediss":
        raise ConfigError("rediss:// (TLS) is not supported by dbctl wait; check the TCP port with redis://")
    if port == 0:
        raise ConfigError(f"Redis URL {mask_url(url)} has port 0; {example}")
    return host or "localhost", port or 6379, parts


def ping_redis(url: str, timeout: float = 2.0) -> None:
    """One RESP PING (with AUTH when the URL has a password); raises OSError or ConnectError."""
    host, port, parts = redis_address(url)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        if parts.password:
            user = unquote(parts.username) if parts.username else None
            args = ["AUTH", user, unquote(parts.password)] if user else ["AUTH", unquote(parts.password)]
            _command(sock, args)
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


def wait_for_redis(url: str, timeout: float, say=print) -> None:
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
