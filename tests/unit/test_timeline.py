"""The timeline: every node's recorded transitions drawn as spans, one lane per node."""

from __future__ import annotations

import pytest

from fsm_cluster.models import NodeState, Transition
from fsm_cluster.status import ClusterView
from fsm_cluster.timeline import COLOURS, life_of, spans_of

from .simcluster import SimCluster

matplotlib = pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install 'fsm_cluster[bench]'")


def test_a_nodes_spans_run_from_its_start_through_each_transition_to_its_last_write():
    st = NodeState(node="MAIN", mode="MAIN", run_id="m", state="stopped", heartbeat=3, started_wall=100.0,
                   state_wall=109.0, history=[Transition(state="configuring", wall=101.0),
                                              Transition(state="running", wall=102.5),
                                              Transition(state="stopped", wall=108.0)])
    assert spans_of(st) == [("init", 100.0, 101.0), ("configuring", 101.0, 102.5), ("running", 102.5, 108.0),
                            ("stopped", 108.0, 109.0)]


def _drawn(fig) -> dict[str, list[tuple[float, float]]]:
    """label → the x ranges of the bars matplotlib drew for it."""
    out: dict[str, list[tuple[float, float]]] = {}
    ax = fig.axes[0]
    for coll in ax.collections:
        label = coll.get_label()
        if ":" not in label:
            continue
        for path in coll.get_paths():
            xs = [v[0] for v in path.vertices]
            out.setdefault(label, []).append((min(xs), max(xs)))
    return out


@pytest.mark.parametrize("workers, fails", [(199, False), (2, True)], ids=["200-nodes", "failed"])
def test_the_drawn_spans_are_the_recorded_transitions(tmp_path, workers, fails):
    """A simulated life (virtual time; 200 nodes, or a failed 3-node one with a restart first):
    every recorded span of every node is one bar at its place, in its state's colour."""
    extra = {"OCI__RESTART_POLICY": "OnFailure", "OCI__BACKOFF_LIMIT": "1"} if fails else {}
    c = SimCluster(workers=workers, OCI__HEARTBEAT_INTERVAL=5, OCI__RUN_ON="all", **extra)
    codes = c.run(code_seconds=30, code_exit={0: [3, 3], "default": 0} if fails else 0)  # MAIN's code fails twice
    assert set(codes) == ({1} if fails else {0})
    view = ClusterView(c.providers[0].workdir)
    view.refresh()
    life = life_of(view)
    assert len(life.lanes) == workers + 1
    if fails:
        assert [r.count for r in life.restarts] == [1] and life.first_failure is not None
        assert any(s == "recovering" for lane in life.lanes for s, _, _ in lane.spans)
    from fsm_cluster.timeline import draw

    fig = draw(life, str(tmp_path / "life.svg"))
    assert (tmp_path / "life.svg").read_text().startswith("<?xml")
    drawn = _drawn(fig)
    t0 = life.start
    for lane in life.lanes:
        for state, a, b in lane.spans:
            bars = drawn[f"{lane.node}:{state}"]
            assert any(abs(x0 - (a - t0)) < 1e-6 and abs(x1 - (a - t0) - max(b - a, 1e-3)) < 1e-6
                       for x0, x1 in bars), (lane.node, state, a, b, bars)
    assert sum(len(v) for v in drawn.values()) == sum(len(lane.spans) for lane in life.lanes)
    colours = {coll.get_label().split(":")[1]: tuple(coll.get_facecolor()[0]) for coll in fig.axes[0].collections
               if ":" in coll.get_label()}
    for state, rgba in colours.items():
        assert rgba == pytest.approx(matplotlib.colors.to_rgba(COLOURS[state]))
