"""Helpers of the control channel's tests (no tests here): event recorders, servers and clients that are
always closed, and a raw authenticated socket for sending arbitrary frames."""

from __future__ import annotations

import socket
import threading
import time

from fsm_cluster.wire.channel import ChannelClient, ChannelServer, Register, wire

SECRET = b"test-cluster-secret-0123456789abcdef"
OTHER_SECRET = b"another-clusters-secret-0123456789ab"


def hello(node: str = "WORKER_a", life: str = "") -> Register:
    mode, run_id = node.split("_", 1)
    return Register(node=node, mode=mode, run_id=run_id, ip="127.0.0.1", life=life)


class Events:
    """Callbacks that record ``(t, kind, *args)``; ``wait`` blocks until a predicate holds."""

    def __init__(self):
        self.items: list[tuple] = []
        self.cv = threading.Condition()

    def cb(self, kind: str):
        def record(*args):
            with self.cv:
                self.items.append((time.monotonic(), kind, *args))
                self.cv.notify_all()
        return record

    def of(self, kind: str) -> list[tuple]:
        with self.cv:
            return [i for i in self.items if i[1] == kind]

    def wait(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[tuple]:
        with self.cv:
            ok = self.cv.wait_for(lambda: len([i for i in self.items if i[1] == kind]) >= count, timeout)
        assert ok, f"waited {timeout} s for {count} {kind!r} event(s); got {self.items}"
        return self.of(kind)


class Kit:
    """Makes servers and clients for one test and closes them all at its end."""

    def __init__(self):
        self.closers: list = []

    def server(self, secret: bytes = SECRET, **kw) -> tuple[ChannelServer, Events]:
        ev = Events()
        for kind in ("register", "lost", "outcome", "bye"):
            kw.setdefault(f"on_{kind}", ev.cb(kind))
        server = ChannelServer(secret, "127.0.0.1", 0, **kw).start()
        self.closers.append(server.close)
        return server, ev

    def client(self, address, node: str = "WORKER_a", secret: bytes = SECRET, connect: bool = True,
               **kw) -> tuple[ChannelClient, Events]:
        ev = Events()
        for kind in ("roster", "outcome", "lost", "bye"):
            kw.setdefault(f"on_{kind}", ev.cb(kind))
        kw.setdefault("ping_interval", 0.2)
        kw.setdefault("timeout", 2.0)
        kw.setdefault("connect_timeout", 2.0)
        client = ChannelClient(address[0], address[1], secret, hello(node), **kw)
        self.closers.append(client.close)
        return (client.connect() if connect else client), ev

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def raw_authenticated(address, secret: bytes = SECRET, timeout: float = 2.0):
    """A socket past the handshake, and the frame writer of its direction (node → MAIN)."""
    sock = socket.create_connection(address, timeout=timeout)
    greeting = _recv(sock, wire.SERVER_HELLO)
    nc, proof = wire.client_proof(secret, greeting)
    sock.sendall(proof)
    ns = greeting[len(wire.MAGIC):]
    wire.check_server_proof(secret, ns, nc, _recv(sock, wire.SERVER_PROOF))
    c2s, s2c = wire.session_keys(secret, ns, nc)
    return sock, wire.FrameWriter(c2s), wire.FrameReader(s2c, wire.MAX_SERVER_FRAME)


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("closed")
        buf += chunk
    return buf


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the peer closes ``sock`` within ``timeout`` (whatever it sends before)."""
    sock.settimeout(timeout)
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except (socket.timeout, TimeoutError):
        return False
    return False
