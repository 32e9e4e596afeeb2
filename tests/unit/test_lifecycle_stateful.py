"""Hypothesis stateful test of the node lifecycle: random event sequences on a real provider
(FakeClock, ``memory://`` work dir) — any trigger from any state, hooks that break, signals, stop
markers appearing, failures — never reach an undeclared state, and every life, ended the way the
runner ends lives, reaches ``stopped`` with an exit code that says how it ended."""

from __future__ import annotations

import uuid

import fsspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from transitions import MachineError

from fsm_cluster.clock import FakeClock
from fsm_cluster.env import Settings
from fsm_cluster.errors import (
    CodeFailed,
    NodeFailure,
    RestartRequested,
    StopRequested,
    StorageError,
)
from fsm_cluster.node.lifecycle import STATES, TRANSITIONS, LifeEnded, mode_states
from fsm_cluster.testing import SimulatedCodeProvider, node_env
from fsm_cluster.wire.models import RestartRecord, StopMarker

TRIGGERS = sorted({t["trigger"] for t in TRANSITIONS})
HOOKS = ["begin_life", "fetch_code", "check_entry_script", "setup_configuration", "export_main_configuration",
         "start", "run_code", "sync",
         "publish_completion", "execution_failed", "stop", "final_sync", "flush_state", "end_code"]
ERRORS = {
    "node": lambda h: NodeFailure(f"{h} broke"),
    "storage": lambda h: StorageError(f"work dir: {h} still failing after 1 s of retries"),
    "bug": lambda h: RuntimeError(f"{h} has a bug"),
    "stop": lambda h: StopRequested(f"stop during {h}", 0, "stopped", "operator"),
}


