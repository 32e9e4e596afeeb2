"""The timeline: every node's recorded transitions drawn as spans, one lane per node."""

from __future__ import annotations

import pytest

from fsm_cluster.observe.status import ClusterView
from fsm_cluster.observe.timeline import COLOURS, life_of, spans_of
from fsm_cluster.wire.models import NodeState, Transition

from .simcluster import SimCluster

matplotlib = pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install 'fsm_cluster[timeline]'")


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
    from fsm_cluster.observe.timeline import draw

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


def _life_with_usage(nodes: int):
    from fsm_cluster.observe.timeline import Lane, Life
    from fsm_cluster.wire.models import Usage

    lanes = []
    for i in range(nodes):
        usage = [Usage(wall=100.0 + k, cpu=10.0 * i + k, rss=(i + 1) * 2**30 + k) for k in range(0, 20, 2)]
        lanes.append(Lane(f"N{i}", [("running", 100.0, 120.0)], usage))
    return Life(lanes)


def test_the_resource_panels_draw_each_nodes_recorded_samples(tmp_path):
    from fsm_cluster.observe.timeline import draw

    life = _life_with_usage(3)
    fig = draw(life, str(tmp_path / "life.png"))
    assert len(fig.axes) == 3  # lanes, CPU, memory
    for axis, key, value in ((fig.axes[1], "cpu", lambda u: u.cpu), (fig.axes[2], "mem", lambda u: u.rss / 2**30)):
        lines = {ln.get_label(): ln for ln in axis.get_lines()}
        assert sorted(lines) == [f"N{i}:{key}" for i in range(3)]
        for lane in life.lanes:
            ln = lines[f"{lane.node}:{key}"]
            assert list(ln.get_xdata()) == pytest.approx([u.wall - life.start for u in lane.usage])
            assert list(ln.get_ydata()) == pytest.approx([value(u) for u in lane.usage])


def test_for_many_nodes_the_panels_draw_the_mean_and_range(tmp_path):
    from fsm_cluster.observe.timeline import draw

    life = _life_with_usage(40)
    fig = draw(life, str(tmp_path / "life.svg"))
    (mean,) = [ln for ln in fig.axes[1].get_lines() if ln.get_label() == "mean:cpu"]
    # at each sample time the 40 nodes' CPU is 10 i + k: mean 195 + k
    assert list(mean.get_ydata()) == pytest.approx([195.0 + k for k in range(0, 20, 2)])
    assert list(mean.get_xdata()) == pytest.approx([k for k in range(0, 20, 2)], abs=0.1)


def test_a_full_usage_history_is_thinned_and_still_spans_the_life():
    from fsm_cluster.node.record import StateRecord
    from fsm_cluster.wire.models import MAX_USAGE, Resources

    class Clock:
        t = 1000.0

        def wall(self):
            return self.t

    p = StateRecord("n", Clock(), simulated=False, interval=1.0, fields=dict, flush=None, changed=None, ending=None)
    sample = Resources(cpu_percent=50, rss_bytes=1, mem_percent=0.1, processes=1)
    for k in range(3 * MAX_USAGE):
        p.clock.t = 1000.0 + k
        p.record_usage(sample)
    assert len(p.usage) < MAX_USAGE
    assert p.usage[0].wall == 1000.0 and p.usage[-1].wall >= 1000.0 + 3 * MAX_USAGE - 1 - p.usage_step
    gaps = {b.wall - a.wall for a, b in zip(p.usage, p.usage[1:])}
    assert max(gaps) <= p.usage_step
