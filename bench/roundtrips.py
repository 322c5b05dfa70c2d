"""Count a client's connections and round trips to PostgreSQL, whatever the client is.

    with roundtrips.counting(server_port) as counts:
        subprocess.run([..., f"postgresql://...@127.0.0.1:{counts.port}/db"])
    counts.round_trips, counts.connections

A TCP proxy between the client and the server. It reads nothing of the
protocol: a round trip is a turn of the conversation, counted on each
connection when the server answers after the client has sent something since
the server's previous answer. So a query and its result are one, however many
packets either takes, and a last Terminate that gets no answer is none. A
turn of each connection counts, so two connections talking at once count
twice. Plain TCP only: with TLS the turns would still be counted, but the
proxy is meant for sslmode=disable or a server without TLS.

The proxy adds a hop and threads, so it is for an untimed pass only.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class Counts:
    port: int  # where the client connects instead of the server
    connections: int = 0
    round_trips: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@contextlib.contextmanager
def counting(server_port: int, host: str = "127.0.0.1"):
    """Listen on a free port, relay every connection to host:server_port, count; yields Counts."""
    listener = socket.create_server((host, 0))
    counts = Counts(port=listener.getsockname()[1])
    threading.Thread(target=_accept, args=(listener, (host, server_port), counts), daemon=True).start()
    try:
        yield counts
    finally:
        listener.close()  # _accept's accept() fails and it ends; open relays end with their sockets


def _accept(listener: socket.socket, server: tuple[str, int], counts: Counts) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(server)
        except OSError:
            client.close()  # the client sees the server's refusal as a closed connection
            continue
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # relay each piece as it comes
        with counts.lock:
            counts.connections += 1
        turn = {"client_spoke": False, "open": 2}
        threading.Thread(target=_relay, args=(client, upstream, counts, turn, True), daemon=True).start()
        threading.Thread(target=_relay, args=(upstream, client, counts, turn, False), daemon=True).start()


def _relay(src: socket.socket, dst: socket.socket, counts: Counts, turn: dict, from_client: bool) -> None:
    try:
        while data := src.recv(65536):
            with counts.lock:  # before forwarding, so the answer cannot overtake the mark
                if from_client:
                    turn["client_spoke"] = True
                elif turn["client_spoke"]:
                    turn["client_spoke"] = False
                    counts.round_trips += 1
            dst.sendall(data)
    except OSError:
        pass  # a reset ends the relay like a close
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)  # pass the close on; the other direction may still be talking
    with counts.lock:
        turn["open"] -= 1
        last = turn["open"] == 0
    if last:
        src.close()
        dst.close()
