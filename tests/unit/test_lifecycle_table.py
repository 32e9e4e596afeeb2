"""Every transition and guard of the table, fired on a provider whose hooks record their calls."""

from __future__ import annotations

import pytest
from transitions import MachineError

from fsm_cluster.clock import FakeClock
from fsm_cluster.env import Settings
from fsm_cluster.node.lifecycle import (
    FINAL_STATES,
    LIVE_STATES,
    STATES,
    TRANSITIONS,
    mode_states,
    mode_transitions,
)
from fsm_cluster.provider import ClusterProvider

HOOKS = ["begin_life", "fetch_code", "check_entry_script", "setup_configuration", "export_main_configuration", "start", "run_code", "sync",
         "publish_completion", "execution_failed", "stop", "end_children", "final_sync", "end_code"]


class RecordingProvider(ClusterProvider):
    """Hooks record their calls and do nothing else; ``tearable_answer`` drives the guard."""

    tearable_answer = True

    def __init__(self, mode: str):
        env = {"OCI__MODE": mode, "OCI__WORK_DIR": "memory://table", "OCI__SELF_IP": "127.0.0.1",
               "JOB_RUN_OCID": "r1"}
        super().__init__(settings=Settings.from_env(env), clock=FakeClock(), environ=env)
        self.calls: list[str] = []

    def flush_state(self):  # the table test checks hooks, not storage
        self.calls.append("flush_state")

    def tearable(self):
        return self.tearable_answer


for _hook in HOOKS:
    setattr(RecordingProvider, _hook, lambda self, _h=_hook: self.calls.append(_h))


def _cases():
    for t in TRANSITIONS:
        sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
        for src in sources:
            for mode in ("MAIN", "WORKER", "PS"):
                yield pytest.param(t, src, mode, id=f"{t['trigger']}:{src}->{t['dest']}:{mode}")


def _listify(v):
    return [] if v is None else (v if isinstance(v, list) else [v])


@pytest.mark.parametrize("t,src,mode", list(_cases()))
def test_every_edge(t, src, mode):
    p = RecordingProvider(mode)
    p.lifecycle.set(src)
    guard_main = t.get("conditions") == "is_main_node" or t.get("unless") == "is_main_node"
    allowed = True
    if t.get("conditions") == "is_main_node":
        allowed = mode == "MAIN"
    if t.get("unless") == "is_main_node":
        allowed = mode != "MAIN"
    if t.get("conditions") == "taking_restart":
        p.ledger.taking = object()  # a restart MAIN decided (see test_recover_needs_a_decided_restart)
    fired = getattr(p.lifecycle, t["trigger"])()
    if guard_main and not allowed:
        # The sibling edge with the opposite guard took the trigger instead.
        assert fired is True and p.state != t["dest"]
        return
    assert fired is True
    assert p.state == t["dest"]
    expected = [h for h in _listify(t.get("before")) + _listify(t.get("after"))]
    assert [c for c in p.calls if c != "flush_state"] == expected


@pytest.mark.parametrize("src", ["complete", "failed"])
def test_teardown_guard_blocks_until_tearable(src):
    p = RecordingProvider("MAIN")
    p.tearable_answer = False
    p.lifecycle.set(src)
    assert p.lifecycle.teardown() is False and p.state == src
    p.tearable_answer = True
    assert p.lifecycle.teardown() is True and p.state == "tearable"


@pytest.mark.parametrize("state", STATES)
def test_undeclared_edges_are_refused(state):
    declared = {t["trigger"] for t in TRANSITIONS
                if state in (t["source"] if isinstance(t["source"], list) else [t["source"]])}
    for trigger in {t["trigger"] for t in TRANSITIONS} - declared:
        p = RecordingProvider("MAIN")
        p.lifecycle.set(state)
        with pytest.raises(MachineError):
            getattr(p.lifecycle, trigger)()


def test_stopped_is_final_and_every_live_state_can_fail_or_stop():
    assert FINAL_STATES == ["stopped"]
    for t in TRANSITIONS:
        srcs = t["source"] if isinstance(t["source"], list) else [t["source"]]
        assert "stopped" not in srcs
    fail = next(t for t in TRANSITIONS if t["trigger"] == "fail")
    stop = next(t for t in TRANSITIONS if t["trigger"] == "request_stop")
    assert set(LIVE_STATES) <= set(fail["source"])
    assert set(LIVE_STATES) <= set(stop["source"])


def test_per_mode_views():
    assert "waiting_for_main" not in mode_states("MAIN")
    assert "waiting_for_main" in mode_states("WORKER")
    main_edges = {(t["trigger"], t["dest"]) for t in mode_transitions("MAIN")}
    assert ("configured", "ready") in main_edges and ("configured", "waiting_for_main") not in main_edges
    ps_edges = {(t["trigger"], t["dest"]) for t in mode_transitions("PS")}
    assert ("main_ready", "ready") in ps_edges and ("configured", "ready") not in ps_edges


def test_transitions_are_logged_with_node_source_destination_reason(caplog):
    caplog.set_level("INFO", logger="fsm_cluster.node.record")
    p = RecordingProvider("WORKER")
    p.end_of_life.reason = "because"
    p.lifecycle.configure()
    assert any("node=WORKER_r1 init -> configuring reason=because" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("src", ["running", "complete"])
def test_recover_needs_a_decided_restart(src):
    """``recover``'s guard (taking_restart): without a restart MAIN decided within its budget, the
    node stays where it is and its code is not ended."""
    p = RecordingProvider("WORKER")
    p.lifecycle.set(src)
    assert p.lifecycle.recover() is False and p.state == src and "end_code" not in p.calls
