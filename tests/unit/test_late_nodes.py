"""Issue 24, M6: a worker that arrives when MAIN's life is already over (a stop marker of that life,
MAIN's files of it) and was none of its nodes says so at once and ends, instead of waiting
OCI__TIMEOUT (600 s) for a MAIN that will not come; a node of that life run again (a re-run in
place, same run ids) still waits for the re-run's MAIN (tests/unit/test_trust.py)."""

from __future__ import annotations

from fsm_cluster.runner import drive

from .simcluster import SimCluster, node_env


def test_a_late_worker_ends_at_once_saying_the_life_is_over():
    c = SimCluster(workers=1)
    assert c.run(code_seconds=5) == [0, 0]
    first = c.workdir.read_stop()
    late = c.build(node_env("WORKER", 2, 1, work_dir=c.work_dir, JOB_RUN_OCID="late"))
    began = c.clock.now()
    assert c.clock.run([lambda: drive(late)]) == [1]
    assert c.clock.now() - began < 60  # not OCI__TIMEOUT (600 s)
    assert late.reason.startswith(f"MAIN's life {first.life} in ") and late.reason.endswith(
        "is over (complete by MAIN: code completed) and this node (WORKER_late) was not one of its nodes: it "
        "came too late to join. A new run of the job in this work dir starts a new life when its MAIN starts")
    assert c.workdir.read_stop() == first  # the life's outcome stays as it was
    assert "running" not in late.entered and not c.workdir.exists("WORKER_late_config.json")


def test_a_worker_late_for_a_life_that_failed_its_barrier_ends_at_once():
    """MAIN gave up waiting for this worker (OCI__TIMEOUT) before it started: its life is over."""
    c = SimCluster(workers=1, OCI__TIMEOUT=120)
    main = c.build(c.envs[0])
    assert c.clock.run([lambda: drive(main)]) == [1]
    worker = c.build(c.envs[1])
    began = c.clock.now()
    assert c.clock.run([lambda: drive(worker)]) == [1]
    assert c.clock.now() - began < 60
    assert "came too late to join" in worker.reason and "failed by MAIN: timed out after 120 s" in worker.reason


def test_a_new_main_in_a_work_dir_whose_life_is_over_says_so_at_once(caplog):
    """Issue 24, M6: a new MAIN alone (its old life's workers ended with it) names the old life,
    its outcome and its workers, and what it waits for — at its first look, not after OCI__TIMEOUT."""
    c = SimCluster(workers=1)
    assert c.run(code_seconds=5) == [0, 0]
    first = c.workdir.read_stop()
    again = c.build(node_env("MAIN", 2, 0, work_dir=c.work_dir, JOB_RUN_OCID="main-again"))
    caplog.set_level("WARNING")
    c.clock.run([lambda: again.rendezvous.first_look(c.workdir.listing())])
    said = [r.getMessage() for r in caplog.records if "held a previous life" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert f"previous life {first.life} of this cluster; it ended complete by MAIN: code completed" in said[0]
    assert "(WORKER_" in said[0] and "registered in the old one: they do not come back" in said[0]
    assert "waits OCI__TIMEOUT for new ones" in said[0]
