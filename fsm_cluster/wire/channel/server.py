"""MAIN's side of the control channel: one TCP port, one thread running a selector loop.

Every socket is non-blocking and every step has a deadline, so no peer can hold the loop: a
connection that has not authenticated within ``auth_timeout`` is closed; an authenticated one
that sends no whole frame within ``timeout`` (pings included) is lost (``on_lost``); a peer that
stops reading while MAIN's output for it grows past ``max_backlog`` is lost too. A bad peer costs
one log line and its own connection, never another's.

A flood of connections does not take MAIN down (:mod:`.limits`): the channel raises the process's
soft limit of open files as it starts to what the cluster needs (``nodes``: room for twice as many
connections, at least ``max_connections``; at most the hard limit) and holds connections well below
it (the rest is the node's own), makes room at that cap by closing the oldest connection still in its handshake
(a node authenticates at once; when none is, it refuses the newcomer), stops accepting for a moment
when ``accept`` fails for want of descriptors (EMFILE, ENFILE) instead of spinning, and while many
unauthenticated connections are open says what it refused and dropped once per ``flood_interval``
with counts.

Callbacks run on the channel's thread, one at a time, in the order events arrive: they must be
quick (hand work to a queue or an ``Event``); an exception in one is logged and the loop goes on.
The methods (``send``, ``broadcast*``, ``disconnect``, ``close``) may be called from any thread,
callbacks included: they queue a command and wake the loop.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable

from pydantic import ValidationError

from . import limits, wire
from .messages import (
    CLIENT_MESSAGE,
    Bye,
    FailureMsg,
    Message,
    OutcomeMsg,
    Ping,
    Pong,
    QuietMsg,
    DoneMsg,
    Register,
    Roster,
    encode,
)

log = logging.getLogger(__name__)

OnRegister = Callable[[Register, int], Any]
OnLost = Callable[[str, str], Any]
OnOutcome = Callable[[OutcomeMsg], Any]
OnBye = Callable[[str, str], Any]

_HELLO, _OPEN = "hello", "open"
_WAKE = object()
_LISTEN = object()
ACCEPTS_PER_WAKE = 256  # connections taken per readiness of the listener (the loop serves the rest between)
ACCEPT_PAUSE = 0.5  # s without accepting after accept failed for want of descriptors
_NO_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class _Conn:
    __slots__ = ("id", "sock", "peer", "state", "ns", "inbuf", "out", "reader", "writer", "deadline",
                 "last_rx", "node", "writing")

    def __init__(self, cid: int, sock: socket.socket, peer: str, ns: bytes, deadline: float):
        self.id, self.sock, self.peer, self.ns = cid, sock, peer, ns
        self.state = _HELLO
        self.inbuf = bytearray()
        self.out = bytearray()
        self.reader: wire.FrameReader | None = None
        self.writer: wire.FrameWriter | None = None
        self.deadline = deadline  # auth deadline, then last frame + timeout
        self.last_rx = 0.0
        self.node = ""
        self.writing = False

    def name(self) -> str:
        return f"{self.node or 'connection'} #{self.id} from {self.peer}"


class ChannelServer:
    """``ChannelServer(secret, host).start()``; publish ``.address``; ``close()`` when the cluster ends.

    ``on_register(msg, conn_id)``: a node registered (a node that registers again on a new
    connection replaces its old one, which is closed without a loss). ``on_lost(node, why)``: a
    registered node's connection dropped (its process died) or it sent nothing for ``timeout``
    (frozen or unreachable). ``on_outcome(msg)``: a node told its end (``msg.node`` is always the
    sender's registered name). ``on_bye(node, reason)``: a node left on purpose.
    ``on_failure(msg)``: a node's code failed and it asks whether the cluster restarts (FailureMsg).
    ``on_quiet(msg)``: a node's stall watchdog says its code is quiet, or active again (QuietMsg).
    ``on_done(msg)``: a node's code completed (DoneMsg).
    """

    def __init__(self, secret: bytes, host: str = "127.0.0.1", port: int = 0, *,
                 on_register: OnRegister | None = None, on_lost: OnLost | None = None,
                 on_outcome: OnOutcome | None = None, on_bye: OnBye | None = None,
                 on_failure: Callable | None = None, on_quiet: Callable | None = None,
                 on_done: Callable | None = None,
                 timeout: float = 60.0, auth_timeout: float = 5.0, max_frame: int = wire.MAX_CLIENT_FRAME,
                 max_connections: int = 4096, max_backlog: int = 64 * 1024 * 1024, flood_interval: float = 10.0,
                 nodes: int = 0):
        self.secret = wire.check_secret(secret)
        self.host, self.port = host, port
        self.on_register, self.on_lost, self.on_outcome, self.on_bye = on_register, on_lost, on_outcome, on_bye
        self.on_failure, self.on_quiet, self.on_done = on_failure, on_quiet, on_done
        self.timeout, self.auth_timeout = timeout, auth_timeout
        self.max_frame, self.max_connections, self.max_backlog = max_frame, max_connections, max_backlog
        self.cluster_nodes = nodes  # the cluster's nodes that will connect (0: unknown)
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._conns: dict[int, _Conn] = {}
        self._nodes: dict[str, int] = {}  # registered node → conn id (read by other threads: copy)
        self._commands: deque = deque()
        self._next_id = 0
        self._thread: threading.Thread | None = None
        self._closing = False
        self._scan = max(0.01, min(0.25, timeout / 10, auth_timeout / 10))
        self._flood = limits.FloodLog(log, flood_interval)
        self._paused_until: float | None = None  # accepting stopped (no descriptors) until then

    # -- the owner's side --------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the channel listens on (the port the kernel chose for ``port=0``)."""
        if self._address is None:
            raise RuntimeError("the channel server is not started")
        return self._address

    def start(self) -> "ChannelServer":
        """Bind and listen (errors raise here, in the caller's thread), then run the loop. The
        process's soft limit of open files is raised to what the cluster needs (at most the hard
        one), and ``max_connections`` set to what that limit leaves beside the node's own
        descriptors (a warning when that is fewer than the cluster's nodes)."""
        wanted = limits.wanted_connections(self.max_connections, self.cluster_nodes)
        soft = limits.raise_open_files(limits.descriptors_for(wanted, limits.open_files()))
        self.max_connections = limits.connection_cap(wanted, soft, limits.open_files())
        if self.max_connections < self.cluster_nodes:
            log.warning("control channel: room for %d connections only, under the limit of open files (%d; hard "
                        "limit %s) for a cluster of %d nodes: the others work through the work dir alone. Raise "
                        "the hard limit (ulimit -Hn, systemd's LimitNOFILE, docker --ulimit nofile)",
                        self.max_connections, soft, limits.hard_limit() or "unlimited", self.cluster_nodes)
        elif self.max_connections < wanted:
            log.info("control channel: at most %d connections (the limit of open files leaves no more)",
                     self.max_connections)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        lsock = socket.socket(family, socket.SOCK_STREAM)
        try:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind((self.host, self.port))
            lsock.listen(min(self.max_connections, 4096))
            lsock.setblocking(False)
        except OSError:
            lsock.close()
            raise
        self._listener = lsock
        self._address = lsock.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(lsock, selectors.EVENT_READ, _LISTEN)
        self._sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._thread = threading.Thread(target=self._run, name=f"channel-server:{self.address[1]}", daemon=True)
        self._thread.start()
        return self

    def nodes(self) -> dict[str, int]:
        """Registered nodes now: node → connection id."""
        return dict(self._nodes)

    def send(self, conn_id: int, msg: Message) -> None:
        """One message to one connection (e.g. the roster to a node that registered after it was sent)."""
        self._command(("send", conn_id, encode(msg)))

    def broadcast(self, msg: Message) -> None:
        """One message to every registered node."""
        self._command(("broadcast", encode(msg)))

    def broadcast_roster(self, entries: Iterable, life: str = "", env: dict | None = None) -> None:
        self.broadcast(Roster(entries=list(entries), life=life, env=env or {}))

    def broadcast_outcome(self, msg: OutcomeMsg) -> None:
        self.broadcast(msg)

    def disconnect(self, conn_id: int, reason: str) -> None:
        """Refuse a registered node (e.g. one of another life): it gets ``bye`` with ``reason``; no loss is reported."""
        self._command(("disconnect", conn_id, reason))

    def close(self, reason: str = "MAIN closes the channel", wait: float = 5.0) -> None:
        """Say ``bye`` to every node, close every socket and end the thread (no losses reported)."""
        if self._thread is None:
            return
        self._command(("close", reason))
        if self._thread is not threading.current_thread():
            self._thread.join(wait)

    def __enter__(self) -> "ChannelServer":
        return self if self._thread else self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _command(self, cmd: tuple) -> None:
        self._commands.append(cmd)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already woken (buffer full) or closed

    # -- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        next_scan = time.monotonic() + self._scan
        try:
            while not self._closing:
                events = self._sel.select(max(0.0, next_scan - time.monotonic()))
                for key, mask in events:
                    if key.data is _LISTEN:
                        self._accept()
                    elif key.data is _WAKE:
                        self._drain_wake()
                    else:
                        conn = key.data
                        if mask & selectors.EVENT_WRITE and conn.id in self._conns:
                            self._flush(conn)
                        if mask & selectors.EVENT_READ and conn.id in self._conns:
                            self._read(conn)
                self._run_commands()
                now = time.monotonic()
                if self._paused_until is not None and now >= self._paused_until:
                    self._paused_until = None
                    self._sel.register(self._listener, selectors.EVENT_READ, _LISTEN)
                if now >= next_scan:
                    self._check_deadlines(now)
                    self._flood.report(now)
                    next_scan = now + self._scan
        except Exception:  # noqa: BLE001 - a bug here must not pass silently, nor hang the owner
            log.exception("control channel: the server loop failed; closing it")
        finally:
            self._shutdown()

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            now = time.monotonic()
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # no descriptors left: keep serving those we have, and wait a moment
                if e.errno in _NO_DESCRIPTORS:
                    self._flood.mark(now)
                    self._flood.count(now, f"accepts failed ({e.strerror}; accepting paused {ACCEPT_PAUSE:g} s)")
                    self._sel.unregister(self._listener)
                    self._paused_until = now + ACCEPT_PAUSE
                else:  # the peer gave up before it was taken (ECONNABORTED, …)
                    log.info("control channel: accept failed: %s", e)
                return
            if len(self._conns) >= self.max_connections:
                self._flood.mark(now)
                oldest = next((c for c in self._conns.values() if c.state == _HELLO), None)
                if oldest is None:  # every one authenticated: the newcomer is refused
                    self._flood.count(now, f"refused (at the cap of {self.max_connections} connections)")
                    sock.close()
                    continue
                # the oldest one still in its handshake makes room (a node authenticates at once)
                self._flood.count(now, f"closed in their handshake to make room (cap {self.max_connections})")
                self._close_conn(oldest)
            peer = f"{addr[0]}:{addr[1]}"
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ns, hello = wire.server_hello()
            self._next_id += 1
            conn = _Conn(self._next_id, sock, peer, ns, time.monotonic() + self.auth_timeout)
            self._conns[conn.id] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)
            if len(self._conns) - len(self._nodes) >= limits.FLOOD_PENDING:  # open, not authenticated
                self._flood.mark(now)
            self._write(conn, hello)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(256 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            self._drop(conn, "connection reset (the process ended)", probe=conn.state == _HELLO and not conn.inbuf)
            return
        except OSError as e:
            self._drop(conn, f"connection error: {e}")
            return
        if not data:
            self._drop(conn, "connection closed (the process ended)", probe=conn.state == _HELLO and not conn.inbuf)
            return
        try:
            if conn.state == _HELLO:
                conn.inbuf += data
                if len(conn.inbuf) < wire.CLIENT_PROOF:
                    if not wire.MAGIC.startswith(bytes(conn.inbuf[:len(wire.MAGIC)])):
                        raise wire.FrameError("not a control channel client (bad greeting)")
                    return
                proof, rest = bytes(conn.inbuf[:wire.CLIENT_PROOF]), bytes(conn.inbuf[wire.CLIENT_PROOF:])
                conn.inbuf.clear()
                try:
                    nc = wire.check_client_proof(self.secret, conn.ns, proof)
                except wire.FrameError:
                    self._write(conn, wire.REFUSED)
                    raise
                c2s, s2c = wire.session_keys(self.secret, conn.ns, nc)
                conn.reader, conn.writer = wire.FrameReader(c2s, self.max_frame), wire.FrameWriter(s2c)
                conn.state = _OPEN  # the auth deadline stands until it registers
                self._write(conn, wire.server_proof(self.secret, conn.ns, nc))
                data = rest
            for body in conn.reader.feed(data):
                self._handle(conn, body)
                if conn.id not in self._conns:
                    return
        except wire.FrameError as e:
            self._drop(conn, str(e), refuse=True)
        except ValidationError as e:
            self._drop(conn, f"invalid message: {_first_error(e)}", refuse=True)

    def _handle(self, conn: _Conn, body: bytes) -> None:
        msg = CLIENT_MESSAGE.validate_json(body)
        conn.last_rx = time.monotonic()
        conn.deadline = conn.last_rx + self.timeout
        if not conn.node:
            if not isinstance(msg, Register):
                raise wire.FrameError(f"{msg.type!r} before register")
            old = self._nodes.get(msg.node)
            if old is not None and old in self._conns:
                log.info("control channel: %s registered again from %s; closing its old connection #%d",
                         msg.node, conn.peer, old)
                self._close_conn(self._conns[old], bye=f"replaced by a new connection of {msg.node}")
            conn.node = msg.node
            self._nodes[msg.node] = conn.id
            log.debug("control channel: %s registered", conn.name())
            wire.call_back(self.on_register, msg, conn.id)
        elif isinstance(msg, Ping):
            self._write_frame(conn, encode(Pong(seq=msg.seq)))
        elif isinstance(msg, (OutcomeMsg, FailureMsg, QuietMsg, DoneMsg)):
            if msg.node != conn.node:
                raise wire.FrameError(f"{msg.type} for {msg.node!r} sent by {conn.node!r}")
            wire.call_back({OutcomeMsg: self.on_outcome, FailureMsg: self.on_failure,
                            QuietMsg: self.on_quiet, DoneMsg: self.on_done}[type(msg)], msg)
        elif isinstance(msg, Bye):
            node = conn.node
            self._close_conn(conn)
            log.debug("control channel: %s said bye (%s)", node, msg.reason or "no reason")
            wire.call_back(self.on_bye, node, msg.reason)
        else:  # a second register
            raise wire.FrameError("registered twice on one connection")

    def _run_commands(self) -> None:
        while self._commands:
            cmd = self._commands.popleft()
            if cmd[0] == "send":
                conn = self._conns.get(cmd[1])
                if conn is not None and conn.node:
                    self._write_frame(conn, cmd[2])
            elif cmd[0] == "broadcast":
                body = cmd[1]
                digest = hashlib.sha256(body).digest()
                for conn in [c for c in self._conns.values() if c.node]:
                    self._write_frame(conn, body, digest)
            elif cmd[0] == "disconnect":
                conn = self._conns.get(cmd[1])
                if conn is not None:
                    log.info("control channel: disconnecting %s: %s", conn.name(), cmd[2])
                    self._close_conn(conn, bye=cmd[2])
            elif cmd[0] == "close":
                for conn in list(self._conns.values()):
                    self._close_conn(conn, bye=cmd[1] if conn.node else None)
                self._closing = True

    def _check_deadlines(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if now > c.deadline]:
            if conn.state == _HELLO:
                self._drop(conn, f"did not authenticate within {self.auth_timeout:g} s")
            elif conn.node:
                self._drop(conn, f"no ping for {now - conn.last_rx:.1f} s {wire.SILENT}", lost=True)
            else:
                self._drop(conn, f"did not register within {self.auth_timeout:g} s")

    # -- output ---------------------------------------------------------------------------------
    def _write_frame(self, conn: _Conn, body: bytes, digest: bytes | None = None) -> None:
        self._write(conn, conn.writer.frame(body, digest))

    def _write(self, conn: _Conn, data: bytes) -> None:
        conn.out += data
        if not conn.writing:
            self._flush(conn)
        if len(conn.out) > self.max_backlog:
            self._drop(conn, f"not reading ({len(conn.out)} bytes queued)")

    def _flush(self, conn: _Conn) -> None:
        try:
            while conn.out:
                sent = conn.sock.send(conn.out)
                del conn.out[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            conn.out.clear()
            self._drop(conn, f"connection error: {e}")
            return
        want = bool(conn.out)
        if want != conn.writing:
            conn.writing = want
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self._sel.modify(conn.sock, events, conn)

    # -- ends ------------------------------------------------------------------------------------
    def _drop(self, conn: _Conn, why: str, refuse: bool = False, lost: bool = False, probe: bool = False) -> None:
        """A connection ends that nobody ended on purpose: one log line (an unregistered one in a
        flood: counted, see FloodLog); a registered node is lost (``lost``: it is told so, should it
        ever read again). ``probe``: it closed without a byte sent — a worker checking MAIN's
        address answers (node.identity.reachable): said at INFO."""
        if conn.id not in self._conns:
            return
        node = conn.node
        if not node and self._flood.flooding(time.monotonic()):  # one of many: counted, said once per interval
            self._flood.count(time.monotonic(), "dropped before they registered")
        elif probe and not node:
            log.info("control channel: dropped %s: closed before the handshake (a reachability check)", conn.name())
        else:
            log.warning("control channel: %s %s: %s", "lost" if node else "dropped", conn.name(), why)
        self._close_conn(conn, bye=why if (refuse or lost) and node else None, lost=lost)
        if node:
            wire.call_back(self.on_lost, node, why)

    def _close_conn(self, conn: _Conn, bye: str | None = None, lost: bool = False) -> None:
        if bye is not None and conn.writer is not None and conn.state == _OPEN:
            self._write_frame(conn, encode(Bye(reason=bye[:4096], lost=lost)))
            if conn.id not in self._conns:
                return
            try:
                conn.sock.send(conn.out)  # best effort: what fits in the kernel's buffer now
            except OSError:
                pass
        elif conn.out:
            try:
                conn.sock.send(conn.out)
            except OSError:
                pass
        self._conns.pop(conn.id, None)
        if conn.node and self._nodes.get(conn.node) == conn.id:
            del self._nodes[conn.node]
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _shutdown(self) -> None:
        self._flood.report(time.monotonic(), final=True)
        for conn in list(self._conns.values()):
            self._close_conn(conn)
        for s in (self._listener, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        if self._sel is not None:
            self._sel.close()
        self._closing = True


def _first_error(e: ValidationError) -> str:
    err = e.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "message"
    return f"{where}: {err.get('msg', 'invalid')}"
