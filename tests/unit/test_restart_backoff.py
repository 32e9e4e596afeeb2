"""Issue 24, M5 on the simulated clock: restarts back off as Kubernetes' crash loops do —
OCI__RESTART_BACKOFF (10 s) before the code runs again after restart 1, doubling, at most 5 minutes,
on every node — the budget is spent exactly, and the setting is checked and carried by specs."""

from __future__ import annotations

import pytest

from fsm_cluster.env import MAX_RESTART_BACKOFF, Settings
from fsm_cluster.errors import SettingsError, SpecError
from fsm_cluster.jobspec import load_spec, node_environments
from fsm_cluster.node.recovery import restart_delay
from fsm_cluster.testing import SimulatedCodeProvider

from .simcluster import SimCluster


class Starts(SimulatedCodeProvider):
    """Records when (virtual time) its code started and ended."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.starts: list[float] = []
        self.ends: list[float] = []

    def run_code(self) -> None:
        super().run_code()
        if self.runs_code():
            self.starts.append(self.clock.now())

    def end_code(self) -> None:
        self.ends.append(self.clock.now())
        super().end_code()


def test_the_delay_is_the_first_one_doubling_up_to_five_minutes():
    assert [restart_delay(10, n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]
    assert restart_delay(10, 10_000) == MAX_RESTART_BACKOFF == 300
    assert restart_delay(0, 5) == 0 and restart_delay(0.5, 3) == 2


@pytest.mark.parametrize("run_on", ["main", "all"])
def test_every_node_waits_the_backoff_before_its_code_runs_again(run_on):
    c = SimCluster(workers=1, provider_cls=Starts, OCI__RESTART_POLICY="OnFailure", OCI__BACKOFF_LIMIT=3,
                   OCI__RESTART_BACKOFF="10s", OCI__HEARTBEAT_INTERVAL=1, OCI__RUN_ON=run_on)
    assert c.run(code_seconds=1, code_exit={0: [5, 5, 5, 0], "default": 0}) == [0, 0]
    assert [r.count for r in c.workdir.read_state("MAIN").restarts] == [1, 2, 3]
    for p in c.providers if run_on == "all" else c.providers[:1]:
        assert len(p.starts) == 4, p.node_id
        for n, (ended, started) in enumerate(zip(p.ends, p.starts[1:]), start=1):
            assert 10 * 2 ** (n - 1) <= started - ended < 10 * 2 ** (n - 1) + 2, (p.node_id, n, p.starts, p.ends)
    assert c.workdir.read_stop().outcome == "complete"


@pytest.mark.parametrize("backoff", ["0", "5"])
def test_a_crash_loop_on_every_node_spends_the_budget_exactly(backoff):
    c = SimCluster(workers=2, OCI__RESTART_POLICY="OnFailure", OCI__BACKOFF_LIMIT=6, OCI__RESTART_BACKOFF=backoff,
                   OCI__HEARTBEAT_INTERVAL=1, OCI__RUN_ON="all")
    assert c.run(code_seconds=0.5, code_exit=1) == [1, 1, 1]
    assert [r.count for r in c.workdir.read_state("MAIN").restarts] == [1, 2, 3, 4, 5, 6]
    stop = c.workdir.read_stop()
    assert stop.node == "MAIN" and stop.reason.startswith("backoffLimit 6 exceeded: "), stop
    for p in c.providers:
        assert "backoffLimit 6 exceeded" in p.reason and "Restart" not in p.reason, (p.node_id, p.reason)


@pytest.mark.parametrize("value, seconds", [("10s", 10.0), ("1m", 60.0), ("0", 0.0), ("2.5", 2.5), ("", 10.0)])
def test_the_setting_takes_seconds_or_a_duration(value, seconds):
    s = Settings.from_env({"OCI__MODE": "MAIN", "OCI__WORK_DIR": "/tmp/x", "OCI__RESTART_BACKOFF": value})
    assert s.restart_backoff == seconds


@pytest.mark.parametrize("value, message", [("301", "must be ≤ 300"), ("-1", "must be ≥ 0"),
                                            ("nan", "must be a finite number"), ("soon", "must be a number")])
def test_a_bad_setting_is_one_error_naming_it(value, message):
    with pytest.raises(SettingsError, match=f"environment variable OCI__RESTART_BACKOFF: {message}"):
        Settings.from_env({"OCI__MODE": "MAIN", "OCI__WORK_DIR": "/tmp/x", "OCI__RESTART_BACKOFF": value})


SPEC = """kind: distributed
apiVersion: v1.0
spec:
  cluster:
    kind: COMMAND
    spec:
      workDir: /tmp/fsm-backoff
      restartPolicy: OnFailure
      backoffLimit: 4
      restartBackoff: 30
      main:
        name: head
      worker:
        replicas: 1
  runtime:
    kind: python
    spec:
      entryPoint: train.py
"""


def test_a_spec_carries_restart_backoff_to_every_node_and_refuses_it_on_a_role(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(SPEC)
    nodes = node_environments(load_spec(path, environ={}))
    assert [n.env["OCI__RESTART_BACKOFF"] for n in nodes] == ["30.0", "30.0"]
    path.write_text(SPEC.replace("      worker:\n", "      worker:\n        restartBackoff: 5\n"))
    with pytest.raises(SpecError, match="spec.cluster.spec.worker.restartBackoff: is run-wide"):
        load_spec(path, environ={})
    path.write_text(SPEC.replace("restartBackoff: 30", "restartBackoff: 600"))
    with pytest.raises(SpecError, match="spec.cluster.spec.restartBackoff: must be ≤ 300"):
        load_spec(path, environ={})


def test_a_peers_failure_of_the_code_a_restart_ends_is_no_restart_of_its_own(caplog):
    """Every node's code fails, MAIN's first: the worker's failure of that same run reaches MAIN
    (a request file, off the channel) while MAIN backs off; it is that restart's, not the next one:
    each restart is one run of the code on every node, caused by MAIN."""
    import logging

    c = SimCluster(workers=1, OCI__RESTART_POLICY="OnFailure", OCI__BACKOFF_LIMIT=3, OCI__RESTART_BACKOFF=5,
                   OCI__HEARTBEAT_INTERVAL=1, OCI__RUN_ON="all")
    with caplog.at_level(logging.INFO, logger="fsm_cluster.node.recovery"):
        assert c.run(code_seconds={0: 1.0, 1: 1.2}, code_exit=1) == [1, 1]
    assert [(r.count, r.node) for r in c.workdir.read_state("MAIN").restarts] == [(n, "MAIN") for n in (1, 2, 3)]
    assert "WORKER_worker1: entry script exited with code 1, in the code this restart ends: no restart of its own" \
        in caplog.text