class NodeLife(RuleBasedStateMachine):
    """One node's life; the runner's own handlers end it (as ``drive`` does)."""

    @initialize(mode=st.sampled_from(["MAIN", "WORKER", "PS"]), ephemeral=st.booleans(),
                code_exit=st.sampled_from([0, 0, 3]))
    def boot(self, mode, ephemeral, code_exit):
        env = node_env(mode, 0 if mode == "MAIN" else 1, workers=0, work_dir="memory://life",
                       cluster=f"life-{uuid.uuid4().hex[:8]}", OCI__EPHEMERAL=str(int(ephemeral)),
                       OCI__HEARTBEAT_INTERVAL="1", OCI__HEARTBEAT_TIMEOUT="5", OCI__TIMEOUT="3",
                       OCI__TEARDOWN_GRACE="0", OCI__RESTART_POLICY="OnFailure", OCI__BACKOFF_LIMIT="2")
        self.clock = FakeClock()
        fs = fsspec.filesystem("memory")
        self.p = SimulatedCodeProvider(settings=Settings.from_env(env), clock=self.clock, fs=fs,
                                       environ=dict(env), code_seconds=1.0, code_exit=code_exit)
        self.mode = mode
        self.ended = False  # the runner took over (failure / stop): only the teardown remains
        self.ending = ""

    # -- events ----------------------------------------------------------------------------------
    def _end(self, exc: BaseException) -> None:
        """What ``drive`` does with an exception escaping the life."""
        self.p.conclude(exc)
        self.ended = True
        self.ending = type(exc).__name__

    @precondition(lambda self: not self.ended)
    @rule(trigger=st.sampled_from(TRIGGERS))
    def fire(self, trigger):
        before = self.p.state
        try:
            getattr(self.p.lifecycle, trigger)()
        except MachineError:
            assert self.p.state == before  # an event the state does not take changes nothing
        except LifeEnded as e:  # a hook raised: the machine's exception path ended the life
            self.ended = True
            self.ending = type(e.__cause__).__name__

    @precondition(lambda self: not self.ended)
    @rule(hook=st.sampled_from(HOOKS), kind=st.sampled_from(sorted(ERRORS)))
    def break_hook(self, hook, kind):
        exc = ERRORS[kind](hook)

        def broken(*_a, **_k):
            raise exc

        setattr(self.p, hook, broken)  # transitions looks callbacks up by name on the model

    @precondition(lambda self: not self.ended)
    @rule(seconds=st.floats(0, 10))
    def time_passes(self, seconds):
        self.clock.advance(seconds)
        try:
            self.p.tick()
        except Exception as e:  # noqa: BLE001 - a peer's silence, a marker, a broken store
            self._end(e)

    @precondition(lambda self: not self.ended)
    @rule(outcome=st.sampled_from(["complete", "failed", "stopped"]))
    def stop_marker_appears(self, outcome):
        self.p.workdir.write_stop(StopMarker(outcome=outcome, node="WORKER_x", reason="elsewhere",
                                             exit_code=0 if outcome != "failed" else 4))
        self.p.watch.next_watch = self.clock.now()
        self.time_passes(0)

    @precondition(lambda self: not self.ended and self.p.state in ("running", "complete"))
    @rule(code=st.sampled_from([1, 3, 137, -9]))
    def code_fails(self, code):
        """The node's code fails under OnFailure (backoffLimit 2): MAIN restarts within its budget,
        then fails saying so; a worker off MAIN's channel fails as before."""
        try:
            self.p.recover_from(CodeFailed(f"entry script exited with code {code}", self.p.node_id, code))
        except Exception as e:  # noqa: BLE001 - what drive() does with it
            self._end(e)

    @precondition(lambda self: not self.ended and self.mode != "MAIN" and self.p.state in ("running", "complete"))
    @rule()
    def main_restarts(self):
        """MAIN told this worker about a restart (within MAIN's budget)."""
        count = len(self.p.restarts) + 1
        if count > 2:
            return
        try:
            self.p.recover_from(RestartRequested(RestartRecord(count=count, node="MAIN", reason="test")))
        except Exception as e:  # noqa: BLE001
            self._end(e)

    @precondition(lambda self: not self.ended)
    @rule(signame=st.sampled_from(["SIGTERM", "SIGINT"]))
    def signal(self, signame):
        code = 143 if signame == "SIGTERM" else 130
        self._end(StopRequested(f"{self.p.node_id} received {signame}", code, "stopped", self.p.node_id))

    @precondition(lambda self: self.ended)
    @rule(trigger=st.sampled_from([t for t in TRIGGERS if t != "finish"]))
    def late_event(self, trigger):
        """Events arriving while the node tears down (a late code exit, a late stop request...)
        do not move it: only ``finish`` takes it from ``tearable`` to ``stopped``."""
        before = self.p.state
        try:
            getattr(self.p.lifecycle, trigger)()
        except MachineError:
            pass
        assert self.p.state == before

    # -- what must always hold -------------------------------------------------------------------
    @invariant()
    def state_is_declared(self):
        if hasattr(self, "p"):
            assert self.p.state in STATES
            assert self.p.state in mode_states(self.mode), (self.mode, self.p.state)
            if self.ended:
                assert self.p.state in ("tearable", "stopped"), self.p.state
            assert len(self.p.restarts) <= self.p.settings.backoff_limit  # a restart never exceeds the budget

    def teardown(self):
        if not hasattr(self, "p"):
            return
        if not self.ended:  # the life ends by a stop request if nothing else ended it
            self._end(StopRequested("end of the test", 0, "stopped", self.p.node_id))
        code = self.p.finish_life()
        assert self.p.state == "stopped", self.p.state
        assert isinstance(code, int) and code >= 0
        if self.ending in ("NodeFailure", "StorageError", "RuntimeError"):
            assert code != 0, (self.ending, self.p.reason)
        marker = self.p.workdir.read_stop()
        if marker is not None and marker.outcome == "failed":
            assert code != 0  # a failed cluster never exits 0 on any node


NodeLife.TestCase.settings = settings(max_examples=150, stateful_step_count=25, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
TestNodeLife = NodeLife.TestCase
