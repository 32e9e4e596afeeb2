"""The shared-directory protocol: file names, atomic writes, validated reads, listings (on a local disk
through :mod:`.localdisk`, elsewhere on fsspec: :mod:`.stores` says which).

One ``WorkDir`` per node. Every storage call goes through ``_call`` which retries transient
failures (connection refused/reset, timeouts, 5xx, throttling) inside a time budget
and turns permanent ones (no such bucket, access denied) into one StorageError naming the URI.
``ops`` counts calls by kind, for the storage-cost benchmark.

The work dir is a trust boundary: anyone who can write it could otherwise steer every node.
* Every read is bounded (a model's ``MAX_BYTES``; ``read_bytes`` has a default): one ranged GET,
  and a larger file is a ProtocolError naming it, never read whole.
* On a local disk no link below the work dir is followed, reading or writing (a symlinked
  ``diagnostics/`` would redirect the node's writes), and only a regular file is read, without
  waiting (a FIFO would block every reader), or replaced: anything else is a ProtocolError
  (:mod:`.localdisk`; a refused write is logged once).
* With a cluster secret (``OCI__CLUSTER_SECRET``, handed to every node out of band by the
  launcher, never written to the work dir) every file this class writes carries an HMAC-SHA256
  of its name and bytes, appended as a last JSON member ``"sig"`` (so the file stays plain JSON
  for every reader), and every read checks it: an unsigned or badly signed file is a
  SignatureError. Without a secret files are written and read unsigned, as oracle-ads does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import posixpath
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import ProtocolError, SignatureError, StorageError
from ..validation import Problem, format_validation_error
from .localdisk import LocalDisk, NotRegular
from .models import LEGACY_STOP, NodeConfig, NodeState, StopMarker
from .stores import is_transient, open_store

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

STOP = "stop"
MAIN_NODE = "MAIN"
PREVIOUS = "previous"  # folder holding earlier lives' files (``previous/<life>/``)
MAX_READ = 16 * 1024 * 1024  # bytes: the default bound of a raw read
_SIG = re.compile(rb',"sig":"([0-9a-f]{64})"\}\s*\Z')

def config_name(node: str) -> str:
    return f"{node}_config.json"


def state_name(node: str) -> str:
    return f"{node}_state.json"


def node_of(name: str) -> tuple[str, str] | None:
    """``WORKER_r1_config.json`` → ``("WORKER_r1", "config")``; other names → None."""
    for kind in ("config", "state"):
        suffix = f"_{kind}.json"
        if name.endswith(suffix) and name.split("_", 1)[0] in ("MAIN", "WORKER", "PS"):
            return name[: -len(suffix)], kind
    return None


class Listing(Mapping):
    """One listing: every file's name (hidden ones and folders left out) → its change fingerprint
    (size, mtime, LastModified, ETag, created, ino: whichever the storage gives). Every node lists
    the whole cluster dir at its first look, N files, and then asks about a few of them: the names
    are indexed at once, a file's fingerprint is made when it is asked for."""

    __slots__ = ("_entries", "_fps")

    def __init__(self, entries: list[dict] = ()):
        index = {}
        for e in entries:  # (kept lean: N entries at every node's first look)
            if e.get("type") == "directory":
                continue
            name = e["name"].rpartition("/")[2] or e["name"].rstrip("/").rpartition("/")[2]
            if name[:1] != ".":
                index[name] = e
        self._entries = index
        self._fps: dict[str, tuple] = {}

    def __getitem__(self, name: str) -> tuple:
        fp = self._fps.get(name)
        if fp is None:
            get = self._entries[name].get
            fp = self._fps[name] = (get("size"), get("mtime"), get("LastModified"), get("ETag"), get("created"),
                                    get("ino"))
        return fp

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Listing({dict(self.items())!r})"


