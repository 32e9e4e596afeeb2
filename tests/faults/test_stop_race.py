"""Racing writers of the stop marker, as separate processes released together: exactly one
wins, the marker on storage is the winner's, and every later writer — a node completing after a
failure included — gets False and changes nothing. Local disk (``os.link``) and S3
(``PutObject`` with ``If-None-Match: *``) alike."""

from __future__ import annotations

import multiprocessing as mp
import uuid

import pytest

from fsm_cluster.wire.models import StopMarker
from fsm_cluster.wire.workdir import WorkDir

RACERS = 8
ROUNDS = 4


def _race(args):
    uri, cluster, options, i, barrier = args
    wd = WorkDir(uri, cluster, storage_options=options, retry_budget=20)
    wd.exists("stop")  # connect first, so the race is the write
    outcome = "failed" if i % 2 else "complete"
    barrier.wait()
    return i, wd.write_stop(StopMarker(outcome=outcome, node=f"RACER_{i}", reason=f"racer {i}", exit_code=i % 2))


def _racers(pool, uri, options, cluster, barrier):
    return dict(pool.map(_race, [(uri, cluster, options, i, barrier) for i in range(RACERS)]))


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["file", pytest.param("s3", marks=pytest.mark.s3)])
def test_exactly_one_of_many_racing_writers_wins(backend, tmp_path, request):
    if backend == "file":
        uri, options = str(tmp_path / "wd"), None
    else:
        server = request.getfixturevalue("s3_server")
        uri, options = f"s3://{server.new_bucket()}/wd", server.storage_options()
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(RACERS) as pool:
        barrier = manager.Barrier(RACERS)
        for _ in range(ROUNDS):
            cluster = f"race-{uuid.uuid4().hex[:8]}"
            won = _racers(pool, uri, options, cluster, barrier)
            winners = [i for i, ok in won.items() if ok]
            assert len(winners) == 1, won
            marker = WorkDir(uri, cluster, storage_options=options).read_stop()
            assert marker.node == f"RACER_{winners[0]}" and marker.reason == f"racer {winners[0]}"
            # A later writer (say MAIN completing after a failure) never overwrites it.
            late = StopMarker(outcome="complete", node="MAIN", reason="code completed")
            assert WorkDir(uri, cluster, storage_options=options).write_stop(late) is False
            assert WorkDir(uri, cluster, storage_options=options).read_stop() == marker
