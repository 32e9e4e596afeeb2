"""A random secret kept in a file (``python -m fsm_cluster.wire.channel --secret-file``, tools).

:func:`load_or_create_secret`: the first caller creates the file owner-only (0600) with a fresh
random secret, atomically (written aside, then hard-linked into place, so a reader never sees a
half-written file and two racing creators agree on one secret); anyone later reads it, with
:func:`read_secret` (a regular file only, opened without waiting: a FIFO there is refused). It
keeps out everyone who cannot read the file. Local paths only.

A node's channel key is not taken from such a file: MAIN makes a fresh one for each life and never
takes one it did not write (:meth:`fsm_cluster.wire.control.Control.secret`).
"""

from __future__ import annotations

import os
import secrets
import stat

from .wire import MIN_SECRET


def read_secret(path: str) -> bytes:
    """The secret in ``path`` (surrounding whitespace dropped); OSError if unreadable, ValueError
    if it is not a regular file (never waited on: a FIFO) or too short to be one."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path}: not a regular file, refused as a secret file")
        secret = f.read(4096).strip()
    if len(secret) < MIN_SECRET:
        raise ValueError(f"{path}: not a cluster secret (fewer than {MIN_SECRET} bytes)")
    return secret


def load_or_create_secret(path: str) -> bytes:
    """The secret in ``path``, created (0600, 64 random hex characters) when there is none."""
    try:
        return read_secret(path)
    except FileNotFoundError:
        pass
    secret = secrets.token_hex(32).encode()
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if another creator was first
        except FileExistsError:
            return read_secret(path)
        return secret
    finally:
        os.unlink(tmp)
