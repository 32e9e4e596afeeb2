"""DASK on a real Dask cluster: 1 MAIN (scheduler) + 2 WORKER nodes (dask worker)."""

from __future__ import annotations

import json

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
