"""The stall watchdog (``OCI__STALL_TIMEOUT``, spec ``stallTimeout``; off by default).

A hang — one rank stuck in an all-reduce, a deadlocked thread — kills no process, so heartbeats
and the control channel never see it. With a stall timeout, every node that runs the entry script
tracks its code's *activity*: a byte of output (stdout / stderr, then piped through the node, which
copies it on unchanged), a call of :func:`fsm_cluster.progress`, or a touch of
``$OCI__PROGRESS_FILE``. A node whose code was quiet for the timeout (or whose code ended) reports
it to MAIN — over the control channel at once, else in its state file (``quiet_since``). When
every node running code is quiet and MAIN's own is too, MAIN asks every node for the stacks of its
code (as ``fsm-cluster dump`` does), waits for them, and fails the cluster: "stalled for N s:
stacks in <work_dir>/<cluster>/diagnostics/".

Checked on a thread a few times per second (not at the node's heartbeat: a stall is found within
the timeout and one check, whatever OCI__HEARTBEAT_INTERVAL is).
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

OCI__STALL_TIMEOUT = "OCI__STALL_TIMEOUT"
OCI__PROGRESS_FILE = "OCI__PROGRESS_FILE"  # set by the node for its entry script (touch it: progress)
STACKS_WAIT = 45.0  # s MAIN waits for the stacks of every node before it fails the cluster anyway


def progress() -> None:
    """Tell the node's stall watchdog that the code makes progress (a training step ended…): one
    ``utime`` of ``$OCI__PROGRESS_FILE``; nothing outside an fsm_cluster node."""
    path = os.environ.get(OCI__PROGRESS_FILE)
    if not path:
        return
    try:
        os.utime(path)
    except FileNotFoundError:
        try:
            open(path, "a").close()
        except OSError:
            pass
    except OSError:
        pass


class Activity:
    """When the code did something last (wall time): output copied through the node's pipes, or
    the progress file's modification time."""

    def __init__(self, progress_file: str | None) -> None:
        self.progress_file = progress_file
        self.last = time.time()

    def pump(self, source, fd: int, name: str) -> threading.Thread:
        """Copy ``source`` (the child's pipe) to ``fd`` chunk by chunk as it comes, noting the time."""

        def run() -> None:
            writable = True
            try:
                while True:
                    data = os.read(source.fileno(), 65536)
                    if not data:
                        break
                    self.last = time.time()
                    if writable:
                        try:
                            _write_all(fd, data)
                        except OSError:  # the node's own output is gone (its reader died): keep
                            writable = False  # draining, or the code would block on a full pipe
            except OSError:
                pass
            finally:
                try:
                    source.close()
                except OSError:
                    pass

        t = threading.Thread(target=run, name=f"fsm-cluster-{name}", daemon=True)
        t.start()
        return t

    def latest(self) -> float:
        last = self.last
        if self.progress_file:
            try:
                last = max(last, os.stat(self.progress_file).st_mtime)
            except OSError:
                pass
        return last


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Watchdog:
    """One per node that runs code, while its life runs (a daemon thread on the real clock).

    What it knows of the node comes as callables: ``state()`` and ``code()`` (the running entry
    script, a Child, or None), ``ended()``; ``peers()`` the other nodes whose code counts (MAIN,
    when the code runs on every node), ``on_channel()`` those of them on MAIN's channel (their
    reports come over it); ``send_quiet(since, ended)`` reports to MAIN (False: off the channel,
    then ``write_state_now()`` says it in the state file); ``ask_stacks(request)`` makes every node
    write its stacks (MAIN, waiting for its own); ``stalled(exc)`` ends the cluster with ``exc``."""

    def __init__(self, node_id: str, main: bool, timeout: float, interval: float, workdir, *, state, code, ended,
                 peers, on_channel, send_quiet, write_state_now, ask_stacks, stalled) -> None:
        self.node_id, self.main, self.timeout, self.interval, self.workdir = node_id, main, timeout, interval, workdir
        self._state, self._code, self._ended, self._peers_of = state, code, ended, peers
        self._on_channel, self._send_quiet, self._write_state_now = on_channel, send_quiet, write_state_now
        self._ask_stacks, self._stalled = ask_stacks, stalled
        # checks: a few per interval (a stall is seen within the timeout and one interval)
        self.every = max(0.05, min(1.0, timeout / 10, interval / 4))
        self.activity: Activity | None = None
        self.reports: dict[str, tuple[float, bool]] = {}  # MAIN: node → (quiet since, code ended)
        self._read_at: dict[str, float] = {}  # MAIN: when it last read an off-channel node's state
        self._file_reports: dict[str, tuple[float, bool] | None] = {}  # MAIN: what that state said
        self.reported: tuple | None = None  # a worker: what it last told MAIN
        self.fired = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the node's side ---------------------------------------------------------------------------
    def code_started(self, activity: Activity) -> None:
        self.activity = activity
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fsm-cluster-stall", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def quiet(self) -> tuple[float, bool] | None:
        """``(since, ended)`` when this node's code was quiet for the timeout or has ended; None
        while it is active (or between a restart's end and start)."""
        from ..wire.states import NodeStatus

        a = self.activity
        if a is None:
            return None
        state, code = self._state(), self._code()
        if state is NodeStatus.complete or (state is NodeStatus.running and code is not None
                                            and code.poll() is not None):
            return (a.latest(), True)
        if state is not NodeStatus.running or code is None:
            return None
        since = a.latest()
        return (since, False) if time.time() - since >= self.timeout else None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self._ended() or self.fired:
                return
            try:
                self.check()
            except Exception as e:  # noqa: BLE001 - a watchdog never ends a node by its own bug
                log.warning("%s: stall watchdog: %s", self.node_id, e)

    def check(self) -> None:
        mine = self.quiet()
        if not self.main:
            self._report(mine)
            return
        if mine is None:
            return
        verdict = self._cluster_quiet(mine)
        if verdict is not None:
            self.fired = True
            self.fire(verdict)

    def _report(self, mine) -> None:
        """A worker: tell MAIN when its quiet flips (the channel; else the state file at its next
        tick, which writes it: ``quiet_since`` in the node's state)."""
        key = None if mine is None else (round(mine[0], 3), mine[1])
        if key == self.reported:
            return
        self.reported = key
        if not self._send_quiet(None if mine is None else mine[0], bool(mine and mine[1])):
            self._write_state_now()  # off the channel: the state file says it now (not at the next beat)

    def quiet_since(self) -> float | None:
        """For the node's state file (nodes off the channel report there)."""
        return None if self.reported is None else self.reported[0]

    # -- MAIN --------------------------------------------------------------------------------------
    def note(self, node: str, since: float | None, ended: bool) -> None:
        """A node's report over the channel."""
        if since is None:
            self.reports.pop(node, None)
        else:
            self.reports[node] = (since, ended)

    def _peers(self) -> list[str]:
        return list(self._peers_of())

    def _cluster_quiet(self, mine) -> float | None:
        """Seconds the whole cluster's code has been quiet, when it has been for the timeout."""
        quiet = [mine]
        on_channel = self._on_channel()
        for peer in self._peers():
            report = self.reports.get(peer)
            if report is None and peer not in on_channel:
                report = self._read_report(peer)
            if report is None:
                return None
            quiet.append(report)
        if all(ended for _, ended in quiet):
            return None  # every code ended: the cluster completes (or fails) the normal way
        stalled = time.time() - max(since for since, _ in quiet)
        return stalled if stalled >= self.timeout else None

    def _read_report(self, peer: str) -> tuple[float, bool] | None:
        """An off-channel node's report, from its state file (read at most twice an interval, and
        only while every other node's code is quiet)."""
        now = time.monotonic()
        if now - self._read_at.get(peer, 0.0) < self.interval / 2:
            return self._file_reports.get(peer)
        self._read_at[peer] = now
        try:
            state = self.workdir.read_state(peer)
        except Exception:  # noqa: BLE001 - unreadable: no report (heartbeats judge the node)
            state = None
        report = None
        if state is not None and state.quiet_since is not None:
            report = (state.quiet_since, state.state == "complete")
        self._file_reports[peer] = report
        return report

    def fire(self, stalled: float) -> None:
        """MAIN: collect every node's stacks, then fail the cluster."""
        from ..errors import NodeFailure
        from .stacks import DIAGNOSTICS

        log.error("%s: no output or progress from the code on any node for %.0f s (OCI__STALL_TIMEOUT %g): "
                  "collecting stacks", self.node_id, stalled, self.timeout)
        wanted = [self.node_id] + self._peers()
        before = _stacks_files(self.workdir)
        request = f"stall-{int(time.time())}"
        self._ask_stacks(request)
        deadline = time.monotonic() + STACKS_WAIT
        while True:
            now = _stacks_files(self.workdir)
            missing = [w for w in wanted if now.get(w) in (None, before.get(w))]
            if not missing or time.monotonic() >= deadline or self._stop.is_set():
                break
            time.sleep(0.2)
        if missing:
            log.warning("%s: no stacks from %s within %.0f s", self.node_id, ", ".join(missing), STACKS_WAIT)
        where = self.workdir.url(DIAGNOSTICS + "/")
        self._stalled(NodeFailure(f"stalled for {stalled:.0f} s (OCI__STALL_TIMEOUT {self.timeout:g}): stacks in {where}"))


def _stacks_files(workdir) -> dict[str, tuple]:
    """``{node: fingerprint}`` of the stacks files in the diagnostics folder (one listing)."""
    from .stacks import DIAGNOSTICS

    suffix = ".stacks.txt"
    try:
        listing = workdir.listing(DIAGNOSTICS)
    except Exception:  # noqa: BLE001 - no folder yet
        return {}
    return {name[: -len(suffix)]: fp for name, fp in listing.items() if name.endswith(suffix)}
