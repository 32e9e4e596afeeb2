"""Real engine clusters on this machine: N+1 ``python -m fsm_cluster run`` processes on a temp dir.

Every node binds to 127.0.0.1 only (OCI__SELF_IP). Waits are hang guards, never timed assertions:
the machine is small and shared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from integration.localnodes import LocalNodes
from integration.localnodes import base_env as _base_env

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
HANG_GUARD = 300.0  # seconds: only to stop a hung test, never a performance bound


# inherited variables that would confuse an engine started by a node
_ENGINE_VARS = ("DASK_", "RAY_", "TF_CONFIG", "MASTER_", "WORLD_SIZE", "HOROVOD_")


def base_env(work_dir: str, cluster: str, cluster_type: str, workers: int, ps: int = 0,
             **extra) -> dict[str, str]:
    env = {k: v for k, v in _base_env(work_dir, cluster, workers).items() if not k.startswith(_ENGINE_VARS)}
    env.update({"OCI__CLUSTER_TYPE": cluster_type, "OCI__PS_COUNT": str(ps),
                "OCI__HEARTBEAT_INTERVAL": "0.5", "OCI__TEARDOWN_GRACE": "3", "OCI__TIMEOUT": "240"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def netns_available() -> bool:
    """Whether this process may create a network namespace (root, or CAP_SYS_ADMIN)."""
    import shutil

    if not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")):
        return False
    try:
        return subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class PrivateNetwork:
    """A network namespace with only a loopback interface, held open by a ``sleep`` process.

    Engines that bind every interface whatever address they are given (Ray's raylet and agents,
    torch's TCPStore) then reach nothing but this namespace's loopback: a test cluster never
    listens on the machine's real network, and never collides with another test's ports."""

    def __init__(self):
        self.holder = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep 86400"],
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if Path(f"/proc/{self.holder.pid}/comm").read_text().strip() == "sleep":
                    return
            except OSError:
                pass
            if self.holder.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("could not set up a private network namespace")

    def prefix(self) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n", "--"]

    def close(self) -> None:
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait()


@dataclass
class EngineCluster(LocalNodes):
    """LocalNodes for an engine: a cluster type, PS nodes, per-mode env, nodes in own sessions."""

    cluster_type: str = "COMMAND"
    ps: int = 0
    per_mode: dict = field(default_factory=dict)  # mode → extra env
    modes: list = field(default_factory=list)
    private_network: bool = True  # all nodes in one loopback-only network namespace when possible

    def __post_init__(self):
        super().__post_init__()
        self.net: PrivateNetwork | None = None
        self.cluster = f"{self.cluster_type.lower()}-{os.getpid()}-{time.monotonic_ns() % 10**6}"

    def start(self) -> "EngineCluster":
        self.modes = ["MAIN"] + ["WORKER"] * self.workers + ["PS"] * self.ps
        prefix = []
        if self.private_network and netns_available():
            self.net = PrivateNetwork()
            prefix = self.net.prefix()
        self._prefix = prefix
        for rank, mode in enumerate(self.modes):
            self.start_node(mode, rank)
        return self

    def start_node(self, mode: str, rank: int | None = None, **extra) -> "EngineCluster":
        """Start a node of ``rank`` (``extra`` on top: a replacement's JOB_RUN_OCID, OCI__REPLACES)."""
        index = len(self.procs)
        rank = index if rank is None else rank
        env = base_env(self.work_dir, self.cluster, self.cluster_type, self.workers, self.ps,
                       **self.extra, **self.per_mode.get(mode, {}))
        env.update({"OCI__MODE": mode, "RANK": str(rank),
                    "JOB_RUN_OCID": "main" if mode == "MAIN" else f"{mode.lower()}{rank}"})
        env.update({k: str(v) for k, v in extra.items()})
        if index >= len(self.modes):
            self.modes.append(mode)
        path = self.tmp / f"node{index}.log"
        self.logs.append(path)
        self.procs.append(subprocess.Popen(getattr(self, "_prefix", []) + [sys.executable, "-m", "fsm_cluster", "run"],
                                           env=env, stdout=open(path, "wb"), stderr=subprocess.STDOUT,
                                           start_new_session=True))
        return self

    def wait(self, timeout: float = HANG_GUARD) -> list[int]:
        return super().wait(timeout)

    def close(self) -> None:
        self.kill()
        if self.net is not None:
            self.net.close()

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def dump(self) -> str:
        return "\n".join(f"--- node {i} ({self.modes[i]})\n{p.read_text(errors='replace')[-6000:]}"
                         for i, p in enumerate(self.logs))

    def state(self, node: str) -> dict | None:
        try:
            return json.loads((self.state_dir() / f"{node}_state.json").read_text())
        except (OSError, ValueError):
            return None

    def stop_marker(self) -> dict | None:
        try:
            return json.loads((self.state_dir() / "stop").read_text())
        except (OSError, ValueError):
            return None

    def node_ids(self) -> list[str]:
        return ["MAIN" if m == "MAIN" else f"{m}_{m.lower()}{r}" for r, m in enumerate(self.modes)]

    def wait_for(self, predicate, what: str, timeout: float = HANG_GUARD, poll: float = 0.2):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if all(p.poll() is not None for p in self.procs):
                break
            time.sleep(poll)
        self.kill()
        raise AssertionError(f"never saw {what}:\n{self.dump()}")

    def all_running(self) -> bool:
        states = [self.state(n) for n in self.node_ids()]
        return all(s is not None and s["state"] == "running" for s in states)

    def descendants(self) -> list[psutil.Process]:
        """Every live process started (transitively) by the nodes, found by their environment
        marker: each node's processes inherit JOB_OCID=<this cluster's id>."""
        found = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.pid == os.getpid():
                    continue
                if p.environ().get("JOB_OCID") == self.cluster:
                    found.append(p)
            except (psutil.Error, OSError):
                continue
        return found

    def leftovers(self, grace: float = 20.0) -> list[str]:
        """Processes of this cluster still alive after ``grace`` s (zombies don't count)."""
        deadline = time.monotonic() + grace
        while True:
            alive = []
            for p in self.descendants():
                try:
                    if p.status() != psutil.STATUS_ZOMBIE:
                        alive.append(f"{p.pid} {' '.join(p.cmdline())[:200]}")
                except psutil.Error:
                    pass
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.5)


def kill_worker_and_check(c: EngineCluster, victim: int = 2) -> None:
    """kill -9 the ``fsm_cluster run`` process of node ``victim`` once every node runs; then every
    surviving node must fail the cluster (heartbeat watch or the engine noticing), and nothing the
    nodes started may survive."""
    c.wait_for(c.all_running, "every node in state running")
    time.sleep(1.0)  # let the engine get busy
    victim_id = c.node_ids()[victim]
    os.kill(c.procs[victim].pid, signal.SIGKILL)
    codes = c.wait()
    assert codes[victim] == -signal.SIGKILL
    assert all(code != 0 for code in codes), c.dump()
    marker = c.stop_marker()
    assert marker is not None and marker["outcome"] == "failed", c.dump()
    for i, node in enumerate(c.node_ids()):
        if i == victim:
            continue
        st = c.state(node)
        assert st is not None and st["state"] == "stopped" and st["exit_code"] not in (0, None), (node, st, c.dump())
    main = c.state("MAIN")
    # MAIN saw the victim go: through its heartbeat (timeout OCI__HEARTBEAT_TIMEOUT) or its engine
    assert victim_id in main["reason"] or "exited with code" in main["reason"], (main, c.dump())
    left = c.leftovers()
    assert left == [], (left, c.dump())
