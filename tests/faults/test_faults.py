"""The fault matrix: real node processes, real faults, on a local work dir and on a real
S3-protocol server (moto, loopback). For each fault every surviving node exits non-zero with the
reason in its last log line, the stop marker names the first failure, nothing is left running,
and the exit latency after the fault is measured (``record``) — asserted only by a hang guard.
"""

from __future__ import annotations

import json
import signal
import os
import time

import pytest

from fsm_cluster.wire.models import NodeConfig, RosterEntry

from .cluster import row

pytestmark = pytest.mark.integration


def workers_of(c):
    return [n for n in c.nodes if n.mode == "WORKER"]


# -- dead and frozen nodes ------------------------------------------------------------------------
def kill9_worker(c, backend: str, record) -> None:
    """A WORKER SIGKILLed mid-run: MAIN sees its channel connection drop (no heartbeat timeout)."""
    c.start()
    c.wait_running()
    victim = c.nodes[1]
    c.signal(victim, signal.SIGKILL)
    marker = c.assert_failed_everywhere(f"{victim.node_id}: lost on the control channel", first="MAIN",
                                        killed=(victim,))
    record(row(c, "kill -9 WORKER", backend, marker))


def sigstop_worker(c, backend: str, record) -> None:
    """A WORKER SIGSTOPped mid-run (frozen, its connection open): MAIN declares it lost once it
    sent nothing for the heartbeat timeout — missed pings on the channel, or its heartbeat file —
    and the cluster fails. Thawed afterwards, the frozen node ends too and leaves nothing behind."""
    c.start()
    c.wait_running()
    victim = c.nodes[1]
    c.signal(victim, signal.SIGSTOP)
    others = [n for n in c.nodes if n is not victim]
    try:
        c.until(lambda: all(n.exited_at is not None for n in others), "the other nodes exited")
    finally:
        victim.proc.send_signal(signal.SIGCONT)
    c.wait()
    lost = (f"{victim.node_id}: lost on the control channel (no ping", f"{victim.node_id} stopped heart-beating")
    marker = c.stop_marker()
    assert marker is not None and marker.outcome == "failed" and marker.node == "MAIN", (marker, c.dump())
    assert any(w in marker.reason for w in lost), (marker, c.dump())
    for n in others:
        assert n.code not in (0, None), c.dump()
        assert f"{n.node_id} stopped: cluster " in n.last_line() and any(w in n.last_line() for w in lost), \
            c.dump()
    assert victim.code not in (0, None), c.dump()  # thawed into a failed cluster
    c.assert_no_orphans()
    record(row(c, "SIGSTOP WORKER", backend, marker, "frozen node thawed after the others exited",
               exclude=(victim.node_id,)))


def test_kill9_worker_mid_run(clusters, backend, record):
    kill9_worker(clusters(backend), backend, record)


def test_sigstop_worker_mid_run(clusters, record):
    sigstop_worker(clusters("file"), "file", record)


def test_kill9_main_mid_run(clusters, backend, record):
    c = clusters(backend).start()
    c.wait_running()
    c.signal(c.nodes[0], signal.SIGKILL)
    marker = c.assert_failed_everywhere("MAIN: lost on the control channel",
                                        first={n.node_id for n in workers_of(c)}, killed=(c.nodes[0],))
    # MAIN's entry script and its grandchild died with MAIN (assert_no_orphans): the guard.
    record(row(c, "kill -9 MAIN", backend, marker))


def test_sigterm_to_main_is_a_stopped_cluster_with_final_sync(clusters, record, tmp_path):
    c = clusters("file", env={"SYNC_ARTIFACTS": "1", "SYNC_SLEEP": "3600"})
    c.start(per_node=lambda rank: {"OCI__SYNC_DIR": str(tmp_path / f"sync{rank}")})
    c.wait_running()
    c.until(lambda: all((tmp_path / f"sync{n.rank}" / f"result-{n.rank}.txt").exists() for n in c.nodes),
            "entry scripts wrote their results")
    c.signal(c.nodes[0], signal.SIGTERM)
    marker = c.assert_failed_everywhere("MAIN received SIGTERM", first="MAIN", outcome="stopped")
    assert [n.code for n in c.nodes] == [128 + signal.SIGTERM] * 3, c.dump()
    # Final sync: every node's result reached the work dir before the node exited.
    for n in c.nodes:
        synced = c.workdir.read_bytes(f"sync/{n.run_id}/result-{n.rank}.txt")
        assert synced == f"rank {n.rank} result\n".encode(), (n.node_id, synced)
    record(row(c, "SIGTERM to MAIN", "file", marker, "outcome stopped, exit 143, final sync checked"))


# -- the user's code failing ---------------------------------------------------------------------
def test_entry_script_failing_on_one_node(clusters, backend, record):
    c = clusters(backend, env={"FAULT_FAIL": "2:3"})
    c.start()
    c.until(lambda: c.mark_time("failed-2"), "the entry script on rank 2 failed")
    c.fault("entry script exits 3 on WORKER_w2", at=c.mark_time("failed-2"))
    marker = c.assert_failed_everywhere("entry script exited with code 3", first="WORKER_w2")
    record(row(c, "entry script fails on one node", backend, marker))


