"""Start real `fsm-cluster run` processes sharing a temporary work dir."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def base_env(work_dir: str, cluster: str, workers: int, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "JOB_", "RANK"))}
    env.update({
        "OCI__WORK_DIR": work_dir,
        "JOB_OCID": cluster,
        "OCI__WORKER_COUNT": str(workers),
        "OCI__SELF_IP": "127.0.0.1",
        "OCI__HEARTBEAT_INTERVAL": "0.3",
        "OCI__HEARTBEAT_TIMEOUT": "5",
        "OCI__TEARDOWN_GRACE": "2",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class LocalNodes:
    tmp: Path
    workers: int = 2
    extra: dict = field(default_factory=dict)
    procs: list = field(default_factory=list)
    logs: list = field(default_factory=list)
    launcher: list = field(default_factory=list)  # a command the nodes run under (e.g. setpriv …)

    def __post_init__(self):
        self.work_dir = str(self.tmp / "wd")
        self.cluster = "cluster1"

    def node_env(self, mode: str, rank: int) -> dict[str, str]:
        env = base_env(self.work_dir, self.cluster, self.workers, **self.extra)
        env.update({"OCI__MODE": mode, "RANK": str(rank),
                    "JOB_RUN_OCID": "main" if mode == "MAIN" else f"w{rank}"})
        return env

    def start(self, modes=None):
        modes = modes or ["MAIN"] + ["WORKER"] * self.workers
        for mode in modes:
            self.start_node(mode)
        return self

    def start_node(self, mode: str, rank: int | None = None, **env):
        """Start a node: the next rank's (in rank order: MAIN first), or ``rank``'s again with
        ``env`` on top (e.g. a replacement: JOB_RUN_OCID, OCI__REPLACES). Its log is node<i>.log,
        i its index in ``procs``."""
        index = len(self.procs)
        log = open(self.tmp / f"node{index}.log", "wb")
        self.logs.append(self.tmp / f"node{index}.log")
        self.procs.append(subprocess.Popen([*self.launcher, sys.executable, "-m", "fsm_cluster", "run"],
                                           env={**self.node_env(mode, index if rank is None else rank),
                                                **{k: str(v) for k, v in env.items()}},
                                           stdout=log, stderr=subprocess.STDOUT))
        return self

    def wait(self, timeout: float = 60) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"node did not exit within {timeout} s:\n{self.dump()}")
        return codes

    def wait_for_marks(self, folder: Path, count: int, guard: float = 60) -> None:
        """Until ``count`` files are in ``folder`` (the entry scripts mark that they run), every node
        still alive; a hang guard, not a timing assertion."""
        deadline = time.monotonic() + guard
        while len(list(Path(folder).iterdir())) < count:
            assert time.monotonic() < deadline and all(p.poll() is None for p in self.procs), self.dump()
            time.sleep(0.05)

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()

    def last_line(self, i: int) -> str:
        lines = [ln for ln in self.logs[i].read_text().splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def dump(self) -> str:
        return "\n".join(f"--- node {i}\n{p.read_text()}" for i, p in enumerate(self.logs))

    def state_dir(self) -> Path:
        return Path(self.work_dir) / self.cluster
