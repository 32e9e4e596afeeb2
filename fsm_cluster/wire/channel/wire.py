"""The channel's bytes: a mutual HMAC-SHA256 challenge–response, then MAC'd length-prefixed frames.

Handshake (fixed sizes, so a non-blocking reader knows when it has a whole step)::

    MAIN → node   MAGIC ‖ ns                                      (8 + 32 bytes)
    node → MAIN   MAGIC ‖ nc ‖ HMAC(secret, "client" ‖ ns ‖ nc)   (8 + 32 + 32)
    MAIN → node   OK ‖ HMAC(secret, "server" ‖ ns ‖ nc)           (1 + 32)   or REFUSED (1) and close

``ns``/``nc`` are fresh random nonces, so each side proves it holds the cluster secret without
sending it, and a recorded exchange is worth nothing later. Both then derive one key per direction
from the secret and both nonces.

Frame: ``length (4 bytes, big-endian) ‖ tag (32) ‖ body`` where body is UTF-8 JSON of at most the
receiver's limit (checked on the length, before any body byte is read) and
``tag = HMAC(direction key, seq (8 bytes) ‖ SHA-256(body))`` with ``seq`` counting the frames of
that direction from 0: a frame injected, replayed, reordered or cut out of a connection fails its
tag (the channel is authenticated, not encrypted: nothing on it is secret). A broadcast hashes its
body once and computes only the short HMAC per connection.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import struct
from typing import Callable

from ...errors import FsmClusterError

MAGIC = b"FSMCTL1\n"
# the end of every loss by silence (no frame for the timeout), as against a connection that dropped
SILENT = "(frozen or unreachable)"
NONCE = 32
MAC = 32
OK, REFUSED = b"\x01", b"\x00"
SERVER_HELLO = len(MAGIC) + NONCE  # 40
CLIENT_PROOF = len(MAGIC) + NONCE + MAC  # 72
SERVER_PROOF = 1 + MAC  # 33
HEADER = struct.Struct(">I32s")
MIN_SECRET = 16  # bytes

MAX_CLIENT_FRAME = 64 * 1024  # what MAIN accepts from a node (register, ping, outcome, bye)
MAX_SERVER_FRAME = 4 * 1024 * 1024  # what a node accepts from MAIN (a 10,000-node roster fits)


class ChannelUnavailable(FsmClusterError):
    """The control channel cannot be used (refused, timed out, unreachable, authentication
    refused, protocol error); the message says why. The caller falls back to the work dir."""


class FrameError(Exception):
    """A peer broke the framing or the protocol; the connection is closed with this reason."""


def call_back(fn: Callable | None, *args) -> None:
    """Run an owner's callback; its exception is logged, never raised into the channel's thread."""
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - the owner's bug must not stop the channel
        logging.getLogger("fsm_cluster.wire.channel").exception("control channel: callback %s failed",
                                                            getattr(fn, "__name__", fn))


def check_secret(secret: bytes) -> bytes:
    if not isinstance(secret, (bytes, bytearray)) or len(secret) < MIN_SECRET:
        raise ValueError(f"the channel needs the cluster secret as bytes, at least {MIN_SECRET} long")
    return bytes(secret)


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


def server_hello() -> tuple[bytes, bytes]:
    """(the nonce, the bytes MAIN sends first)."""
    ns = secrets.token_bytes(NONCE)
    return ns, MAGIC + ns


def client_proof(secret: bytes, hello: bytes) -> tuple[bytes, bytes]:
    """Given MAIN's hello: (the node's nonce, the bytes the node answers)."""
    if len(hello) != SERVER_HELLO or not hello.startswith(MAGIC):
        raise FrameError("the peer is not a control channel (bad greeting)")
    ns, nc = hello[len(MAGIC):], secrets.token_bytes(NONCE)
    return nc, MAGIC + nc + _mac(secret, b"client", ns, nc)


def check_client_proof(secret: bytes, ns: bytes, proof: bytes) -> bytes:
    """MAIN's check of a node's answer: its nonce, else FrameError."""
    if not proof.startswith(MAGIC):
        raise FrameError("not a control channel client (bad greeting)")
    nc, mac = proof[len(MAGIC):len(MAGIC) + NONCE], proof[len(MAGIC) + NONCE:]
    if not hmac.compare_digest(mac, _mac(secret, b"client", ns, nc)):
        raise FrameError("authentication failed (wrong or no cluster secret)")
    return nc


def server_proof(secret: bytes, ns: bytes, nc: bytes) -> bytes:
    return OK + _mac(secret, b"server", ns, nc)


def check_server_proof(secret: bytes, ns: bytes, nc: bytes, proof: bytes) -> None:
    if proof[:1] == REFUSED:
        raise FrameError("MAIN refused the authentication (wrong cluster secret)")
    if len(proof) != SERVER_PROOF or proof[:1] != OK or not hmac.compare_digest(proof[1:], _mac(secret, b"server", ns, nc)):
        raise FrameError("MAIN failed to authenticate (it does not hold the cluster secret)")


def session_keys(secret: bytes, ns: bytes, nc: bytes) -> tuple[bytes, bytes]:
    """(node → MAIN key, MAIN → node key)."""
    k = _mac(secret, b"keys", ns, nc)
    return _mac(k, b"c2s"), _mac(k, b"s2c")


class FrameWriter:
    """One direction's outgoing frames (numbered from 0)."""

    def __init__(self, key: bytes):
        self.key, self.seq = key, 0

    def frame(self, body: bytes, digest: bytes | None = None) -> bytes:
        """``digest`` = ``hashlib.sha256(body).digest()`` when the caller already has it (broadcasts)."""
        digest = digest or hashlib.sha256(body).digest()
        tag = _mac(self.key, self.seq.to_bytes(8, "big"), digest)
        self.seq += 1
        return HEADER.pack(len(body), tag) + body


class FrameReader:
    """One direction's incoming frames: ``feed`` bytes as they come, get whole verified bodies."""

    def __init__(self, key: bytes, max_frame: int):
        self.key, self.max_frame, self.seq = key, max_frame, 0
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        bodies = []
        while len(self.buf) >= HEADER.size:
            length, tag = HEADER.unpack_from(self.buf)
            if length > self.max_frame:
                raise FrameError(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
            end = HEADER.size + length
            if len(self.buf) < end:
                break
            body = bytes(self.buf[HEADER.size:end])
            del self.buf[:end]
            want = _mac(self.key, self.seq.to_bytes(8, "big"), hashlib.sha256(body).digest())
            if not hmac.compare_digest(tag, want):
                raise FrameError("frame authentication failed (corrupt, forged or out of order)")
            self.seq += 1
            bodies.append(body)
        return bodies

    @property
    def partial(self) -> bool:
        return bool(self.buf)
