"""The S3 server itself fails under a running cluster (moto's server as a real process, killed
with SIGKILL): a short outage is ridden through — retries, and blind time not counted against
peers' heartbeats — while a long or permanent one fails every node with one clear message."""

from __future__ import annotations

import time

import pytest

from .cluster import default_profile, row

# Outages sized against the local profile's 3 s heartbeat timeout (a 3.5 s outage must not count
# as dead peers): at the production profile's 60 s they would prove nothing new, and a 60+ s
# outage per test is not worth the time.
pytestmark = [pytest.mark.integration, pytest.mark.s3,
              pytest.mark.skipif(default_profile().name != "local",
                                 reason="storage outages are sized for the local profile (3 s heartbeat timeout)")]


def test_s3_server_killed_and_restarted_mid_run_is_ridden_through(clusters, private_s3, record):
    c = clusters("s3", server=private_s3, env={"FAULT_FINISH": "1", "OCI__STORAGE_RETRY_BUDGET": "30"})
    c.start()
    c.wait_running()
    snapshot = private_s3.snapshot()
    down = time.time()
    private_s3.kill()
    time.sleep(3.5)  # with the restart, longer than OCI__HEARTBEAT_TIMEOUT (3 s)
    private_s3.start(snapshot)  # comes back with its objects, as S3 does
    outage = time.time() - down
    c.until(lambda: all(s == "running" for s in c.states().values()) and
            any("retrying" in ln for n in c.nodes for ln in n.lines()), "nodes retried and are running")
    c.fault(f"S3 down {outage:.1f} s (kill -9, restart); then the code finishes")
    (c.marks / "finish").write_text("")
    codes = c.wait()
    assert codes == [0, 0, 0], c.dump()
    marker = c.stop_marker()
    assert marker is not None and marker.outcome == "complete" and marker.node == "MAIN", marker
    # Nothing written was lost: every node's final state and every worker's done marker are there.
    for n in c.nodes:
        assert c.workdir.read_state(n.node_id).state == "stopped"
        assert "stopped: cluster complete; exit 0" in n.last_line(), c.dump()
        if n.mode == "WORKER":
            assert c.workdir.exists(f"{n.node_id}_done")
    assert not any("stopped heart-beating" in ln for n in c.nodes for ln in n.lines()), c.dump()
    c.assert_no_orphans()
    record(row(c, "S3 server killed + restarted", "s3", marker,
               f"outage {outage:.1f} s ridden through; latency from the code's end"))


def test_s3_outage_longer_than_the_retry_budget_fails_every_node_clearly(clusters, private_s3, record):
    c = clusters("s3", server=private_s3, env={"OCI__STORAGE_RETRY_BUDGET": "2"})
    c.start()
    c.wait_running()
    snapshot = private_s3.snapshot()
    c.fault("S3 server killed, down past the 2 s retry budget")
    private_s3.kill()
    codes = c.wait()
    private_s3.start(snapshot)
    assert all(code not in (0, None) for code in codes), c.dump()
    for n in c.nodes:
        last = n.last_line()
        assert "still failing after 2 s of retries" in last and "Traceback" not in n.log.read_text(), c.dump()
    # No marker could be written while the store was down; nothing claims otherwise.
    assert c.stop_marker() is None
    c.assert_no_orphans()
    record(row(c, "S3 down longer than retry budget", "s3", None, "no marker possible: store down"))


def test_bucket_deleted_under_a_running_cluster_is_one_clear_error(clusters, private_s3, record):
    c = clusters("s3", server=private_s3)
    c.start()
    c.wait_running()
    bucket = c.work_dir.split("/")[2]
    client = private_s3.client()
    c.fault("bucket deleted")
    # Live nodes keep writing (state files, markers): empty and delete until the bucket is gone.
    for attempt in range(50):
        for o in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=o["Key"])
        try:
            client.delete_bucket(Bucket=bucket)
            break
        except client.exceptions.ClientError as e:
            if "BucketNotEmpty" not in str(e) or attempt == 49:
                raise
    codes = c.wait()
    assert all(code not in (0, None) for code in codes), c.dump()
    for n in c.nodes:
        last = n.last_line()
        assert ("does the bucket exist?" in last or "MAIN's files disappeared" in last) and \
            "Traceback" not in n.log.read_text(), c.dump()
    c.assert_no_orphans()
    record(row(c, "bucket deleted (permanent)", "s3", None, "no marker possible: bucket gone"))