class WorkDir:
    def __init__(self, uri: str, cluster_id: str, *, fs=None, storage_options: dict | None = None,
                 retry_budget: float = 30.0, clock=None, secret: str | bytes | None = None):
        self.uri = uri
        self.use_secret(secret)
        self.cluster_id = cluster_id
        self.protocol, fs, path = open_store(uri, fs, storage_options)
        self._fs = fs
        self.local = fs is None or "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        self.root = posixpath.join(path.rstrip("/") or "/", cluster_id)
        # on a local disk: no link followed, nothing but regular files read (see localdisk)
        self.disk = LocalDisk(path.rstrip("/") or "/") if self.local else None
        self._refused: set[str] = set()  # refusals of writes already logged
        self.retry_budget = retry_budget
        self.clock = clock
        self.ops: Counter[str] = Counter()
        self.on_op: Callable[[str, str], None] | None = None  # (kind, what) of every storage call

    def __repr__(self) -> str:
        return f"WorkDir({self.display})"

    @property
    def fs(self):
        """The work dir's fsspec filesystem. On a local disk the node's own reads, writes and
        listings go through :attr:`disk` (no link followed); this is made when first asked for
        (artifact sync, oracle-ads' ``stop_filesystem``)."""
        if self._fs is None:
            import fsspec

            self._fs = fsspec.filesystem("file")
        return self._fs

    @fs.setter
    def fs(self, fs) -> None:  # a wrapper over it (the storage benchmarks count calls)
        self._fs = fs

    def use_secret(self, secret: str | bytes | None) -> None:
        """Sign and check files with the cluster's ``secret`` from now on (None: unsigned)."""
        self.secret = secret.encode() if isinstance(secret, str) else (secret or None)

    @property
    def display(self) -> str:
        return f"{self.uri.rstrip('/')}/{self.cluster_id}"

    def path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def url(self, name: str = "") -> str:
        return f"{self.display}/{name}" if name else self.display

    def _below(self, name: str) -> str:
        """``name`` relative to the work dir (for :attr:`disk`)."""
        return f"{self.cluster_id}/{name}" if self.cluster_id else name

    # -- storage calls ---------------------------------------------------------------------------
    def _call(self, kind: str, fn: Callable[[], Any], what: str) -> Any:
        try:
            return self._attempts(kind, fn, what)
        except (FileNotFoundError, FileExistsError):
            raise
        except PermissionError as e:
            raise StorageError(f"work dir {self.display}: access denied on {what} ({e})") from None
        except Exception as e:
            if is_transient(e):
                raise StorageError(
                    f"work dir {self.display}: {kind} of {what} still failing after "
                    f"{self.retry_budget:g} s of retries ({type(e).__name__}: {e})") from None
            raise

    def _attempts(self, kind: str, fn: Callable[[], Any], what: str) -> Any:
        """Call ``fn`` (one counted storage call) until it succeeds, fails for good, or the budget
        is spent: a transient failure is retried after 0.1 s, doubling, at most 5 s apart, while
        the time so far and the next pause (on the injected clock) stay within the budget; then
        the last failure is raised. A plain loop, not tenacity: it is on every storage call."""
        now = self.clock.now if self.clock is not None else time.monotonic
        start = now()
        attempt = 0
        while True:
            attempt += 1
            self.ops[kind] += 1
            if self.on_op is not None:
                self.on_op(kind, what)
            try:
                return fn()
            except Exception as e:
                if not is_transient(e):
                    raise
                pause = min(0.1 * 2 ** (attempt - 1), 5.0)
                if now() - start + pause >= self.retry_budget:
                    raise
                log.warning("storage %s %s failed (%s); retrying", kind, what, e)
                (self.clock.sleep if self.clock is not None else time.sleep)(pause)

    # -- signatures ------------------------------------------------------------------------------
    def _mac(self, name: str, body: bytes) -> str:
        return hmac.new(self.secret, name.encode() + b"\0" + body, hashlib.sha256).hexdigest()

    def sign(self, name: str, body: bytes) -> bytes:
        """``body`` (a JSON object) with its signature as a last member; as is without a secret."""
        if not self.secret:
            return body
        return body[:-1] + b',"sig":"' + self._mac(name, body).encode() + b'"}'

    def unsign(self, name: str, data: bytes) -> bytes:
        """The JSON object without its signature member; with a secret, a SignatureError unless
        the signature is this cluster's. A reader without the secret only strips it."""
        m = _SIG.match(data, max(0, data.rfind(b',"sig":"')))  # (no scan of a large file: the last member)
        if m is None:
            if self.secret:
                raise SignatureError(f"{self.url(name)}: not signed, refused (this cluster has a secret: "
                                     "only files written by its own nodes are accepted)")
            return data
        body = data[: m.start()] + b"}"
        if self.secret and not hmac.compare_digest(m.group(1).decode(), self._mac(name, body)):
            raise SignatureError(f"{self.url(name)}: bad signature, refused (not written with this "
                                 "cluster's secret: forged, or left by another launch)")
        return body

    # -- writes ----------------------------------------------------------------------------------
    def write(self, name: str, model: BaseModel, *, exclusive: bool = False) -> bool:
        """Atomically write ``model`` as ``name`` (signed when the cluster has a secret). With
        ``exclusive`` only if absent: returns False when another writer was first (the existing
        file is left untouched)."""
        data = self.sign(name, model.model_dump_json().encode())
        return self.write_bytes(name, data, exclusive=exclusive)

    def write_bytes(self, name: str, data: bytes, *, exclusive: bool = False) -> bool:
        """Write ``data`` as ``name`` atomically; with ``exclusive`` only if absent (False when
        something is there). On a local disk no link below the work dir is followed and only a
        regular file is replaced: anything else is refused (localdisk.NotRegular, logged once)."""
        path = self.path(name)
        if self.disk is not None:
            return self._on_disk("pipe", lambda: self.disk.write(self._below(name), data, exclusive), name)
        if exclusive:
            try:
                self._call("pipe", lambda: self.fs.pipe_file(path, data, mode="create"), name)
                return True
            except FileExistsError:
                return False
            except (TypeError, NotImplementedError):
                # Storage without create-if-absent: check, write, read back (narrow race).
                if self.exists(name):
                    return False
                self._call("pipe", lambda: self.fs.pipe_file(path, data), name)
                return self.read_bytes(name) == data
        try:
            self._call("pipe", lambda: self.fs.pipe_file(path, data), name)
        except FileNotFoundError as e:
            raise StorageError(f"work dir {self.display}: cannot write {name} ({e}); "
                               "does the bucket exist?") from None
        return True

    def put_file(self, name: str, local: str) -> None:
        """Copy the local file ``local`` to ``name`` (artifacts): on a local disk under the same
        rules as :meth:`write_bytes` (no link below the work dir followed), else ``fs.put_file``."""
        if self.disk is not None:
            self._on_disk("put", lambda: self.disk.copy_in(self._below(name), local), name)
        else:
            self._call("put", lambda: self.fs.put_file(local, self.path(name)), name)

    def _on_disk(self, kind: str, fn: Callable[[], Any], name: str) -> Any:
        """A change on the local disk; a refusal (a link or a file of another kind where the node
        writes) is logged once per file and reason, and raised."""
        try:
            return self._call(kind, fn, name)
        except NotRegular as e:
            if str(e) not in self._refused:
                self._refused.add(str(e))
                log.warning("work dir: %s", e)
            raise

    # -- reads -----------------------------------------------------------------------------------
    def read_bytes(self, name: str, max_bytes: int = MAX_READ) -> bytes | None:
        """The file's bytes, or None when it does not exist. One ranged read of at most
        ``max_bytes`` + 1 bytes: a larger file is a ProtocolError, never read whole. On a local
        disk only a regular file is read, at once: a FIFO, socket, device, folder or link there is
        a ProtocolError (localdisk.NotRegular), never a wait."""
        path = self.path(name)
        if self.disk is not None:
            def cat() -> bytes:
                return self.disk.read(self._below(name), max_bytes + 1)
        else:
            def cat() -> bytes:
                return self.fs.cat_file(path, start=0, end=max_bytes + 1)
        try:
            data = self._call("cat", cat, name)
        except FileNotFoundError:
            return None
        if len(data) > max_bytes:
            raise ProtocolError(f"{self.url(name)}: larger than {max_bytes} bytes, refused")
        return data

    def exists(self, name: str) -> bool:
        if self.disk is not None:
            return self._call("info", lambda: self.disk.exists(self._below(name)), name)
        path = self.path(name)
        try:
            self._call("info", lambda: self.fs.info(path), name)
            return True
        except FileNotFoundError:
            return False

    def parse(self, name: str, data: bytes, cls: type[M]) -> M:
        if cls is StopMarker and not data.strip().startswith(b"{"):
            if self.secret:
                raise SignatureError(f"{self.url(name)}: a bare stop file is not signed, refused "
                                     "(this cluster has a secret: use `fsm-cluster stop`)")
            return LEGACY_STOP  # type: ignore[return-value]
        data = self.unsign(name, data)
        try:
            if cls is NodeConfig:
                return NodeConfig.from_json(data, name)  # type: ignore[return-value]
            return cls.model_validate_json(data, context={"file": name})
        except ValidationError as e:
            raise ProtocolError(f"{self.url(name)}: {format_validation_error(e, _field)}") from None

    def read(self, name: str, cls: type[M]) -> M | None:
        """Read and validate ``name``; None if absent; ProtocolError naming the file and field."""
        data = self.read_bytes(name, getattr(cls, "MAX_BYTES", MAX_READ))
        return None if data is None else self.parse(name, data, cls)

    def listing(self, folder: str = "") -> Listing:
        """One request: every file directly under the cluster dir (or its ``folder``) with a change
        fingerprint."""
        if self.disk is not None:
            def ls() -> list[dict]:
                return self.disk.entries(self._below(folder) if folder else self.cluster_id)
        else:
            where = self.path(folder) if folder else self.root

            def ls() -> list[dict]:
                return self.fs.ls(where, detail=True, refresh=True)
        try:
            entries = self._call("ls", ls, "listing")
        except FileNotFoundError:
            return Listing()
        return Listing(entries)

    def subdirectories(self) -> list[str]:
        """One request: the names of the folders directly under the cluster dir (for a WorkDir
        opened with an empty cluster id: the clusters of a work dir). FileNotFoundError when the
        dir does not exist."""
        root = self.root.rstrip("/") or "/"
        if self.disk is not None:
            entries = self._call("ls", lambda: self.disk.entries(self.cluster_id), "listing")
        else:
            entries = self._call("ls", lambda: self.fs.ls(root, detail=True, refresh=True), "listing")
        return [posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "directory"]

    def move(self, name: str, dest: str) -> None:
        """Move ``name`` to ``dest`` (both relative to the cluster dir); a missing file is no error."""
        src, dst = self.path(name), self.path(dest)
        try:
            if self.disk is not None:
                self._on_disk("mv", lambda: self.disk.move(self._below(name), self._below(dest)), name)
            else:
                self._call("mv", lambda: self.fs.mv(src, dst), name)
        except FileNotFoundError:
            pass

    def remove(self, name: str) -> None:
        path = self.path(name)
        try:
            if self.disk is not None:
                self._on_disk("rm", lambda: self.disk.remove(self._below(name)), name)
            else:
                self._call("rm", lambda: self.fs.rm_file(path), name)
        except FileNotFoundError:
            pass

    # -- typed helpers ---------------------------------------------------------------------------
    def read_config(self, node: str) -> NodeConfig | None:
        return self.read(config_name(node), NodeConfig)

    def read_state(self, node: str) -> NodeState | None:
        return self.read(state_name(node), NodeState)

    def read_stop(self) -> StopMarker | None:
        return self.read(STOP, StopMarker)

    def write_stop(self, marker: StopMarker) -> bool:
        """First writer wins: False when a marker was already there."""
        return self.write(STOP, marker, exclusive=True)

    def log_path(self, node: str) -> str:
        return self.path(f"logs/{node}.log")


def _field(p: Problem) -> str:
    """``field 'run_id' is missing`` / ``is not allowed`` / ``field 'mode': must be ...``; a file
    that is not JSON at all: ``not valid JSON (...)``."""
    if not p.loc:
        return p.message
    if p.type in ("missing", "extra_forbidden"):
        return f"field {p.path!r} is {'missing' if p.type == 'missing' else 'not allowed'}"
    return f"field {p.path!r}: {p.message}"


def dumps(model: BaseModel) -> str:
    return json.dumps(model.model_dump(), indent=2)
