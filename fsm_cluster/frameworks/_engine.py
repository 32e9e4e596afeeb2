"""The two halves every engine module fills in, tied by the engine's declared facts.

* :class:`EngineProvider` (node side) declares ``KIND``, ``supports_ps`` (parameter-server
  nodes), ``CODE_RUNS_ON`` and ``LAUNCHER``, and turns them into behaviour: one refusal of a PS
  node, one "needs an entry script", one wait for the engine before MAIN's entry script starts.
* :class:`EngineSpecBuilder` (laptop side) reads those facts from its ``PROVIDER`` and checks the
  engine's variables with the validators the node calls; a :class:`~._common.RuleError` becomes a
  SpecError at the YAML path that sets the variable.

The engine's own waits (its processes, a port, its scheduler: local checks, no storage request) poll
every :data:`ENGINE_POLL` s at most, whatever the heartbeat: the node's default wait backs off to
the heartbeat interval (10 s in production), so an engine that formed in 3 s was seen up to an
interval later. The node's heartbeat and watch still run at their own pace meanwhile.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Mapping

from ..clock import Backoff

from ..env import OCI__PS_COUNT, OCI__RUN_ON, OCI__WORKER_COUNT
from ..errors import NodeFailure
from ..provider import ClusterProvider
from ..spec.builders import AbstractFrameworkSpecBuilder, SpecFieldError
from ..spec.reading import Path
from ._common import RuleError, validate_count, validate_port

CLUSTER: Path = ("spec", "cluster", "spec")
# Variables the spec sets through fields rather than env entries: where a rule about them points.
FIELDS: dict[str, Path] = {OCI__WORKER_COUNT: CLUSTER + ("worker", "replicas"),
                           OCI__PS_COUNT: CLUSTER + ("ps", "replicas")}
ENGINE_POLL = 0.25  # s: the longest pause between two looks of an engine wait


def engine_backoff() -> Backoff:
    return Backoff(first=0.02, factor=2.0, cap=ENGINE_POLL)


class EngineProvider(ClusterProvider):
    """Base of the engine providers."""

    KIND = ""
    supports_ps = False  # whether the engine has parameter-server (PS) nodes
    CODE_RUNS_ON: str | None = None  # "main" / "all" when the launcher decides; None: OCI__RUN_ON
    LAUNCHER: str | None = None  # the launcher that runs the entry script (one is then required)
    _engine_waits = False  # inside start() / engine_ready(): waits poll at the engine's pace

    @contextmanager
    def engine_waits(self):
        """Waits inside this block without a backoff of their own poll at :func:`engine_backoff`."""
        before, self._engine_waits = self._engine_waits, True
        try:
            yield
        finally:
            self._engine_waits = before

    def wait_until(self, predicate, timeout, what: str, backoff=None):
        if backoff is None and self._engine_waits:
            backoff = engine_backoff()
        return super().wait_until(predicate, timeout, what, backoff)

    def start(self) -> None:
        with self.engine_waits():
            super().start()

    def code_runs_on(self) -> str:
        return self.CODE_RUNS_ON or super().code_runs_on()

    def start_ps(self) -> None:
        raise NodeFailure(f"{self.KIND} clusters have no PS nodes (set OCI__PS_COUNT=0)")

    def engine_ready(self) -> None:
        """MAIN, before its entry script starts: block (ticking) until the engine has formed."""

    def run_code(self) -> None:
        if self.runs_code():
            if self.LAUNCHER and not self.settings.entry_script:
                raise NodeFailure(f"{self.KIND} clusters need an entry script (OCI__ENTRY_SCRIPT) "
                                  f"for {self.LAUNCHER}")
            if self.mode == "MAIN":
                with self.engine_waits():
                    self.engine_ready()
        super().run_code()


class EngineSpecBuilder(AbstractFrameworkSpecBuilder):
    """Base: ``PROVIDER`` (its KIND and supports_ps are this builder's ``KIND`` / ``accepts_ps``),
    ``PORTS`` and ``COUNTS`` (variables checked with :func:`validate_port` / :func:`validate_count`);
    an engine adds its own rules in :meth:`check`."""

    PROVIDER: type[EngineProvider] = EngineProvider
    KIND = ""
    PORTS: tuple[str, ...] = ()
    COUNTS: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.KIND = cls.PROVIDER.KIND
        cls.accepts_ps = cls.PROVIDER.supports_ps

    # -- spec access -----------------------------------------------------------------------------
    def _cluster(self) -> dict:
        return ((self.config.get("spec") or {}).get("cluster") or {}).get("spec") or {}

    def _replicas(self, group: str) -> int:
        """Nodes of ``group`` as the spec counts them: an absent group none (MAIN: one), a group
        without ``replicas`` one."""
        g = self._cluster().get(group)
        if g is None:
            return 1 if group == "main" else 0
        n = g.get("replicas") if isinstance(g, Mapping) else None
        return 1 if n is None else int(n)

    def _user_vars(self) -> dict[str, tuple[str, Path]]:
        """Every variable the spec sets (cluster, runtime, node groups: the later wins), by name:
        its value and the YAML path of that value."""
        lists = [CLUSTER + ("config", "env"), ("spec", "runtime", "spec", "env")]
        lists += [CLUSTER + (g, "config", "env") for g in ("main", "worker", "ps")]
        out = {}
        for path in lists:
            items = self.config
            for part in path:
                items = items.get(part) if isinstance(items, Mapping) else None
            for i, e in enumerate(items or []):
                if isinstance(e, Mapping) and "name" in e:
                    value = "" if e.get("value") is None else str(e["value"])
                    out[str(e["name"])] = (value, path + (i, "value"))
        return out

    # -- checks ----------------------------------------------------------------------------------
    def check(self, env: dict[str, str]) -> None:
        """Raise RuleError when a variable breaks the engine's rules."""
        for name in self.PORTS:
            validate_port(name, env.get(name))
        for name in self.COUNTS:
            validate_count(name, env.get(name))

    def run_on(self) -> str:
        return self.PROVIDER.CODE_RUNS_ON or "main"

    def framework_env(self, env: dict[str, str]) -> dict[str, str]:
        """Variables this framework adds (before the user's win)."""
        if "runOn" not in self._cluster() and "run_on" not in self._cluster():
            return {OCI__RUN_ON: self.run_on()}
        return {}

    def _add_framework_envs(self, new_env_vars: list) -> list:
        found = self._user_vars()
        env = {name: value for name, (value, _) in found.items()}
        try:
            self.check(env)
        except RuleError as e:
            where = {**FIELDS, **{name: path for name, (_, path) in found.items()}}
            path = next((where[n] for n in e.names if n in where), CLUSTER + ("config", "env"))
            raise SpecFieldError(path, str(e)) from None
        return new_env_vars + [{"name": k, "value": v} for k, v in self.framework_env(env).items()]
