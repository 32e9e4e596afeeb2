"""A cluster whose every node runs on a host of its own: node ``i`` (rank order: MAIN, the workers)
is a real process started under ``ip netns exec <host i>``, with the nodes' own environment
contract (as a job run has it: mode, rank, run id, the shared work dir, the cluster's secret), the
work dir a local folder that every host sees, and the host's own temporary folder (TMPDIR).

``HostCluster`` starts ``python -m fsm_cluster run`` by default, or any ``command`` in ``cwd``
(an oracle-ads-style image's ``python run.py``). Heartbeats are fsm_cluster's production defaults
unless a test says otherwise. It reads what the nodes wrote (stop marker, state files, configs),
each node's last log line, and what still runs in the hosts (``ip netns pids``): the processes of
a host are the cluster's, whatever they renamed themselves to. Waits are hang guards only.

Each node's exit is stamped (``HostNode.exited``, wall clock) and the trivial entry script marks
when it ended (:meth:`HostCluster.code_ended`), for benchmarks/hosts.py, which also runs the same
clusters on :func:`this_host` (every node on this machine's loopback, no namespace) and each
built-in engine's example as the tests run it (:data:`ENGINES`, :meth:`HostCluster.example`).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

from fsm_cluster.launch.hosts import Host, Hosts

HANG_GUARD = 300.0  # seconds: a node still alive after this is a hang, never a timing bound
PRODUCTION = {"OCI__HEARTBEAT_INTERVAL": "10", "OCI__HEARTBEAT_TIMEOUT": "60"}  # fsm_cluster's defaults, explicit
# inherited variables that would steer a node or its engine
FOREIGN = ("OCI__", "JOB_", "DASK_", "RAY_", "MASTER_", "HOROVOD_", "TF_CONFIG", "WORLD_SIZE", "RANK", "LOCAL_RANK",
           "GLOO_", "NCCL_", "SAMPLE_", "WIRE_")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Each built-in engine's example (examples/<engine>/train.py) as the multi-host tests and
# benchmarks/hosts.py run it: the module it needs, its arguments (before --out), every node's
# variables, the workers' variables.
ENGINES = {
    "DASK": ("distributed", "--tasks 16", {}, {"OCI__START_ARGS": "--nthreads 1"}),
    "PYTORCH": ("torch", "--epochs 3", {}, {}),
    "RAY": ("ray", "--tasks 6", {"OCI__START_ARGS": "--num-cpus 1"}, {}),
    "TENSORFLOW": ("tensorflow", "--epochs 2 --steps 10", {"TF_CPP_MIN_LOG_LEVEL": "2"}, {}),
    "HOROVOD": ("horovod", "--epochs 3", {"OCI__HOROVOD_SLOTS": "1"}, {}),
}

# The entry script of the trivial cluster: what the node told it, then a run as long as RUN_FOR
# (or until the test's "finish" file appears), in MARKS.
ENTRY = r'''
import json, os, sys, time
marks, rank = os.environ["MARKS"], os.environ["RANK"]
seen = {k: os.environ.get(k) for k in ("OCI__NODE_IP", "OCI__MAIN_IP", "OCI__NODE_LIST", "WORLD_SIZE", "MASTER_ADDR")}
with open(os.path.join(marks, f"started-{rank}.json"), "w") as f:
    json.dump(seen, f)
deadline = time.monotonic() + float(os.environ.get("RUN_FOR", "0"))
while time.monotonic() < deadline and not os.path.exists(os.path.join(marks, "finish")):
    time.sleep(0.1)
with open(os.path.join(marks, f"ended-{rank}"), "w") as f:
    f.write(repr(time.time()))
print(f"entry script on rank {rank} done", flush=True)
'''


@dataclass
class HostNode:
    rank: int
    mode: str
    run_id: str
    host: Host
    proc: subprocess.Popen
    log: Path
    exited: float | None = field(default=None, compare=False)  # wall clock of its exit, once it exited

    @property
    def node_id(self) -> str:
        return "MAIN" if self.mode == "MAIN" else f"{self.mode}_{self.run_id}"

    @property
    def code(self) -> int | None:
        return self.proc.poll()

    def last_line(self) -> str:
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else ""


class _ThisHost(Host):
    def wrap(self, cmd):
        return list(cmd)


def this_host(n: int = 3) -> list[Host]:
    """``n`` "hosts" that are all this machine, on loopback (127.0.0.1, no namespace, no TMPDIR of
    their own): with ``self_ip=True`` a cluster on them is the one-host cluster of the other
    benchmarks, beside the same cluster on real hosts."""
    return [_ThisHost(i, "this-host", "127.0.0.1", "") for i in range(n)]


# Horovod across hosts: horovodrun reaches the other hosts' ranks over SSH; tests/multihost/sshd.py
# runs an sshd on every host (as ADS images do) and gives the hosts hostnames of their own.


def engine_missing(cluster_type: str) -> str | None:
    """Why the engine's example cannot run here (its module is not installed; Horovod: this
    python cannot import horovod.torch), else None."""
    module = ENGINES[cluster_type][0]
    if find_spec(module) is None:
        return f"{module} is not installed"
    if cluster_type == "HOROVOD":
        r = subprocess.run([sys.executable, "-c", "import horovod.torch"], capture_output=True, text=True, check=False)
        if r.returncode:
            return f"horovod.torch cannot be imported: {(r.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


class HostCluster:
    """1 MAIN + ``workers`` WORKERs, node ``i`` on ``hosts[i]``. ``env``: for every node (over the
    defaults); ``per_node(rank)``: for one; ``self_ip``: each node is given its host's address
    (``OCI__SELF_IP``), else it finds its own; ``secret``: the nodes share a cluster secret, as a
    launcher's do (an oracle-ads image's nodes have none)."""

    def __init__(self, tmp: Path, hosts: Hosts, *, cluster_type: str = "COMMAND", workers: int = 2,
                 env: dict | None = None, per_node: Callable[[int], dict] | None = None, self_ip: bool = False,
                 secret: bool = True, command: list[str] | None = None, cwd: Path | None = None):
        assert len(hosts) >= workers + 1, "a host per node"
        self.tmp, self.hosts, self.workers = tmp, hosts, workers
        self.cluster_type, self.self_ip = cluster_type, self_ip
        self.env, self.per_node = dict(env or {}), per_node or (lambda rank: {})
        self.command = command or [sys.executable, "-m", "fsm_cluster", "run"]
        self.cwd = cwd
        self.secret = secrets.token_hex(32) if secret else ""
        self.work_dir = tmp / "wd"
        self.job = f"mh-{secrets.token_hex(4)}"
        self.marks = tmp / "marks"
        self.marks.mkdir(parents=True, exist_ok=True)
        (tmp / "entry.py").write_text(ENTRY)
        self.nodes: list[HostNode] = []

    # -- starting ----------------------------------------------------------------------------
    def node_env(self, rank: int, mode: str, run_id: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
        env.update({"OCI__CLUSTER_TYPE": self.cluster_type, "OCI__WORK_DIR": str(self.work_dir),
                    "JOB_OCID": self.job, "OCI__WORKER_COUNT": str(self.workers), "OCI__PS_COUNT": "0",
                    "OCI__ENTRY_SCRIPT": str(self.tmp / "entry.py"), "OCI__CODE_DIR": str(self.tmp),
                    "OCI__TIMEOUT": "300", "PYTHONUNBUFFERED": "1", "MARKS": str(self.marks), **PRODUCTION})
        if self.secret:
            env["OCI__CLUSTER_SECRET"] = self.secret
        env.update({k: str(v) for k, v in self.env.items()})
        env.update({k: str(v) for k, v in self.per_node(rank).items()})
        env.update({"OCI__MODE": mode, "RANK": str(rank), "JOB_RUN_OCID": run_id, **self.hosts[rank].env})
        if self.self_ip:
            env["OCI__SELF_IP"] = self.hosts[rank].address
        return env

    def start(self) -> "HostCluster":
        for rank in range(self.workers + 1):
            mode, run_id = ("MAIN", "main") if rank == 0 else ("WORKER", f"w{rank}")
            log = self.tmp / f"{run_id}.log"
            host = self.hosts[rank]
            with open(log, "wb") as out:
                proc = subprocess.Popen(host.wrap(self.command), env=self.node_env(rank, mode, run_id), cwd=self.cwd,
                                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            self.nodes.append(HostNode(rank, mode, run_id, host, proc, log))
            threading.Thread(target=self._stamp, args=(self.nodes[-1],), daemon=True).start()
        return self

    @staticmethod
    def _stamp(node: HostNode) -> None:
        node.proc.wait()
        node.exited = time.time()

    def example(self, out: Path) -> HostCluster:
        """Run this cluster's engine's example (:data:`ENGINES`; writes to ``out``) as the code."""
        _, args, env, workers_env = ENGINES[self.cluster_type]
        self.env.update({"OCI__ENTRY_SCRIPT": str(EXAMPLES / self.cluster_type.lower() / "train.py"),
                         "OCI__ENTRY_SCRIPT_ARGS": f"{args} --out {out}", **env, **self.env})
        theirs = self.per_node
        self.per_node = lambda rank: {**(workers_env if rank else {}), **theirs(rank)}
        return self

    # -- observing ---------------------------------------------------------------------------
    def until(self, predicate: Callable[[], object], what: str, guard: float = HANG_GUARD):
        deadline = time.monotonic() + guard
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if all(n.code is not None for n in self.nodes):
                break
            time.sleep(0.2)
        raise AssertionError(f"never saw {what}{self.dump()}")

    def wait(self, guard: float = HANG_GUARD) -> list[int]:
        """Every node's exit code; a node alive after ``guard`` s is a hang (the test fails)."""
        deadline = time.monotonic() + guard
        for n in self.nodes:
            try:
                n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{n.node_id} still running after {guard:g} s{self.dump()}") from None
        return [n.code for n in self.nodes]

    def file(self, name: str) -> dict | None:
        try:
            return json.loads((self.work_dir / self.job / name).read_text())
        except (OSError, ValueError):
            return None

    def stop_marker(self) -> dict | None:
        return self.file("stop")

    def state(self, node_id: str) -> dict | None:
        return self.file(f"{node_id}_state.json")

    def until_running(self) -> None:
        """Until every node runs and MAIN's code started (a hang guard)."""
        self.until(lambda: self.all_running() and self.started(0), "every node running and MAIN's code started")

    def code_ended(self, rank: int) -> float | None:
        """When rank ``rank``'s trivial entry script ended (wall clock; None: not yet)."""
        try:
            return float((self.marks / f"ended-{rank}").read_text())
        except (OSError, ValueError):
            return None

    def all_running(self) -> bool:
        return all((self.state(n.node_id) or {}).get("state") == "running" for n in self.nodes)

    def started(self, rank: int) -> dict | None:
        """What rank ``rank``'s entry script was told (None: it has not started)."""
        try:
            return json.loads((self.marks / f"started-{rank}.json").read_text())
        except (OSError, ValueError):
            return None

    def roster(self) -> dict[str, str]:
        """node id → address, as MAIN's roster publishes it."""
        ours = (self.file("MAIN_config.json") or {}).get("fsm_cluster", {})  # fsm_cluster's part of the flat file
        return {e["node"]: e["ip"] for e in ours.get("roster", [])}

    def left_running(self) -> list[str]:
        """Processes still running in the cluster's hosts (zombies are not running)."""
        import psutil

        out = []
        for h in self.hosts:
            r = subprocess.run(["ip", "netns", "pids", h.name], capture_output=True, text=True)
            for pid in map(int, r.stdout.split()):
                try:
                    p = psutil.Process(pid)
                    if p.status() != psutil.STATUS_ZOMBIE:
                        out.append(f"{h.name}: {pid} {' '.join(p.cmdline())[:160]}")
                except psutil.Error:
                    pass
        return out

    def nothing_left(self, grace: float = 20.0) -> None:
        """Nothing the cluster started still runs in any host (a moment for teardown's kills)."""
        deadline = time.monotonic() + grace
        while self.left_running() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.left_running() == [], f"left running: {self.left_running()}{self.dump()}"

    def completed(self) -> None:
        """Every node exited 0 and says so last, MAIN wrote the complete marker, nothing is left."""
        assert self.wait() == [0] * len(self.nodes), self.dump()
        marker = self.stop_marker()
        assert marker is not None and (marker["outcome"], marker["node"]) == ("complete", "MAIN"), self.dump()
        for n in self.nodes:
            assert f"{n.node_id} stopped: cluster complete; exit 0" in n.last_line(), self.dump()
        self.nothing_left()

    def dump(self) -> str:
        logs = "\n".join(f"----- {n.node_id} on {n.host.name} ({n.host.address}), exit {n.code}\n"
                         f"{n.log.read_text(errors='replace')[-8000:]}" for n in self.nodes)
        return f"\n{logs}\nstop marker: {self.stop_marker()}"

    # -- faults and ending -------------------------------------------------------------------
    def kill9(self, rank: int) -> None:
        """SIGKILL node ``rank``'s bootstrap itself (``ip netns exec`` exec'd it: same pid)."""
        os.kill(self.nodes[rank].proc.pid, signal.SIGKILL)

    def close(self) -> None:
        for n in self.nodes:
            if n.proc.poll() is None:
                try:
                    os.killpg(n.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            n.proc.wait()


def reason_of(last_line: str) -> str:
    """The reason part of a node's last line (``<node> stopped: cluster failed; exit 1; reason: …``)."""
    return last_line.split("reason:", 1)[1] if "reason:" in last_line else ""
