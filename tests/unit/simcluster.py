"""Build simulated clusters (real provider + protocol code, memory:// work dir, VirtualClock)."""

from __future__ import annotations

import uuid

import fsspec

from fsm_cluster.env import Settings
from fsm_cluster.runner import drive
from fsm_cluster.testing import SimulatedCodeProvider, VirtualClock


def node_env(mode: str, rank: int, workers: int, ps: int = 0, work_dir: str = "", cluster: str = "c1",
             **extra) -> dict[str, str]:
    env = {
        "OCI__MODE": mode,
        "OCI__WORK_DIR": work_dir,
        "JOB_OCID": cluster,
        "JOB_RUN_OCID": "main" if mode == "MAIN" else f"{mode.lower()}{rank}",
        "RANK": str(rank),
        "OCI__WORKER_COUNT": str(workers),
        "OCI__PS_COUNT": str(ps),
        "OCI__SELF_IP": f"10.0.0.{rank + 1}",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


class SimCluster:
    def __init__(self, workers: int = 2, ps: int = 0, provider_cls=SimulatedCodeProvider, **extra):
        self.clock = VirtualClock()
        self.fs = fsspec.filesystem("memory")
        self.work_dir = f"memory://wd-{uuid.uuid4().hex[:8]}"
        self.envs = [node_env("MAIN", 0, workers, ps, self.work_dir, **extra)]
        self.envs += [node_env("WORKER", i, workers, ps, self.work_dir, **extra) for i in range(1, workers + 1)]
        self.envs += [node_env("PS", workers + i, workers, ps, self.work_dir, **extra) for i in range(1, ps + 1)]
        self.provider_cls = provider_cls
        self.providers = []

    def build(self, env: dict, **provider_kwargs):
        settings = Settings.from_env(env)
        p = self.provider_cls(settings=settings, clock=self.clock, environ=dict(env), **provider_kwargs)
        self.providers.append(p)
        return p

    def run(self, *, start_at=None, extra_fns=(), **provider_kwargs) -> list:
        nodes = [self.build(e, **provider_kwargs) for e in self.envs]
        fns = [lambda p=p: drive(p) for p in nodes] + list(extra_fns)
        return self.clock.run(fns, start_at=start_at)

    @property
    def workdir(self):
        return self.providers[0].workdir
