"""While a node ends it writes its state file at most twice: MAIN once with the stop marker it
wrote (workers off the channel learn the outcome from it) and once stopped, with its exit code; a
worker once. The last write says ``stopped`` and the exit code (simulated clusters: real provider,
lifecycle and protocol code)."""

from __future__ import annotations

import pytest

from fsm_cluster.testing import SimulatedCluster, SimulatedCodeProvider


class CountingProvider(SimulatedCodeProvider):
    def __init__(self, *args, **kwargs):
        self.writes: list[tuple[str, bool]] = []  # (state, the node had its ending)
        super().__init__(*args, **kwargs)

    def flush_state(self) -> None:
        self.writes.append((self.state.value, self.end_of_life.ending is not None))
        super().flush_state()


@pytest.mark.parametrize("code_exit,expected", [(0, [0, 0]), ({0: 3, "default": 0}, [1, 1])],
                         ids=["complete", "MAIN's code fails"])
def test_a_node_writes_its_state_at_most_twice_while_it_ends(code_exit, expected):
    c = SimulatedCluster(workers=1, provider_cls=CountingProvider, OCI__HEARTBEAT_INTERVAL=1)
    assert c.run(code_exit=code_exit) == expected
    main, worker = c.providers
    ending_writes = {p.mode: [w for w in p.writes if w[1]] for p in c.providers}
    assert len(ending_writes["MAIN"]) == 2, main.writes
    assert len(ending_writes["WORKER"]) <= 2, worker.writes
    for p in c.providers:
        assert p.writes[-1][0] == "stopped"
        state = c.workdir.read_state(p.node_id)
        assert state.state == "stopped" and state.exit_code == p.exit_code
