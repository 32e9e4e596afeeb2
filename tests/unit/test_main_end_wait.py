"""MAIN's end waits on the channel only for nodes that can still hear it (issue 26, item 4).

A roster worker that said it will join MAIN's channel (its config's ``extra.channel``) and has not
when MAIN announces the outcome may still join and hear it; MAIN gives it a bounded moment. But a
worker that learnt the outcome from the work dir and stopped (its state file says so), one that
never said it would join, or one that was lost, is done: MAIN must not wait for it. These drive the
race deterministically on MAIN's real Control and channel server: the grace is made an hour, so a
close that waited for a done node would hang (the thread join below is a hang guard, never a
measurement).
"""

from __future__ import annotations

import secrets
import threading
from types import SimpleNamespace

import pytest

from fsm_cluster.clock import SystemClock
from fsm_cluster.wire import control as control_mod
from fsm_cluster.wire.channel import ChannelClient, Register
from fsm_cluster.wire.control import CHANNEL_KEY, Control
from fsm_cluster.wire.models import NodeState, RosterEntry, StopMarker
from fsm_cluster.wire.workdir import WorkDir

LIFE = "life1"
HANG_GUARD = 60.0  # s: a close still waiting then waited for a node that was done


def _main(tmp_path, monkeypatch, *, joins: dict[str, bool]):
    """MAIN's Control serving its channel; the roster: MAIN + one worker per ``joins`` entry (True:
    it said it will join). Returns (control, workdir, listings: a list each look appends to)."""
    monkeypatch.setattr(control_mod, "JOIN_GRACE", 3600.0)
    wd = WorkDir(f"file://{tmp_path}/wd", "c")
    listings: list[threading.Event] = []
    real = wd.listing

    def listing(*a, **k):
        out = real(*a, **k)
        listings.append(threading.Event())
        return out

    wd.listing = listing
    roster = [RosterEntry(node="MAIN", mode="MAIN", run_id="main", rank=0, ip="127.0.0.1")] + [
        RosterEntry(node=n, mode="WORKER", run_id=n.split("_")[1], rank=i + 1, ip="127.0.0.1")
        for i, n in enumerate(joins)]
    workers = {n: SimpleNamespace(legacy=False, extra={CHANNEL_KEY: True} if j else {}) for n, j in joins.items()}
    rendezvous = SimpleNamespace(life=LIFE, roster=roster, workers=workers, belongs_here=lambda m: True)
    settings = SimpleNamespace(control=True, cluster_secret=secrets.token_hex(16), control_port=0,
                               heartbeat_interval=10.0, heartbeat_timeout=7200.0,
                               worker_count=len(joins), ps_count=0)
    me = SimpleNamespace(node="MAIN", mode="MAIN", run_id="main", ip="127.0.0.1", host="h")
    c = Control(me, settings, SystemClock(), wd, rendezvous, dispatch=lambda e: None, wake=lambda: None,
                look=lambda listing: None, listing=dict, quiet=lambda *a: None)
    assert c.serve()
    c.announce(StopMarker(outcome="complete", reason="code completed", exit_code=0, node="MAIN", life=LIFE))
    return c, wd, listings


def _state(wd, node: str, state: str) -> None:
    wd.write(f"{node}_state.json", NodeState(node=node, mode="WORKER", run_id=node.split("_")[1], state=state,
                                             heartbeat=1, life=LIFE))


def _close_in_thread(c) -> threading.Thread:
    t = threading.Thread(target=c.close, daemon=True)
    t.start()
    return t


def _until_looked(listings, n: int = 1) -> None:
    for _ in range(int(HANG_GUARD * 100)):
        if len(listings) >= n:
            return
        threading.Event().wait(0.01)
    raise AssertionError("MAIN never looked at the work dir")


def _closed(t: threading.Thread) -> None:
    t.join(HANG_GUARD)
    assert not t.is_alive(), "MAIN's end waited for a node that was done"


def test_a_worker_that_stopped_without_joining_is_not_waited_for(tmp_path, monkeypatch):
    c, wd, listings = _main(tmp_path, monkeypatch, joins={"WORKER_w1": True})
    _state(wd, "WORKER_w1", "stopped")  # it learnt the outcome from the work dir and stopped
    c.close()  # (returns at once: the first look finds it stopped)
    assert c.server is None and len(listings) == 1


