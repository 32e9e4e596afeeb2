"""A WORKER's/PS's side of the control channel: one connection to MAIN and one thread.

``connect()`` runs in the caller's thread with a bounded time for each step (TCP connect, MAIN's
greeting, its proof) and raises :class:`~fsm_cluster.wire.channel.wire.ChannelUnavailable` with the
reason when the channel cannot be used. From then on a background thread pings MAIN every
``ping_interval``, reads MAIN's frames and calls back (on that thread; keep callbacks quick):
``on_roster(msg)``, ``on_outcome(msg)``, and when the connection ends without the node asking,
exactly one of ``on_bye(reason)`` (MAIN ended it on purpose) or ``on_lost(why)`` (MAIN's process
died: the connection dropped; or MAIN is frozen or unreachable: nothing for ``timeout``).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from typing import Any, Callable

from pydantic import ValidationError

from . import wire
from .messages import (
    SERVER_MESSAGE,
    Bye,
    DumpMsg,
    FailureMsg,
    Message,
    OutcomeMsg,
    Ping,
    Pong,
    Register,
    RestartMsg,
    Roster,
    encode,
)
from .wire import ChannelUnavailable

log = logging.getLogger(__name__)


class ChannelClient:
    def __init__(self, host: str, port: int, secret: bytes, hello: Register, *, ping_interval: float = 10.0,
                 timeout: float = 60.0, connect_timeout: float = 5.0,
                 on_roster: Callable[[Roster], Any] | None = None,
                 on_outcome: Callable[[OutcomeMsg], Any] | None = None,
                 on_lost: Callable[[str], Any] | None = None, on_bye: Callable[[str], Any] | None = None,
                 on_restart: Callable[[Any], Any] | None = None, on_dump: Callable[[Any], Any] | None = None,
                 max_frame: int = wire.MAX_SERVER_FRAME):
        if not isinstance(hello, Register):
            raise TypeError("hello must be a Register message")
        if not 0 < ping_interval < timeout:
            raise ValueError(f"ping_interval ({ping_interval:g} s) must be positive and below timeout ({timeout:g} s)")
        self.host, self.port, self.secret, self.hello = host, int(port), wire.check_secret(secret), hello
        self.ping_interval, self.timeout, self.connect_timeout = ping_interval, timeout, connect_timeout
        self.on_roster, self.on_outcome, self.on_lost, self.on_bye = on_roster, on_outcome, on_lost, on_bye
        self.on_restart, self.on_dump = on_restart, on_dump
        self.max_frame = max_frame
        self.rtt: float | None = None  # the last ping's round trip (s)
        self.received_at: float | None = None  # time.monotonic() when MAIN's last frames arrived (authenticated)
        self._sock: socket.socket | None = None
        self._writer: wire.FrameWriter | None = None
        self._reader: wire.FrameReader | None = None
        self._send_lock = threading.Lock()
        self._end_lock = threading.Lock()
        self._ended: str | None = None  # why the connection ended (None while it is up)
        self._thread: threading.Thread | None = None
        self._pings: dict[int, float] = {}
        self.declared_lost: str | None = None  # MAIN's reason, when it gave this node up

    @property
    def connected(self) -> bool:
        return self._sock is not None and self._ended is None

    # -- connect ---------------------------------------------------------------------------------
    def connect(self) -> "ChannelClient":
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as e:
            raise ChannelUnavailable(f"control channel at {where}: cannot connect: {_reason(e)}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            deadline = time.monotonic() + self.connect_timeout
            hello = _recv_exact(sock, wire.SERVER_HELLO, deadline)
            nc, proof = wire.client_proof(self.secret, hello)
            sock.sendall(proof)
            answer = _recv_exact(sock, 1, deadline)
            if answer == wire.OK:
                answer += _recv_exact(sock, wire.MAC, deadline)
            ns = hello[len(wire.MAGIC):]
            wire.check_server_proof(self.secret, ns, nc, answer)
            c2s, s2c = wire.session_keys(self.secret, ns, nc)
            self._writer, self._reader = wire.FrameWriter(c2s), wire.FrameReader(s2c, self.max_frame)
            sock.settimeout(self.timeout)  # for sends: a MAIN that stops reading cannot block us forever
            sock.sendall(self._writer.frame(encode(self.hello)))
        except (OSError, EOFError, wire.FrameError) as e:
            sock.close()
            raise ChannelUnavailable(f"control channel at {where}: {_reason(e)}") from None
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name=f"channel-client:{self.hello.node}", daemon=True)
        self._thread.start()
        return self

    # -- the owner's side --------------------------------------------------------------------------
    def send_failure(self, msg: FailureMsg) -> bool:
        """Ask MAIN whether the cluster restarts after this node's code failed."""
        return self._send(msg)

    def send_quiet(self, msg) -> bool:
        """Tell MAIN this node's code is quiet (or active again): the stall watchdog."""
        return self._send(msg)

    def send_done(self, msg) -> bool:
        """Tell MAIN this node's code completed (DoneMsg)."""
        return self._send(msg)

    def send_outcome(self, msg: OutcomeMsg) -> bool:
        """Tell MAIN this node's end now. False when the channel is down (the work dir still tells it)."""
        return self._send(msg)

    def close(self, reason: str = "", wait: float = 5.0) -> None:
        """Say ``bye`` (best effort) and end the connection and the thread; no callback follows."""
        if self._sock is None:
            return
        if self._end("closed by this node"):
            self._send(Bye(reason=reason), force=True)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait)
        self._sock.close()

    def __enter__(self) -> "ChannelClient":
        return self if self._sock else self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, msg: Message, force: bool = False) -> bool:
        if self._sock is None or (self._ended is not None and not force):
            return False
        body = encode(msg)
        try:
            with self._send_lock:
                self._sock.sendall(self._writer.frame(body))
            return True
        except OSError as e:
            self._lost(f"sending to MAIN failed: {_reason(e)}")
            return False

    # -- the thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        sock = self._sock
        last_rx = time.monotonic()
        next_ping = last_rx  # the first ping at once: it measures the round trip
        seq = 0
        while self._ended is None:
            now = time.monotonic()
            # (what is already readable is read first: a node that was frozen finds MAIN's word)
            if now - last_rx > self.timeout and not _readable(sock):
                self._lost(f"no answer from MAIN for {now - last_rx:.1f} s {wire.SILENT}")
                return
            if now >= next_ping:
                self._pings = {s: t for s, t in self._pings.items() if s > seq - 8}
                self._pings[seq] = now
                if not self._send(Ping(seq=seq)):
                    return
                seq += 1
                next_ping = now + self.ping_interval
            wait = max(0.0, min(next_ping, last_rx + self.timeout + 0.001) - time.monotonic())
            try:
                ready, _, _ = select.select([sock], [], [], wait)
                if not ready:
                    continue
                data = sock.recv(256 * 1024)
            except ConnectionResetError:
                self._lost("MAIN reset the connection (its process ended)")
                return
            except (OSError, ValueError) as e:  # ValueError: closed under us by close()
                self._lost(f"connection error: {_reason(e)}")
                return
            if not data:
                self._lost("MAIN closed the connection (its process ended)")
                return
            try:
                bodies = self._reader.feed(data)
                if bodies:
                    self.received_at = last_rx = time.monotonic()
                for body in bodies:
                    if not self._handle(SERVER_MESSAGE.validate_json(body)):
                        return
            except (wire.FrameError, ValidationError) as e:
                self._lost(f"protocol error from MAIN: {e}")
                return

    def _handle(self, msg: Message) -> bool:
        if isinstance(msg, Pong):
            sent = self._pings.pop(msg.seq, None)
            if sent is not None:
                self.rtt = time.monotonic() - sent
        elif isinstance(msg, Roster):
            wire.call_back(self.on_roster, msg)
        elif isinstance(msg, OutcomeMsg):
            wire.call_back(self.on_outcome, msg)
        elif isinstance(msg, RestartMsg):
            wire.call_back(self.on_restart, msg)
        elif isinstance(msg, DumpMsg):
            wire.call_back(self.on_dump, msg)
        elif isinstance(msg, Bye):
            if msg.lost:  # MAIN gave this node up (it was frozen or unreachable): a loss, told by MAIN
                self.declared_lost = msg.reason
                self._lost(f"MAIN declared this node lost: {msg.reason}")
                return False
            if self._end(f"MAIN said bye: {msg.reason}"):
                log.info("control channel: MAIN ended the connection: %s", msg.reason or "no reason")
                wire.call_back(self.on_bye, msg.reason)
            return False
        return True

    def _end(self, why: str) -> bool:
        """Mark the connection ended; True for the first caller only."""
        with self._end_lock:
            if self._ended is not None:
                return False
            self._ended = why
            return True

    def _lost(self, why: str) -> None:
        if self._end(why):
            log.warning("control channel: lost MAIN at %s:%s: %s", self.host, self.port, why)
            wire.call_back(self.on_lost, why)


def _readable(sock: socket.socket) -> bool:
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            raise TimeoutError("MAIN did not answer the handshake in time") from None
        if not chunk:
            raise EOFError("MAIN closed the connection during the handshake")
        buf += chunk
    return buf


def _reason(e: BaseException) -> str:
    return str(e) or ("timed out" if isinstance(e, TimeoutError) else type(e).__name__)

