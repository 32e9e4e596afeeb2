"""Artifact sync: OCI__SYNC_DIR copied to shared storage in the background and once more at the end.

Destination (``ArtifactSync.destination``):
- WORKSPACE set: ``<WORKSPACE>/<WORKSPACE_PREFIX>/sync/<cluster_id>/<run_id>/`` — the layout of
  the seed's sync script, so several nodes never overwrite each other. WORKSPACE may be any
  fsspec URI; without a scheme it is an OCI bucket name, i.e. ``oci://<WORKSPACE>@<namespace>``,
  the namespace taken from an ``oci://bucket@namespace`` work dir, else OCI_NAMESPACE, else asked
  from Object Storage (``get_namespace``) with the node's auth. (``oci://`` needs ``ocifs``.)
- otherwise: ``<work_dir>/<cluster_id>/sync/<run_id>/`` on the work dir's own filesystem.

Only new or changed files are sent: a manifest keeps each file's (size, mtime_ns) as last sent.
Nothing is ever deleted remotely. Uploads go through fsspec (``put_file``), with retries on
transient errors; a file that still fails is retried at the next round.

``stop()`` may be called from a signal handler: the sync lock is re-entrant, the thread is woken
by an Event, and the final sync runs in the calling thread and completes before ``stop`` returns.

``get_sync_loc``, ``get_sync_script``, ``create_sync_script`` and ``SYNC_SCRIPT_PATH`` keep their
seed meaning for images that expect the shell script (``oci os object sync``).
"""

from __future__ import annotations

import logging
import os
import posixpath
import threading
from typing import Callable
from urllib.parse import urlparse

from ..env import SYNC_ARTIFACTS

log = logging.getLogger(__name__)

SYNC_SCRIPT_PATH = "/etc/datascience/sync.sh"
OCI_NAMESPACE = "OCI_NAMESPACE"


# -- seed helpers ----------------------------------------------------------------------------------
def get_sync_loc(settings) -> tuple[str | None, str | None]:
    """(bucket, prefix): WORKSPACE / WORKSPACE_PREFIX, else bucket and prefix of an oci:// work dir."""
    if settings.workspace:
        return settings.workspace, settings.workspace_prefix or None
    parsed = urlparse(settings.work_dir)
    if parsed.scheme == "oci":
        return parsed.netloc.split("@")[0], parsed.path.strip("/")
    return None, None


_SYNC_SCRIPT = r"""#!/usr/bin/env bash
# Artifact sync for images that expect a script (fsm_cluster syncs through fsspec itself).
# usage: sync.sh <bucket> <prefix> [-l]   (-l: loop every SYNC_SLEEP seconds, default 60)
set -u
bucket="$1"
prefix="${2:-}"
prefix="${prefix%/}${prefix:+/}sync/${JOB_OCID:-Undefined}/${JOB_RUN_OCID:-local}/"
repeat=0
[ "${3:-}" = "-l" ] && repeat=1
interval="${SYNC_SLEEP:-60}"
case "${OCI_IAM_TYPE:-resource_principal}" in
  api_key) auth=api_key ;;
  instance_principal) auth=instance_principal ;;
  *) auth=resource_principal ;;
esac
oci_cli="$(command -v oci || echo "$HOME/bin/oci")"
while :; do
  if [ -d "${OCI__SYNC_DIR:-}" ] && [ -n "$(ls -A "$OCI__SYNC_DIR")" ]; then
    echo "sync: $OCI__SYNC_DIR -> oci://$bucket/$prefix"
    "$oci_cli" os object sync --auth "$auth" --bucket-name "$bucket" --prefix "$prefix" \
      --src-dir "$OCI__SYNC_DIR"
  else
    echo "sync: nothing in '${OCI__SYNC_DIR:-}'"
  fi
  [ "$repeat" = 1 ] || break
  sleep "$interval"
done
"""


def get_sync_script() -> str:
    """The shell sync script (``sync.sh <bucket> <prefix> [-l]``) of the seed's contract."""
    return _SYNC_SCRIPT


