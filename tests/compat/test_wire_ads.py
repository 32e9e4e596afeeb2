"""Wire compatibility with oracle-ads: one cluster, two runtimes, node by node.

A team moving from oracle-ads switches images one at a time, so for a while a cluster has nodes
that run oracle-ads' own ``ClusterRunner`` (the real ``oracle-ads`` package, from the second venv
that scripts/test.sh makes with scripts/ads_venv.sh) next to nodes that run fsm_cluster's. Both
sides share only the work dir (``<work_dir>/<JOB_OCID>/``): ``MAIN_config.json``,
``WORKER_<JOB_RUN_OCID>_config.json`` and ``stop``.

The provider and run script are one oracle-ads-style template (tests/compat/ads_wire/*.in) made in
two flavours that differ only in their import lines. Each node's code (ads_wire/hello.py) does real
cross-node work with what the files carried: the workers connect to MAIN at the MASTER_ADDR that
MAIN's configuration exported into their environment, MAIN reads each worker's flat config.

What is patched, on the oracle-ads side only (ads_wire/ads_node.py): ``get_oci_auth`` (a resource
principal signer needs a job run's OCI_RESOURCE_PRINCIPAL_* variables; a local work dir uses no
signer) and ``find_self_ip`` (with JOB_OCID set it asks the OCI Jobs API for the job's subnet; here
every node is on the loopback address). fsm_cluster nodes get the same address from OCI__SELF_IP.
No cluster secret: oracle-ads cannot sign files, so a mixed cluster runs unsigned.
"""

from __future__ import annotations

import difflib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import fsm_cluster
from cli.clihelp import clean_env

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent / "ads_wire"
FSM_ROOT = Path(fsm_cluster.__file__).resolve().parents[1]  # the fsm_cluster under test
HANG_GUARD = 180  # seconds for the whole cluster; a guard against hangs, never a timing assertion
HB_INTERVAL, HB_TIMEOUT = 0.5, 2.0
HOLD = 2 * HB_TIMEOUT  # MAIN's code holds after the hellos: longer than a heartbeat timeout
DEADLINE = 45  # seconds MAIN waits for the hellos, a worker for MAIN (oracle-ads polls every 10 s)
WORKERS = ("wire-w1", "wire-w2")

IMPORTS = {
    "ads": {
        "@IMPORT_PROVIDER@": "from ads.opctl.distributed.common.abstract_cluster_provider import ClusterProvider",
        "@IMPORT_RUNNER@": "from ads.opctl.distributed.common.cluster_provider_factory import ClusterProviderFactory\n"
                           "from ads.opctl.distributed.common.cluster_runner import ClusterRunner",
    },
    "fsm": {
        "@IMPORT_PROVIDER@": "from fsm_cluster.provider import ClusterProvider",
        "@IMPORT_RUNNER@": "from fsm_cluster.registry import ClusterProviderFactory\n"
                           "from fsm_cluster.runner import ClusterRunner",
    },
}


def flavour(root: Path, name: str) -> Path:
    """``root/name/``: the provider module and run script with ``name``'s import lines, and hello.py."""
    d = root / name
    d.mkdir()
    for template in ("wire_cluster.py.in", "run_wire.py.in"):
        text = (HERE / template).read_text()
        for mark, line in IMPORTS[name].items():
            text = text.replace(mark, line)
        assert "@IMPORT" not in text
        (d / template.removesuffix(".in")).write_text(text)
    (d / "hello.py").write_text((HERE / "hello.py").read_text())
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One JOB_OCID's nodes, started as the platform would (one process per job run)."""

    def __init__(self, tmp_path: Path, ads_python: str, sweep):
        self.tmp = tmp_path
        self.ads_python = ads_python
        self.dirs = {name: flavour(tmp_path, name) for name in IMPORTS}
        self.work_dir = tmp_path / "wd"
        self.job = "wire-cluster"
        self.result = tmp_path / "result.json"
        self.token = uuid.uuid4().hex
        self.sweep = sweep
        self.port = free_port()
        self.nodes: dict[str, tuple[subprocess.Popen, Path]] = {}

    def env(self, runtime: str, mode: str, run: str) -> dict[str, str]:
        common = dict(OCI__MODE=mode, OCI__WORK_DIR=self.work_dir, OCI__CLUSTER_TYPE="WIRE",
                      OCI__WORKER_COUNT=len(WORKERS), OCI__EPHEMERAL=1, OCI__TIMEOUT=DEADLINE, JOB_OCID=self.job,
                      JOB_RUN_OCID=run, POST_PROCESSING_WAIT=0, WIRE_PORT=self.port, WIRE_RESULT=self.result,
                      WIRE_DEADLINE=DEADLINE, WIRE_HOLD=HOLD, WIRE_TOKEN=self.token, PYTHONUNBUFFERED=1)
        if runtime == "fsm":
            return clean_env(**common, PYTHONPATH=f"{self.dirs['fsm']}{os.pathsep}{FSM_ROOT}", OCI__SELF_IP="127.0.0.1",
                             OCI__HEARTBEAT_INTERVAL=HB_INTERVAL, OCI__HEARTBEAT_TIMEOUT=HB_TIMEOUT)
        env = clean_env(**common, PYTHONPATH=self.dirs["ads"])
        env.pop("OCI__CLUSTER_SECRET", None)
        return env

    def start(self, runtime: str, mode: str, run: str) -> None:
        d = self.dirs[runtime]
        cmd = [sys.executable, d / "run_wire.py"] if runtime == "fsm" else \
            [self.ads_python, HERE / "ads_node.py", d / "run_wire.py"]
        log = self.tmp / f"{runtime}-{mode}-{run}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([str(c) for c in cmd], cwd=d, env=self.env(runtime, mode, run), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.nodes[f"{runtime} {mode} {run}"] = (proc, log)

    def wait(self) -> dict[str, int]:
        deadline = time.monotonic() + HANG_GUARD
        while any(p.poll() is None for p, _ in self.nodes.values()):
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster still running after {HANG_GUARD} s:\n{self.logs()}")
            time.sleep(0.2)
        return {name: p.returncode for name, (p, _) in self.nodes.items()}

    def logs(self) -> str:
        return "\n".join(f"----- {name} (exit {p.poll()})\n{log.read_text()[-6000:]}"
                         for name, (p, log) in self.nodes.items())

    def files(self) -> dict[str, str]:
        d = self.work_dir / self.job
        return {f.name: f.read_text() for f in sorted(d.iterdir()) if f.is_file()} if d.is_dir() else {}

    def explain(self) -> str:
        return f"\n{self.logs()}\nwork dir: {sorted(self.files())}"

    def check_completed(self) -> dict:
        """Every node exited 0, MAIN heard from every worker (and read its flat config), nothing
        that the cluster started is still running; returns MAIN's result."""
        codes = self.wait()
        assert codes == dict.fromkeys(codes, 0), f"exit codes {codes}{self.explain()}"
        assert self.result.exists(), f"MAIN wrote no result{self.explain()}"
        result = json.loads(self.result.read_text())
        assert sorted(result["hellos"]) == sorted(WORKERS), self.explain()
        for run, seen in result["hellos"].items():  # each worker's flat config, read by MAIN
            assert seen == {"peer": "127.0.0.1", "config_worker_ip": "127.0.0.1"}, (run, seen)
        assert result["master_addr"] == "127.0.0.1"
        assert self.sweep(self.token) == [], f"left running: {self.sweep(self.token)}"
        return result


