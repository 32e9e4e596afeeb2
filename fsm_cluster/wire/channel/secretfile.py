"""A per-cluster random secret kept in a file, for nodes that were handed none (hand-started nodes).

MAIN calls :func:`load_or_create_secret` on a path in the cluster's work dir: the first caller
creates the file owner-only (0600) with a fresh random secret, atomically (written aside, then
hard-linked into place, so a reader never sees a half-written file and two racing creators agree
on one secret); anyone later reads it. A node reads it with :func:`read_secret`. It keeps out
everyone who cannot read the work dir. Local paths only (the caller copies to an object store).
"""

from __future__ import annotations

import os
import secrets

from .wire import MIN_SECRET


def read_secret(path: str) -> bytes:
    """The secret in ``path`` (surrounding whitespace dropped); OSError if unreadable, ValueError
    if it is too short to be one."""
    with open(path, "rb") as f:
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