def create_sync_script(path: str, script: str) -> None:
    """Write ``script`` to ``path`` (parents created), executable (0755), atomically."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(script)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


# -- fsspec sync -----------------------------------------------------------------------------------
def _oci_namespace(settings, auth: dict | None) -> str:
    parsed = urlparse(settings.work_dir)
    if parsed.scheme == "oci" and "@" in parsed.netloc:
        return parsed.netloc.split("@", 1)[1]
    if os.environ.get(OCI_NAMESPACE):
        return os.environ[OCI_NAMESPACE]
    import oci

    from .oci_auth import make_client

    return make_client(oci.object_storage.ObjectStorageClient, auth).get_namespace().data


def workspace_base(settings, auth: dict | None = None) -> str:
    """WORKSPACE as a URI (a bare bucket name becomes ``oci://bucket@namespace``)."""
    ws = settings.workspace.rstrip("/")
    if "://" in ws:
        return ws
    return f"oci://{ws}@{_oci_namespace(settings, auth)}"


class ArtifactSync:
    """Background copy of OCI__SYNC_DIR to shared storage; ``stop()`` ends with a final sync."""

    def __init__(self, settings, workdir, clock=None, *, storage_options: dict | None = None,
                 auth: dict | None = None, join_timeout: float = 120.0):
        self.settings = settings
        self.workdir = workdir
        self.clock = clock
        self.source = os.path.abspath(os.path.expanduser(settings.sync_dir)) if settings.sync_dir else ""
        self.enabled = bool(settings.sync_artifacts and self.source)
        self.interval = float(settings.sync_sleep)
        self.join_timeout = join_timeout
        self._storage_options = storage_options
        self._auth = auth
        self._fs = None
        self._in_workdir = False  # the destination is the work dir's sync/<run>/ (no WORKSPACE)
        self._root = ""
        self.destination = ""
        self.manifest: dict[str, tuple[int, int]] = {}
        self.uploads = 0  # files sent since start
        self.rounds = 0
        self.errors = 0
        self.on_upload: Callable[[str], None] | None = None
        self._made_dirs: set[str] = set()
        self._lock = threading.RLock()  # re-entrant: stop() from a signal handler mid-sync
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if settings.sync_artifacts and not self.source:
            log.warning("%s=1 but OCI__SYNC_DIR is not set: nothing to sync", SYNC_ARTIFACTS)

    # -- destination -------------------------------------------------------------------------------
    def _open(self):
        if self._fs is not None:
            return self._fs, self._root
        s = self.settings
        run = s.job_run_ocid
        if s.workspace:
            import fsspec

            base = workspace_base(s, self._auth)
            url = posixpath.join(base, *(p for p in s.workspace_prefix.strip("/").split("/") if p),
                                 "sync", s.cluster_id, run)
            from .oci_auth import storage_options

            opts = storage_options(url, self._auth, self._storage_options)
            self._fs, self._root = fsspec.core.url_to_fs(url, **opts)
            self.destination = url
        else:
            self._fs, self._in_workdir = self.workdir.fs, True
            self._root = self.workdir.path(f"sync/{run}")
            self.destination = self.workdir.url(f"sync/{run}")
        self._local = "file" in (self._fs.protocol if isinstance(self._fs.protocol, tuple)
                                 else (self._fs.protocol,))
        return self._fs, self._root

    @property
    def remote_root(self) -> str:
        return self._open()[1]

    # -- one round ---------------------------------------------------------------------------------
    def _scan(self) -> list[tuple[str, str, tuple[int, int]]]:
        out = []
        if not os.path.isdir(self.source):
            return out
        for dirpath, dirnames, filenames in os.walk(self.source):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)  # a link to a file sends the file's content
                except OSError:
                    continue  # vanished, or a dangling link
                if not os.path.isfile(full):
                    continue
                rel = os.path.relpath(full, self.source).replace(os.sep, "/")
                out.append((rel, full, (st.st_size, st.st_mtime_ns)))
        return out

    def _put(self, fs, local: str, remote: str) -> None:
        import tenacity

        from ..wire.stores import is_transient

        if self._in_workdir:
            # the work dir's own storage: its rules (no link below it followed), retries and counts
            self.workdir.put_file(f"sync/{self.settings.job_run_ocid}/{posixpath.relpath(remote, self._root)}",
                                  local)
            return
        if self._local:
            parent = posixpath.dirname(remote)
            if parent not in self._made_dirs:
                fs.makedirs(parent, exist_ok=True)
                self._made_dirs.add(parent)
        kwargs = {"sleep": self.clock.sleep} if self.clock is not None else {}
        tenacity.Retrying(retry=tenacity.retry_if_exception(is_transient),
                          stop=tenacity.stop_after_attempt(4),
                          wait=tenacity.wait_exponential(multiplier=0.2, max=5.0),
                          reraise=True, **kwargs)(fs.put_file, local, remote)

    def sync_once(self) -> int:
        """Send new or changed files; return how many were sent."""
        return self._sync(interruptible=False)

    def _sync(self, interruptible: bool) -> int:
        if not self.enabled:
            return 0
        with self._lock:
            fs, root = self._open()
            sent = 0
            for rel, full, sig in self._scan():
                if interruptible and self._wake.is_set():
                    break  # stop() is waiting: its final sync sends the rest
                if self.manifest.get(rel) == sig:
                    continue
                remote = posixpath.join(root, rel)
                try:
                    self._put(fs, full, remote)
                except FileNotFoundError:
                    continue  # removed while we looked
                except Exception as e:
                    self.errors += 1
                    log.warning("sync: cannot send %s to %s (%s: %s); will retry", rel,
                                self.destination, type(e).__name__, e)
                    continue
                self.manifest[rel] = sig
                sent += 1
                self.uploads += 1
                if self.on_upload is not None:
                    self.on_upload(rel)
            self.rounds += 1
            if sent:
                log.info("sync: %d file(s) sent to %s", sent, self.destination)
            return sent

    # -- background ------------------------------------------------------------------------------
    def _now(self) -> float:
        import time

        return self.clock.now() if self.clock is not None else time.monotonic()

    def _loop(self) -> None:
        from ..clock import SystemClock

        real = self.clock is None or isinstance(self.clock, SystemClock)
        last = self._now()
        while not self._wake.is_set():
            remaining = self.interval - (self._now() - last)
            if remaining > 0:
                # A simulated clock is polled (it moves when the test moves it).
                self._wake.wait(remaining if real else min(remaining, 0.05))
                continue
            last = self._now()
            # Never block on the lock: whoever holds it (maybe a signal handler's final sync in the
            # main thread, waiting for this thread to end) must not wait for us.
            while not self._lock.acquire(timeout=0.05):
                if self._wake.is_set():
                    return
            try:
                if not self._wake.is_set():
                    self._sync(interruptible=True)
            except Exception as e:  # never kill the node for a sync round
                self.errors += 1
                log.warning("sync round failed: %s: %s", type(e).__name__, e)
            finally:
                self._lock.release()

    def start(self) -> None:
        """Start the background thread (a no-op when SYNC_ARTIFACTS is off or already started)."""
        if not self.enabled or self._thread is not None:
            return
        self._open()
        log.info("sync: %s -> %s every %g s", self.source, self.destination, self.interval)
        self._thread = threading.Thread(target=self._loop, name="fsm-artifact-sync", daemon=True)
        self._thread.start()

    def stop(self, final: bool = True) -> int:
        """Stop the thread, then (``final``) sync once more in this thread; return files sent."""
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(self.join_timeout)
            if t.is_alive():
                log.error("sync: the background round is still running after %g s", self.join_timeout)
        if not final or not self.enabled:
            return 0
        if not self._lock.acquire(timeout=self.join_timeout):
            log.error("sync: final sync skipped, a round is still holding the lock")
            return 0
        try:
            sent = self.sync_once()
        except Exception as e:
            log.error("sync: final sync to %s failed: %s: %s", getattr(self, "destination", "?"),
                      type(e).__name__, e)
            return 0
        finally:
            self._lock.release()
        return sent

    def __enter__(self) -> "ArtifactSync":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop(final=True)


def sync_step(settings, workdir, clock, running: "ArtifactSync | None", loop: bool) -> "ArtifactSync | None":
    """One call of the node's ``sync`` hook (SYNC_ARTIFACTS=1): ``loop`` starts the background sync
    (once); the last call stops it after a final pass (or syncs once when none ran). Returns the
    running sync, if any."""
    if not settings.sync_artifacts:
        return running
    if loop:
        if running is None:
            running = ArtifactSync(settings, workdir, clock)
            running.start()
        return running
    if running is not None:
        running.stop(final=True)
    else:
        ArtifactSync(settings, workdir, clock).sync_once()
    return running


def post_processing_wait(settings, clock, node_id: str) -> None:
    """POST_PROCESSING_WAIT seconds after the last sync, when it is set (oracle-ads waits 60 s by
    default: fsm_cluster only when asked)."""
    wait = getattr(settings, "post_processing_wait", 0)
    if wait:
        logging.getLogger(__name__).info("%s: post processing wait: %g s (POST_PROCESSING_WAIT)", node_id, wait)
        clock.pause(wait)