@pytest.fixture
def cluster(tmp_path, ads_python, sweep):
    return Cluster(tmp_path, ads_python, sweep)


def test_the_two_flavours_differ_only_in_their_import_lines(tmp_path):
    ads, fsm = (flavour(tmp_path, name) for name in IMPORTS)
    for module in ("wire_cluster.py", "run_wire.py"):
        diff = [line for line in difflib.unified_diff((ads / module).read_text().splitlines(),
                                                      (fsm / module).read_text().splitlines(), lineterm="", n=0)
                if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        assert diff and all(line[1:].startswith("from ") for line in diff), diff


# (MAIN's runtime, the workers' runtime): the two mixed clusters are the point; the two plain ones
# are their controls (the same provider, work and checks under one runtime), so a mixed failure
# is known to be the wire's.
CLUSTERS = {
    "ads-main-fsm-workers": ("ads", "fsm"),
    "fsm-main-ads-workers": ("fsm", "ads"),
    "ads-only": ("ads", "ads"),
    "fsm-only": ("fsm", "fsm"),
}


@pytest.mark.parametrize("main, workers", list(CLUSTERS.values()), ids=list(CLUSTERS))
def test_a_mixed_cluster_forms_runs_and_completes(cluster, main, workers):
    """ads MAIN, fsm workers: oracle-ads' MAIN writes a flat MAIN_config.json (MASTER_ADDR only, no
    fsm_cluster metadata, no signature), beats no heartbeat and ends the cluster with a plain-text
    ``stop``; the fsm_cluster workers accept that configuration, export MASTER_ADDR, finish their
    code while MAIN's still runs (longer than their heartbeat timeout) and tear down on its stop.

    fsm MAIN, ads workers: fsm_cluster's MAIN takes the oracle-ads workers' flat
    WORKER_<run>_config.json as their registrations and never waits for their heartbeats;
    oracle-ads' export_configuration reads and exports its MAIN_config.json; the oracle-ads workers
    finish first and write the plain-text ``stop`` while MAIN's code still runs: that must not
    cut it short."""
    cluster.start(main, "MAIN", "wire-main")
    for run in WORKERS:
        cluster.start(workers, "WORKER", run)
    result = cluster.check_completed()
    files, explain = cluster.files(), cluster.explain()
    # oracle-ads workers end the cluster as soon as their own code is done: their plain-text stop
    # file is there while MAIN's code still runs (and MAIN completed all the same). fsm_cluster
    # workers leave the ending to MAIN.
    assert result["stop_during_code"] == ("stop" if workers == "ads" else None), explain
    if main == "ads":  # oracle-ads' MAIN ended the cluster; the fsm_cluster workers did not write
        assert files["stop"] == "stop", f"an fsm_cluster worker wrote the stop file: {files['stop']}{explain}"
    else:  # fsm_cluster's MAIN leaves its outcome there (replacing oracle-ads' text that has none)
        stop = json.loads(files["stop"])
        assert (stop["outcome"], stop["node"]) == ("complete", "MAIN"), f"{stop}{explain}"
    main_config = json.loads(files["MAIN_config.json"])
    if main == "ads":
        assert main_config == {"MASTER_ADDR": "127.0.0.1"}
    else:  # flat, as oracle-ads readers take it
        assert (main_config["MASTER_ADDR"], main_config["OCI__MAIN_IP"]) == ("127.0.0.1", "127.0.0.1")
    for run in WORKERS:
        worker_config = json.loads(files[f"WORKER_{run}_config.json"])
        if workers == "ads":
            assert worker_config == {"OCI__WORKER_IP": "127.0.0.1"}
        else:
            assert worker_config["OCI__WORKER_IP"] == "127.0.0.1"
