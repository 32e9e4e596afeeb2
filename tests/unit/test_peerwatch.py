"""PeerWatch: liveness by fingerprints that change, on the watcher's own clock."""

from __future__ import annotations

import json

from fsm_cluster.wire.peerwatch import EXPECTED, PeerWatch


def test_a_changing_fingerprint_is_alive_a_frozen_one_goes_silent():
    w = PeerWatch()
    assert w.note("a", (1,), 0.0) and w.note("b", (1,), 0.0)
    assert not w.note("a", (1,), 5.0)  # unchanged
    assert w.note("b", (2,), 5.0)
    assert w.silent(11.0, timeout=10) == [("a", (1,), 11.0)]
    assert w.quiet_for("b", 11.0) == 6.0 and w.quiet_for("nobody", 11.0) is None


def test_an_expected_peer_that_never_appears_goes_silent():
    w = PeerWatch()
    w.expect("MAIN_state.json", 100.0)
    w.expect("MAIN_state.json", 150.0)  # expecting again does not reset the clock
    assert w.silent(161.0, timeout=60) == [("MAIN_state.json", EXPECTED, 61.0)]


def test_the_watchers_own_blind_time_is_credited_to_every_peer():
    w = PeerWatch()
    w.note("a", 1, 0.0)
    assert w.credit_blind_time(0.0, interval=1) == 0.0
    assert w.credit_blind_time(1.0, interval=1) == 0.0  # a normal gap
    assert w.credit_blind_time(9.0, interval=1) == 7.0  # looked 8 s later: 7 s were blindness
    assert w.quiet_for("a", 9.0) == 2.0


def test_the_watch_survives_a_round_trip_through_json():
    w = PeerWatch()
    w.note("a", ["x", 1], 3.0)
    again = PeerWatch.from_json(json.loads(json.dumps(w.to_json())))
    assert not again.note("a", ["x", 1], 4.0) and again.quiet_for("a", 4.0) == 1.0
