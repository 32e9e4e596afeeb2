"""An engine's own waits (its daemons, a port, its scheduler) poll at the engine's pace, not the
heartbeat's: at the production interval (10 s) the node's default wait backs off to 5-10 s between
looks, so an engine that formed 3 s after MAIN started it was seen up to ~2 s late (2.56 s gaps
by then) and later ones up to an interval late (VirtualClock + memory://, real provider and
protocol code)."""

from __future__ import annotations

from fsm_cluster.frameworks._engine import ENGINE_POLL, EngineProvider
from fsm_cluster.testing import SimulatedCodeProvider

from .simcluster import SimCluster

FORMS_IN = 3.0  # s after MAIN started its engine


class EngineFormingIn3s(EngineProvider, SimulatedCodeProvider):
    """MAIN's engine is up FORMS_IN s after ``start_main``; ``engine_ready`` waits for it with the
    node's own ``wait_until`` (as the Dask and Ray providers do)."""

    KIND = "COMMAND"
    up_at = None
    seen_at = None

    def start_main(self) -> None:
        self.up_at = self.clock.now() + FORMS_IN

    def engine_ready(self) -> None:
        self.wait_until(lambda: self.clock.now() >= self.up_at, self.time_out, "the engine")
        self.seen_at = self.clock.now()


def test_mains_engine_wait_sees_the_engine_within_the_engine_poll_at_production_heartbeats():
    c = SimCluster(workers=2, provider_cls=EngineFormingIn3s, OCI__HEARTBEAT_INTERVAL=10,
                   OCI__HEARTBEAT_TIMEOUT=60)
    assert c.run(code_seconds=1) == [0, 0, 0]
    main = c.providers[0]
    assert main.up_at is not None and main.seen_at is not None
    assert main.seen_at - main.up_at <= ENGINE_POLL + 1e-6  # before: 5.1 s after start, 2.1 s late
    assert not main._engine_waits  # formation's and the watch's waits keep their own pace


def test_a_wait_outside_the_engine_hooks_keeps_the_nodes_backoff(monkeypatch):
    seen = []
    monkeypatch.setattr(SimulatedCodeProvider, "wait_until",
                        lambda self, predicate, timeout, what, backoff=None: seen.append(backoff))
    p = EngineFormingIn3s.__new__(EngineFormingIn3s)
    p.wait_until(lambda: True, 1, "formation")
    with p.engine_waits():
        p.wait_until(lambda: True, 1, "the engine")
    assert seen[0] is None and seen[1].cap == ENGINE_POLL
