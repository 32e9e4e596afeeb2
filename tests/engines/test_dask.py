"""DASK on a real Dask cluster: 1 MAIN (scheduler) + 2 WORKER nodes (dask worker)."""

from __future__ import annotations

import json
import os
import signal

import pytest

pytest.importorskip("distributed", reason="Dask not installed: pip install 'fsm_cluster[dask]'")

from .cluster import EXAMPLES, kill_worker_and_check  # noqa: E402

pytestmark = [pytest.mark.engine, pytest.mark.integration]


def test_dask_example_spreads_tasks_over_both_workers(tmp_path, engine_cluster):
    out = tmp_path / "out"
    c = engine_cluster(cluster_type="DASK", extra={
        "OCI__ENTRY_SCRIPT": str(EXAMPLES / "dask" / "train.py"),
        "OCI__ENTRY_SCRIPT_ARGS": f"--tasks 16 --out {out}",
    }, per_mode={"WORKER": {"OCI__START_ARGS": "--nthreads 1"}}).start()
    assert c.wait() == [0, 0, 0], c.dump()
    result = json.loads((out / "results.json").read_text())
    assert result["total"] == sum(i * i for i in range(16))
    assert sorted(r["x"] for r in result["tasks"]) == list(range(16))
    ran_on = {r["worker"] for r in result["tasks"]}
    assert ran_on == {"WORKER_worker1", "WORKER_worker2"}, result
    assert result["workers"] == ["WORKER_worker1", "WORKER_worker2"]
    # the scheduler address MAIN published is what the workers used
    main_cfg = json.loads((c.state_dir() / "MAIN_config.json").read_text())
    assert main_cfg["DASK_SCHEDULER_ADDRESS"].startswith("tcp://127.0.0.1:")
    assert c.stop_marker()["outcome"] == "complete"
    assert c.leftovers() == [], c.dump()


def test_dask_worker_killed_fails_every_node(tmp_path, engine_cluster):
    c = engine_cluster(cluster_type="DASK", extra={
        "OCI__ENTRY_SCRIPT": str(EXAMPLES / "dask" / "train.py"),
        "OCI__ENTRY_SCRIPT_ARGS": f"--tasks 100000 --out {tmp_path / 'out'}",
    }, per_mode={"WORKER": {"OCI__START_ARGS": "--nthreads 1"}}).start()
    kill_worker_and_check(c)


ELASTIC_JOB = """
import json, os, sys, time
from dask.distributed import Client, get_worker

def task(x):
    time.sleep(0.3)
    return {"x": x, "worker": get_worker().name}

out = sys.argv[1]
client = Client()
first = client.gather(client.map(task, range(8), pure=False))
open(os.path.join(out, "phase1"), "w").close()  # the test kills a worker now
deadline = time.monotonic() + 90
while not any(str(w["name"]).endswith("-r1") for w in client.scheduler_info(n_workers=-1)["workers"].values()):
    assert time.monotonic() < deadline, "the replacement never joined"
    time.sleep(0.2)
second = client.gather(client.map(task, range(8, 24), pure=False))
json.dump({"first": first, "second": second}, open(os.path.join(out, "results.json"), "w"))
"""


def test_dask_loses_a_worker_and_finishes_on_its_replacement(tmp_path, engine_cluster):
    """OnFailure: kill -9 of a WORKER's bootstrap (its dask worker dies with it) does not stop
    MAIN's computation (Dask is elastic: MAIN records a restart and goes on); a node started with
    OCI__REPLACES takes the lost node's rank and its dask worker joins; the computation finishes
    with tasks on the replacement."""
    out = tmp_path / "out"
    out.mkdir()
    job = tmp_path / "elastic.py"
    job.write_text(ELASTIC_JOB)
    c = engine_cluster(cluster_type="DASK", extra={
        "OCI__ENTRY_SCRIPT": str(job), "OCI__ENTRY_SCRIPT_ARGS": str(out),
        "OCI__RESTART_POLICY": "OnFailure", "OCI__BACKOFF_LIMIT": "1",
    }, per_mode={"WORKER": {"OCI__START_ARGS": "--nthreads 1"}}).start()
    c.wait_for(lambda: (out / "phase1").exists(), "the first half of the computation")
    os.kill(c.procs[1].pid, signal.SIGKILL)
    c.wait_for(lambda: (c.state("MAIN") or {}).get("restarts"), "MAIN recording the restart")
    assert c.state("MAIN")["state"] == "running"  # MAIN's computation goes on
    c.start_node("WORKER", rank=1, JOB_RUN_OCID="worker1-r1", OCI__REPLACES="WORKER_worker1")
    codes = c.wait()
    assert codes == [0, -signal.SIGKILL, 0, 0], c.dump()
    result = json.loads((out / "results.json").read_text())
    assert sorted(r["x"] for r in result["first"] + result["second"]) == list(range(24))
    assert "WORKER_worker1-r1" in {r["worker"] for r in result["second"]}, result
    [record] = c.state("MAIN")["restarts"]
    assert record["node"] == "WORKER_worker1" and record["waiting_for"] == "WORKER_worker1", record
    assert c.leftovers() == [], c.dump()