def test_two_nodes_racing_to_write_the_stop_marker(clusters, backend, record):
    c = clusters(backend, env={"FAULT_FAIL": "1:5,2:6", "FAULT_SYNC": "1"}).start()
    c.wait_running([c.nodes[0]])
    c.until(lambda: c.states().get("WORKER_w1") == c.states().get("WORKER_w2") == "running", "workers running")
    at = time.time() + 0.5
    # Both entry scripts exit at this same instant. Written atomically: the scripts poll for it.
    (c.marks / "fail-at.tmp").write_text(repr(at))
    os.replace(c.marks / "fail-at.tmp", c.marks / "fail-at")
    c.fault("entry scripts exit 5 and 6 at the same instant", at=at)
    codes = c.wait()
    marker = c.stop_marker()
    assert marker is not None and marker.outcome == "failed" and marker.node in ("WORKER_w1", "WORKER_w2")
    winner = marker.node
    loser = "WORKER_w2" if winner == "WORKER_w1" else "WORKER_w1"
    want = {"WORKER_w1": "exited with code 5", "WORKER_w2": "exited with code 6"}
    assert want[winner] in marker.reason
    by_id = {n.node_id: n for n in c.nodes}
    # The winner reports its own failure; the loser its own too, or — when the winner's, announced
    # on the control channel, reached it before it noticed its own script's exit — the winner's.
    assert all(code != 0 for code in codes), c.dump()
    assert want[winner] in by_id[winner].last_line(), c.dump()
    assert want[loser] in by_id[loser].last_line() or f"cluster failed on {winner}" in by_id[loser].last_line(), \
        c.dump()
    assert want[winner] in by_id["MAIN"].last_line(), c.dump()
    loser_log = "\n".join(by_id[loser].lines())
    assert (f"stop marker already written by {winner}" in loser_log
            or f"cluster failed on {winner}" in by_id[loser].last_line()), loser_log
    c.assert_no_orphans()
    record(row(c, "two nodes race to write stop", backend, marker, f"winner {winner}"))


# -- bad shared files ----------------------------------------------------------------------------
def _valid_main_config(c, **env) -> NodeConfig:
    roster = [RosterEntry(node="MAIN", mode="MAIN", run_id="main", rank=0, ip="127.0.0.1")] + [
        RosterEntry(node=f"WORKER_w{r}", mode="WORKER", run_id=f"w{r}", rank=r, ip="127.0.0.1")
        for r in (1, 2)]
    return NodeConfig.model_construct(schema_version=1, node="MAIN", mode="MAIN", run_id="main", rank=0,
                                      ip="127.0.0.1", host="", env={"OCI__MAIN_IP": "127.0.0.1", **env},
                                      roster=roster, extra={})


def _bad_main_config_cluster(clusters, backend, data: bytes):
    """MAIN waits for a third worker that never comes, so it never writes MAIN_config.json: the
    test writes a bad one in its place once both workers registered and MAIN waits for the third."""
    c = clusters(backend)
    c.start(per_node=lambda rank: {"OCI__WORKER_COUNT": "3"} if rank == 0 else {})
    # MAIN must be past its first look (it moves a MAIN_config.json it finds at start aside, as a
    # previous life's): its state file shows it waiting in configuring.
    c.until(lambda: all(c.workdir.exists(f"{n.node_id}_config.json") for n in workers_of(c))
            and c.workdir.exists("MAIN_state.json"), "workers registered, MAIN waiting")
    c.workdir.write_bytes("MAIN_config.json", data)
    c.fault("bad MAIN_config.json written")
    return c


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_corrupt_or_truncated_main_config(clusters, backend, kind, record):
    good = _valid_main_config(None).model_dump_json().encode()
    data = b"\x00\xffnot json{{" if kind == "corrupt" else good[: len(good) // 2]
    c = _bad_main_config_cluster(clusters, backend, data)
    marker = c.assert_failed_everywhere("MAIN_config.json: not valid JSON",
                                        first={n.node_id for n in workers_of(c)})
    assert not list(c.marks.glob("started-*")), "no entry script may run on a bad configuration"
    record(row(c, f"{kind} MAIN_config.json", backend, marker))


def test_main_config_exporting_ld_preload_is_refused(clusters, record):
    bad = _valid_main_config(None, LD_PRELOAD="/tmp/evil.so")
    data = json.dumps(bad.model_dump()).encode()
    c = _bad_main_config_cluster(clusters, "file", data)
    marker = c.assert_failed_everywhere("LD_PRELOAD", first={n.node_id for n in workers_of(c)})
    assert "may not be set by a shared config" in marker.reason
    assert not list(c.marks.glob("started-*")), "no entry script may run with a hostile configuration"
    record(row(c, "MAIN_config.json exports LD_PRELOAD", "file", marker))


# -- the work dir itself -------------------------------------------------------------------------
def test_work_dir_deleted_under_a_running_cluster(clusters, backend, record):
    c = clusters(backend).start()
    c.wait_running()
    c.delete_work_dir()
    marker = c.assert_failed_everywhere("MAIN's files disappeared", first={n.node_id for n in c.nodes})
    record(row(c, "work dir deleted", backend, marker))
