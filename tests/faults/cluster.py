"""Real clusters for the fault matrix: N+1 ``python -m fsm_cluster run`` processes.

``Cluster`` starts the nodes (one log file each, stdout+stderr), records when each one exits (a
watcher thread, this machine's wall clock — the only clock in these tests), injects faults
(signals, files), reads the work dir through the same ``WorkDir`` the nodes use (a local path or
``s3://``), and finds leftovers: every node starts with a unique ``FSM_FAULT_TAG`` in its
environment, which its children and grandchildren inherit, so psutil finds any process of this
cluster still alive — orphans re-parented to init included.

Timing is measured, never asserted tightly: ``wait`` only guards against hangs (``Profile.hang_guard``);
``latencies`` gives every node's exit time after the fault, for the matrix.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from fsm_cluster.wire.models import NodeState, StopMarker
from fsm_cluster.wire.workdir import WorkDir, state_name

TAG = "FSM_FAULT_TAG"
GRACE = 1.0  # OCI__TEARDOWN_GRACE


@dataclass(frozen=True)
class Profile:
    """The heartbeat settings of a fault cluster: OCI__HEARTBEAT_INTERVAL / _TIMEOUT (s)."""

    name: str
    interval: float
    timeout: float

    @property
    def bound(self) -> float:
        """What the issue asks every exit to stay within: the timeout + one interval (measured, reported)."""
        return self.timeout + self.interval

    @property
    def hang_guard(self) -> float:
        """A node still alive after this is a hang (the machine is shared: be generous)."""
        return max(90.0, 2 * self.bound + 30)


PROFILES = {
    "local": Profile("local", 0.5, 3.0),  # short, so the matrix runs in minutes
    "production": Profile("production", 10.0, 60.0),  # fsm_cluster's defaults (env.Settings)
}
PROFILE_ENV = "FSM_FAULT_PROFILE"  # which profile a cluster gets unless the test picks one


def default_profile() -> Profile:
    name = os.environ.get(PROFILE_ENV, "local") or "local"
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={name!r}: one of {sorted(PROFILES)}")
    return PROFILES[name]

# The entry script of every fault cluster: starts a grandchild (so orphans would show), marks that
# it ran, and fails or sleeps as its FAULT_* environment says. Wall times go to FAULT_DIR.
ENTRY = r'''
import os, subprocess, sys, time
rank = os.environ["RANK"]
marks = os.environ["FAULT_DIR"]
open(os.path.join(marks, f"started-{rank}"), "w").write(str(time.time()))
subprocess.Popen(["sleep", "600"])  # a grandchild: must not outlive its node
sync_dir = os.environ.get("OCI__SYNC_DIR")
fail = {r: int(c) for r, c in (x.split(":") for x in os.environ.get("FAULT_FAIL", "").split(",") if x)}
run_for = float(os.environ.get("FAULT_RUN_FOR", "600"))
if rank in fail:
    at_file = os.path.join(marks, "fail-at")  # optional: the test sets the instant to fail at
    if os.environ.get("FAULT_SYNC"):
        while not os.path.exists(at_file):
            time.sleep(0.005)
        at = float(open(at_file).read())
        while time.time() < at:
            time.sleep(0.001)
    open(os.path.join(marks, f"failed-{rank}"), "w").write(str(time.time()))
    print(f"entry script on rank {rank}: failing with {fail[rank]}", flush=True)
    sys.exit(fail[rank])
if sync_dir:
    time.sleep(1.0)
    os.makedirs(sync_dir, exist_ok=True)
    open(os.path.join(sync_dir, f"result-{rank}.txt"), "w").write(f"rank {rank} result\n")
if os.environ.get("FAULT_FINISH"):  # run until the test says finish, then succeed
    while not os.path.exists(os.path.join(marks, "finish")):
        time.sleep(0.05)
    sys.exit(0)
time.sleep(run_for)
'''


@dataclass
class Node:
    index: int
    mode: str
    rank: int
    run_id: str
    proc: subprocess.Popen
    log: Path
    exited_at: float | None = None

    @property
    def node_id(self) -> str:
        return "MAIN" if self.mode == "MAIN" else f"{self.mode}_{self.run_id}"

    @property
    def code(self) -> int | None:
        return self.proc.returncode

    def lines(self) -> list[str]:
        return [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]

    def last_line(self) -> str:
        lines = self.lines()
        return lines[-1] if lines else ""


@dataclass
class Cluster:
    """One cluster of real node processes on ``work_dir`` (a path or URI)."""

    tmp: Path
    work_dir: str
    workers: int = 2
    run_on: str = "all"
    env: dict = field(default_factory=dict)  # extra env for every node (storage credentials, ...)
    storage_options: dict | None = None  # for this test's own WorkDir (the nodes use env)
    profile: Profile = field(default_factory=default_profile)
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self):
        self.cluster_id = f"fault-{uuid.uuid4().hex[:10]}"
        self.tag = uuid.uuid4().hex
        self.marks = self.tmp / "marks"
        self.marks.mkdir(parents=True, exist_ok=True)
        self.entry = self.tmp / "entry.py"
        self.entry.write_text(ENTRY)
        self.fault_at: float | None = None
        self.fault_what = ""
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None
        self.workdir = WorkDir(self.work_dir, self.cluster_id, storage_options=self.storage_options,
                               retry_budget=10.0)

    # -- starting ----------------------------------------------------------------------------
    def node_env(self, mode: str, rank: int, run_id: str, **extra) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OCI__", "JOB_", "AWS_", "FAULT_")) and k not in ("RANK", TAG)}
        env.update({
            "OCI__MODE": mode, "OCI__WORK_DIR": self.work_dir, "JOB_OCID": self.cluster_id,
            "JOB_RUN_OCID": run_id, "RANK": str(rank), "OCI__WORKER_COUNT": str(self.workers),
            "OCI__ENTRY_SCRIPT": str(self.entry), "OCI__RUN_ON": self.run_on,
            "OCI__SELF_IP": "127.0.0.1", "OCI__HEARTBEAT_INTERVAL": str(self.profile.interval),
            "OCI__HEARTBEAT_TIMEOUT": str(self.profile.timeout), "OCI__TEARDOWN_GRACE": str(GRACE),
            "OCI__TIMEOUT": "60", "OCI__CODE_DIR": str(self.tmp), "PYTHONUNBUFFERED": "1",
            "FAULT_DIR": str(self.marks), TAG: self.tag,
        })
        env.update({k: str(v) for k, v in self.env.items()})
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, modes: list[str] | None = None, per_node: Callable[[int], dict] | None = None) -> "Cluster":
        modes = modes or ["MAIN"] + ["WORKER"] * self.workers
        for mode in modes:
            rank = len(self.nodes)
            self.start_node(mode, rank, **(per_node(rank) if per_node else {}))
        return self

    def start_node(self, mode: str, rank: int, prefix: list[str] | None = None, **extra) -> Node:
        """``prefix``: a command the node runs under (e.g. ``nsenter`` into another network)."""
        run_id = "main" if mode == "MAIN" else f"w{rank}"
        log = self.tmp / f"node{rank}-{mode.lower()}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", "fsm_cluster", "run"], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.node_env(mode, rank, run_id, **extra))
        node = Node(len(self.nodes), mode, rank, run_id, proc, log)
        self.nodes.append(node)
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, daemon=True)
            self._watcher.start()
        return node

    def _watch(self) -> None:
        while not self._closed.is_set():
            for n in list(self.nodes):
                if n.exited_at is None and n.proc.poll() is not None:
                    n.exited_at = time.time()
            time.sleep(0.01)

    # -- observing ---------------------------------------------------------------------------
    def until(self, predicate: Callable[[], object], what: str, guard: float | None = None):
        guard = guard or self.profile.hang_guard
        deadline = time.monotonic() + guard
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"not after {guard:g} s: {what}\n{self.dump()}")

    def states(self) -> dict[str, str]:
        out = {}
        for n in self.nodes:
            try:
                s = self.workdir.read(state_name(n.node_id), NodeState)
            except Exception:  # noqa: BLE001 - a file being replaced, a deleted dir: not yet
                s = None
            if s is not None:
                out[n.node_id] = s.state
        return out

    def wait_running(self, nodes: list[Node] | None = None) -> None:
        ids = [n.node_id for n in (nodes or self.nodes)]
        self.until(lambda: all(self.states().get(i) == "running" for i in ids)
                   and all((self.marks / f"started-{n.rank}").exists()
                           for n in (nodes or self.nodes) if self.run_on == "all" or n.mode == "MAIN"),
                   f"nodes {ids} running")

    def mark_time(self, name: str) -> float | None:
        p = self.marks / name
        return float(p.read_text()) if p.exists() else None

    def stop_marker(self) -> StopMarker | None:
        return self.workdir.read_stop()

    # -- faults ------------------------------------------------------------------------------
    def fault(self, what: str, at: float | None = None) -> None:
        self.fault_what = what
        self.fault_at = time.time() if at is None else at

    def signal(self, node: Node, sig: int) -> None:
        self.fault(f"{signal.Signals(sig).name} to {node.node_id}")
        node.proc.send_signal(sig)

    def delete_work_dir(self) -> None:
        self.fault("work dir deleted")
        if self.workdir.local:
            shutil.rmtree(self.workdir.root)
        else:
            self.workdir.fs.rm(self.workdir.root, recursive=True)

    # -- ending ------------------------------------------------------------------------------
    def wait(self, guard: float | None = None) -> list[int]:
        """Every node's exit code; a node alive after ``guard`` seconds fails the test (a hang)."""
        try:
            self.until(lambda: all(n.exited_at is not None for n in self.nodes), "every node exited", guard)
        except AssertionError:
            self.close()
            raise
        return [n.code for n in self.nodes]

    def latencies(self, exclude: tuple[str, ...] = ()) -> dict[str, float]:
        """Seconds from the fault to each node's exit (nodes killed by the fault, and ``exclude``d
        ones — a frozen node thawed by the test — left out)."""
        assert self.fault_at is not None, "no fault recorded"
        return {n.node_id: n.exited_at - self.fault_at for n in self.nodes
                if n.exited_at is not None and n.code not in (-signal.SIGKILL,) and n.node_id not in exclude}

    def leftovers(self) -> list[psutil.Process]:
        """Live processes that carry this cluster's tag: nodes, entry scripts, grandchildren."""
        found = []
        for p in psutil.process_iter():
            if p.pid == os.getpid():
                continue
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                if p.environ().get(TAG) == self.tag:
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
        return found

    def assert_no_orphans(self, guard: float = 20.0) -> float:
        """Wait (hang guard) until no process of this cluster is left; return how long it took."""
        t0 = time.monotonic()
        deadline = t0 + guard
        left = self.leftovers()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.leftovers()
        if left:
            desc = [(p.pid, " ".join(p.cmdline())) for p in left if p.is_running()]
            for p in left:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            raise AssertionError(f"processes left behind after {guard:g} s: {desc}")
        return time.monotonic() - t0

    def close(self) -> None:
        for n in self.nodes:
            if n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait()
        for p in self.leftovers():
            try:
                p.kill()
            except psutil.Error:
                pass
        self._closed.set()

    def dump(self) -> str:
        return "\n".join(f"--- {n.node_id} (exit {n.proc.poll()})\n{n.log.read_text(errors='replace')}"
                         for n in self.nodes)

    # -- the common verdict ------------------------------------------------------------------
    def assert_failed_everywhere(self, reason: str, *, first: set[str] | str, killed: tuple[Node, ...] = (),
                                 outcome: str = "failed") -> StopMarker:
        """Every surviving node exited non-zero with ``reason`` in its last log line; the stop
        marker names the first failure (one of ``first``) with ``reason``; nothing left behind."""
        codes = self.wait()
        first = {first} if isinstance(first, str) else first
        for n in self.nodes:
            if n in killed:
                assert n.code == -signal.SIGKILL, self.dump()
                continue
            assert n.code not in (0, None), f"{n.node_id} exited {n.code}\n{self.dump()}"
            last = n.last_line()
            assert f"{n.node_id} stopped: cluster " in last and reason in last, \
                f"{n.node_id}'s last line lacks {reason!r}: {last}\n{self.dump()}"
        marker = self.stop_marker()
        assert marker is not None, f"no stop marker\n{self.dump()}"
        assert marker.outcome == outcome and marker.node in first and reason in marker.reason, marker
        self.assert_no_orphans()
        assert len(codes) == len(self.nodes)
        return marker


def row(c: Cluster, scenario: str, backend: str, marker: StopMarker | None, note: str = "",
        exclude: tuple[str, ...] = ()) -> dict:
    """One line of the fault matrix (printed by conftest, written by matrix.py)."""
    lat = c.latencies(exclude)
    return {
        "scenario": scenario, "backend": backend, "fault": c.fault_what,
        "codes": {n.node_id: n.code for n in c.nodes},
        "latency": {k: round(v, 2) for k, v in lat.items()},
        "max_latency": round(max(lat.values()), 2) if lat else None,
        "profile": c.profile.name,
        "bound": c.profile.bound,
        "marker": f"{marker.outcome} by {marker.node}" if marker else "-",
        "reason": (marker.reason if marker else "").replace(c.workdir.display, "<wd>")[:110],
        "note": note,
    }
