"""The simulation machinery the scale benchmark relies on (fsm_cluster.testing)."""

from __future__ import annotations

import subprocess

from fsm_cluster.testing import SimulatedProcessGroup, VirtualClock


def test_virtual_clock_runs_threads_one_at_a_time_in_wake_up_order():
    clock = VirtualClock(start=0.0)
    log: list[tuple[float, int]] = []
    running = []

    def node(i: int):
        def fn():
            for k in range(3):
                running.append(i)
                assert len(running) == 1  # exactly one simulated thread runs at a time
                running.pop()
                log.append((clock.now(), i))
                clock.sleep(1.0 + i / 1000)
            return i

        return fn

    n = 200
    assert clock.run([node(i) for i in range(n)]) == list(range(n))
    assert log == sorted(log)  # virtual time only moves forward, earliest wake-up first
    assert [i for t, i in log[:n]] == list(range(n))  # ties at t=0: start order
    assert clock.dispatches == n * 4  # one hand-over per start and per sleep
    assert clock.now() == 3 * (1.0 + (n - 1) / 1000)


def test_virtual_clock_spawned_threads_interrupts_and_errors():
    """A spawned simulated thread runs from now on, in turn; an interrupt wakes a sleeper at once
    with the exception; a fn's exception is its result; run() of nothing returns nothing."""
    clock = VirtualClock(start=0.0)
    log: list[tuple[float, str]] = []

    def keeper():
        try:
            clock.sleep(100.0)
        except KeyError:
            log.append((clock.now(), "keeper interrupted"))

    def node():
        token = clock.spawn(keeper, "keeper")
        clock.sleep(5.0)
        log.append((clock.now(), "node woke"))
        assert clock.interrupt(token, KeyError("stop"))
        clock.sleep(1.0)
        assert not clock.interrupt(token, KeyError("again"))  # it ended: nothing to wake
        raise ValueError("failed")

    out = clock.run([node])
    assert isinstance(out[0], ValueError)
    assert log == [(5.0, "node woke"), (5.0, "keeper interrupted")]
    assert clock.run([]) == []


def test_simulated_teardown_ends_its_own_children_only():
    bystander = subprocess.Popen(["sleep", "30"])  # a child of the simulation process
    try:
        group = SimulatedProcessGroup()
        child = group.spawn("engine", ["sleep", "30"])
        group.terminate_all()
        assert child.poll() is not None
        assert bystander.poll() is None  # no sweep of the simulation process's descendants
    finally:
        bystander.kill()
        bystander.wait()