def test_dask_tls_cluster_runs_the_example_over_mutual_tls(tmp_path, engine_cluster):
    """With the three certificate files configured, the scheduler and workers listen on tls:// and
    the entry script's bare ``Client()`` connects through Dask's TLS config variables."""
    pytest.importorskip("cryptography", reason="cryptography not installed (comes with the oci SDK)")
    from integration.pki import make_pki

    certs = tmp_path / "certs"
    certs.mkdir()
    for name, pem in zip(("ca.pem", "cert.pem", "key.pem"), make_pki()):
        (certs / name).write_text(pem)
    (certs / "key.pem").chmod(0o600)
    out = tmp_path / "out"
    c = engine_cluster(cluster_type="DASK", extra={
        "OCI__ENTRY_SCRIPT": str(EXAMPLES / "dask" / "train.py"),
        "OCI__ENTRY_SCRIPT_ARGS": f"--tasks 8 --out {out}",
        "OCI__CA_DOWNLOAD_LOCATION": str(certs / "ca.pem"),
        "OCI__CERTIFICATE_DOWNLOAD_LOCATION": str(certs / "cert.pem"),
        "OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION": str(certs / "key.pem"),
    }, per_mode={"WORKER": {"OCI__START_ARGS": "--nthreads 1"}}).start()
    assert c.wait() == [0, 0, 0], c.dump()
    main_cfg = json.loads((c.state_dir() / "MAIN_config.json").read_text())
    address = main_cfg["DASK_SCHEDULER_ADDRESS"]
    assert address.startswith("tls://127.0.0.1:"), address
    result = json.loads((out / "results.json").read_text())
    assert result["total"] == sum(i * i for i in range(8))
    assert result["workers"] == ["WORKER_worker1", "WORKER_worker2"]
    assert c.leftovers() == [], c.dump()


def test_dask_tls_with_a_missing_certificate_file_fails_clearly(tmp_path, engine_cluster):
    c = engine_cluster(cluster_type="DASK", extra={
        "OCI__ENTRY_SCRIPT": str(EXAMPLES / "dask" / "train.py"),
        "OCI__CA_DOWNLOAD_LOCATION": str(tmp_path / "nope-ca.pem"),
        "OCI__CERTIFICATE_DOWNLOAD_LOCATION": str(tmp_path / "nope-cert.pem"),
        "OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION": str(tmp_path / "nope-key.pem"),
    }, workers=1).start()
    codes = c.wait()
    assert all(code not in (0, None) for code in codes), c.dump()
    main_log = c.logs[0].read_text()
    assert "Dask TLS: certificate file(s) not found" in main_log and "nope-ca.pem" in main_log, c.dump()
    assert "Traceback" not in main_log, c.dump()
    assert c.leftovers() == [], c.dump()


PROBE = """\
import json, sys
from distributed import Client

with Client() as client:  # DASK_SCHEDULER_ADDRESS from the node
    workers = client.scheduler_info(n_workers=-1)["workers"]
    out = {"workers": [{"address": a, "nanny": w.get("nanny")} for a, w in workers.items()],
           "death_timeouts": list(client.run(lambda dask_worker: dask_worker.death_timeout).values())}
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


def test_oracle_ads_worker_variables_reach_the_real_dask_worker(tmp_path, engine_cluster):
    """OCI__WORKER_PORT, OCI__NANNY_PORT and OCI__WORKER_TIMEOUT (what oracle-ads' Dask spec builder
    sets) as the scheduler and the worker itself see them: the worker and its nanny listen on the
    ports given, and the worker's death timeout is the one given."""
    from fsm_cluster.frameworks._common import free_port

    worker_port, nanny_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    (tmp_path / "probe.py").write_text(PROBE)
    out = tmp_path / "workers.json"
    c = engine_cluster(cluster_type="DASK", workers=1, extra={
        "OCI__ENTRY_SCRIPT": str(tmp_path / "probe.py"), "OCI__ENTRY_SCRIPT_ARGS": str(out),
        "OCI__WORKER_PORT": str(worker_port), "OCI__NANNY_PORT": str(nanny_port), "OCI__WORKER_TIMEOUT": "45",
    }, per_mode={"WORKER": {"OCI__START_ARGS": "--nthreads 1"}}).start()
    assert c.wait() == [0, 0], c.dump()
    seen = json.loads(out.read_text())
    assert seen["workers"] == [{"address": f"tcp://127.0.0.1:{worker_port}", "nanny": f"tcp://127.0.0.1:{nanny_port}"}]
    assert seen["death_timeouts"] == [45]
    assert c.leftovers() == [], c.dump()


def test_check_cluster_status_reports_the_workers_and_closes_its_client(tmp_path):
    """oracle-ads' on-demand status (ClusterStatus(worker_count)), from a real scheduler; the Client
    it opens is gone when it returns (oracle-ads' sample leaked one per call)."""
    from types import MappingProxyType

    from distributed import LocalCluster

    from fsm_cluster.frameworks.dask import DaskProvider

    with LocalCluster(n_workers=1, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=None) as lc:
        p = DaskProvider("MAIN", work_dir=str(tmp_path / "wd"), environ={"OCI__SELF_IP": "127.0.0.1"})
        p.exported = MappingProxyType({"DASK_SCHEDULER_ADDRESS": lc.scheduler_address})
        name = str(next(iter(lc.scheduler.workers.values())).name)
        p.expected_workers = lambda: [name, "WORKER_not_there"]
        clients = set(lc.scheduler.clients)
        for _ in range(3):
            status = p.check_cluster_status()
            assert type(status).__name__ == "ClusterStatus" and status.worker_count == 1
        assert set(lc.scheduler.clients) == clients