def test_a_worker_that_stops_while_main_waits_ends_the_wait(tmp_path, monkeypatch):
    """The race of issue 26: the worker stops just after MAIN began its end."""
    c, wd, listings = _main(tmp_path, monkeypatch, joins={"WORKER_w1": True, "WORKER_w2": True})
    _state(wd, "WORKER_w1", "running")
    _state(wd, "WORKER_w2", "stopped")
    t = _close_in_thread(c)
    _until_looked(listings)
    assert t.is_alive()  # WORKER_w1 may still join and hear it: MAIN waits
    _state(wd, "WORKER_w1", "stopped")
    _closed(t)


def test_a_worker_of_another_life_that_stopped_is_still_waited_for(tmp_path, monkeypatch):
    c, wd, listings = _main(tmp_path, monkeypatch, joins={"WORKER_w1": True})
    wd.write("WORKER_w1_state.json", NodeState(node="WORKER_w1", mode="WORKER", run_id="w1", state="stopped",
                                               heartbeat=1, life="an-older-life"))
    t = _close_in_thread(c)
    _until_looked(listings, 2)
    assert t.is_alive()
    _state(wd, "WORKER_w1", "tearable")  # this life's, ending: it knows the outcome
    _closed(t)


def test_a_worker_that_joins_while_main_waits_hears_the_outcome_and_ends_the_wait(tmp_path, monkeypatch):
    c, wd, listings = _main(tmp_path, monkeypatch, joins={"WORKER_w1": True})
    host, port = c.server.address
    t = _close_in_thread(c)
    _until_looked(listings)
    heard = threading.Event()
    client = ChannelClient(host, port, c.settings.cluster_secret.encode(),
                           Register(node="WORKER_w1", mode="WORKER", run_id="w1", ip="127.0.0.1", life=LIFE),
                           on_outcome=lambda m: heard.set())
    try:
        client.connect()
        _closed(t)
        assert heard.wait(HANG_GUARD)
    finally:
        client.close()


@pytest.mark.parametrize("how", ["never said it would join", "lost"])
def test_other_done_workers_are_not_waited_for(tmp_path, monkeypatch, how):
    c, wd, listings = _main(tmp_path, monkeypatch, joins={"WORKER_w1": how == "lost"})
    if how == "lost":
        c._on_lost("WORKER_w1", "connection closed (the process ended)")
    _closed(_close_in_thread(c))
    assert listings == []  # nobody to wait for: not even a look


def test_a_worker_that_never_joined_checks_out_as_it_ends_and_main_stops_waiting(tmp_path, monkeypatch):
    """The worker's side of the race: it learnt the outcome from the work dir before it joined;
    as it ends it joins MAIN's channel and leaves at once, which ends MAIN's wait (its state file is
    left saying running here: the check-out alone ends it)."""
    c, wd, listings = _main(tmp_path, monkeypatch, joins={"WORKER_w1": True})
    host, port = c.server.address
    wd.write("MAIN_state.json", NodeState(node="MAIN", mode="MAIN", run_id="main", state="stopped", heartbeat=1,
                                          life=LIFE, control=f"{host}:{port}", stop=c.outcome.to_marker()))
    _state(wd, "WORKER_w1", "running")
    me = SimpleNamespace(node="WORKER_w1", mode="WORKER", run_id="w1", ip="127.0.0.1", host="h")
    rendezvous = SimpleNamespace(life="", roster=[], workers={}, stale_life=None,
                                 registration=SimpleNamespace(extra={CHANNEL_KEY: True}))
    settings = SimpleNamespace(**{**vars(c.settings), "rank": 1})
    worker = Control(me, settings, SystemClock(), wd, rendezvous, dispatch=lambda e: None, wake=lambda: None,
                     look=lambda listing: None, listing=dict, quiet=lambda *a: None)
    t = _close_in_thread(c)
    _until_looked(listings)
    assert t.is_alive()
    worker.close()
    _closed(t)
    assert "WORKER_w1" in c.registered
