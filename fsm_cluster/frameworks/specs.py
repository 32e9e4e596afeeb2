"""Spec builders of the engine cluster kinds: what each adds to a job definition (on the laptop).

Registered through the entry-point group ``fsm_cluster.spec_builders`` (``DASK =
"fsm_cluster.frameworks.specs:DaskSpecBuilder"`` …), so building a job definition never imports an
engine. Each builder

* states where the entry script runs (``OCI__RUN_ON``) — unless the spec's ``runOn`` says so;
* checks the framework's own variables (ports, process counts, the TensorFlow topology) and turns
  a bad value into one SpecError naming the variable, before any job run starts.

Variables the user set (cluster ``config.env`` or runtime ``env``) always win.
"""

from __future__ import annotations

from typing import Mapping

from ..errors import SpecError
from ..jobspec import AbstractFrameworkSpecBuilder

OCI__RUN_ON = "OCI__RUN_ON"


class EngineSpecBuilder(AbstractFrameworkSpecBuilder):
    """Base: ``RUN_ON`` (None: leave it), ``PORTS`` and ``COUNTS`` (variables to check)."""

    KIND = ""
    RUN_ON: str | None = "main"
    PORTS: tuple[str, ...] = ()
    COUNTS: tuple[str, ...] = ()

    # -- spec access -----------------------------------------------------------------------------
    def _cluster(self) -> dict:
        return ((self.config.get("spec") or {}).get("cluster") or {}).get("spec") or {}

    def _replicas(self, group: str) -> int:
        g = self._cluster().get(group) or {}
        n = g.get("replicas")
        return (1 if group == "main" else 0) if n is None else int(n)

    def _user_env(self) -> dict[str, str]:
        """Every variable the spec sets (cluster, node groups, runtime), by name."""
        spec = self.config.get("spec") or {}
        cluster = self._cluster()
        lists = [(cluster.get("config") or {}).get("env"),
                 ((spec.get("runtime") or {}).get("spec") or {}).get("env")]
        lists += [((cluster.get(g) or {}).get("config") or {}).get("env") for g in ("main", "worker", "ps")]
        out = {}
        for items in lists:
            for e in items or []:
                if isinstance(e, Mapping) and "name" in e:
                    out[str(e["name"])] = "" if e.get("value") is None else str(e["value"])
        return out

    def fail(self, message: str) -> None:
        raise SpecError(f"{self.KIND} cluster: {message}")

    # -- checks ----------------------------------------------------------------------------------
    def check(self, env: dict[str, str]) -> None:
        for name in self.PORTS:
            v = env.get(name, "").strip().lower()
            if v and v not in ("0", "auto") and not (v.isdigit() and 0 < int(v) < 65536):
                self.fail(f"{name}: not a port number (1-65535, or 0/auto for a free one): {env[name]!r}")
        for name in self.COUNTS:
            v = env.get(name, "").strip()
            if v and not (v.isdigit() and int(v) >= 1):
                self.fail(f"{name}: must be a whole number >= 1 (got {v!r})")

    def framework_env(self, env: dict[str, str]) -> dict[str, str]:
        """Variables this framework adds (before the user's win)."""
        run_on = self.run_on()
        if run_on and "runOn" not in self._cluster() and "run_on" not in self._cluster():
            return {OCI__RUN_ON: run_on}
        return {}

    def run_on(self) -> str | None:
        return self.RUN_ON

    def _add_framework_envs(self, new_env_vars: list) -> list:
        env = self._user_env()
        self.check(env)
        return new_env_vars + [{"name": k, "value": v} for k, v in self.framework_env(env).items()]


class DaskSpecBuilder(EngineSpecBuilder):
    KIND = "DASK"
    PORTS = ("OCI__DASK_SCHEDULER_PORT", "OCI__DASK_DASHBOARD_PORT")


class PyTorchSpecBuilder(EngineSpecBuilder):
    """Every node runs torchrun: the code runs everywhere."""

    KIND = "PYTORCH"
    RUN_ON = "all"
    PORTS = ("MASTER_PORT",)
    COUNTS = ("OCI__PYTORCH_NPROC_PER_NODE",)


class TensorFlowSpecBuilder(EngineSpecBuilder):
    """MultiWorkerMirroredStrategy (no PS): every worker runs the script; ParameterServerStrategy:
    the chief (MAIN) only, and it needs at least one worker."""

    KIND = "TENSORFLOW"
    accepts_ps = True
    PORTS = ("OCI__TF_PORT",)

    def run_on(self) -> str:
        return "main" if self._replicas("ps") > 0 else "all"

    def check(self, env: dict[str, str]) -> None:
        super().check(env)
        if self._replicas("ps") > 0 and self._replicas("worker") < 1:
            self.fail("ParameterServerStrategy (ps replicas > 0) needs at least one worker")


class HorovodSpecBuilder(EngineSpecBuilder):
    KIND = "HOROVOD"
    COUNTS = ("OCI__HOROVOD_SLOTS", "OCI__HOROVOD_NP", "OCI__HOROVOD_MIN_NP", "OCI__HOROVOD_MAX_NP")

    def check(self, env: dict[str, str]) -> None:
        super().check(env)
        slots = int(env.get("OCI__HOROVOD_SLOTS") or 1)
        total = slots * (1 + self._replicas("worker"))
        np_ = int(env.get("OCI__HOROVOD_NP") or total)
        lo = int(env.get("OCI__HOROVOD_MIN_NP") or np_)
        hi = int(env.get("OCI__HOROVOD_MAX_NP") or max(np_, total))
        if not lo <= np_ <= hi:
            self.fail(f"needs OCI__HOROVOD_MIN_NP <= OCI__HOROVOD_NP <= OCI__HOROVOD_MAX_NP (got {lo}, {np_}, {hi})")


class RaySpecBuilder(EngineSpecBuilder):
    KIND = "RAY"
    PORTS = ("OCI__RAY_PORT",)


BUILDERS = {b.KIND: b for b in (DaskSpecBuilder, PyTorchSpecBuilder, TensorFlowSpecBuilder,
                                HorovodSpecBuilder, RaySpecBuilder)}
