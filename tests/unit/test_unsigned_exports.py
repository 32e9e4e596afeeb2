"""Issue 24, H1: without a cluster secret anyone who can write the work dir writes MAIN_config.json;
a worker takes from such a file only names it declares (fsm_cluster's, the engine's, OCI__EXPORTS),
its own provider's and addresses', each value checked by its type — an address must be MAIN's
published address (the roster's, in a list or a layout) — and never a name that loads code or names
a path. What every name of issue 24 reached before (code ran in the Dask worker, git hooks ran, an
attacker's scheduler ran `id`) is refused; oracle-ads providers' names still come through."""

from __future__ import annotations

import json
import logging

import pytest

from fsm_cluster.provider import ClusterProvider
from fsm_cluster.wire.exports import UnsignedExports
from fsm_cluster.wire.models import NodeConfig, RosterEntry

MAIN_IP, WORKER_IP, ELSEWHERE = "10.0.0.1", "10.0.0.2", "6.6.6.6"

# Every name issue 24 reached through an unsigned MAIN_config.json, with the value that did it.
REACHED = {
    "DASK_DISTRIBUTED__WORKER__PRELOAD": "import os; os.system('id > /tmp/pwned')",
    "XDG_CONFIG_HOME": "/tmp/evil", "MAKEFILES": "/tmp/evil.mk", "CC": "evil-cc", "CDPATH": "/tmp",
    "LESSOPEN": "|/tmp/evil %s", "SSLKEYLOGFILE": "/tmp/keys", "FSSPEC_S3_ENDPOINT_URL": "http://6.6.6.6",
    "FSSPEC_S3_KEY": "x", "HF_ENDPOINT": "http://6.6.6.6", "NCCL_NET_PLUGIN": "evil",
    "CUDA_INJECTION64_PATH": "/tmp/evil.so", "RAY_RUNTIME_ENV_HOOK": "evil.hook", "OMPI_MCA_plm_rsh_agent": "sh",
    "GLOO_SOCKET_IFNAME": "evil0", "NCCL_SOCKET_IFNAME": "evil0", "OCI__PROGRESS_FILE": "/tmp/p",
    "FSM_CLUSTER_FAULTHANDLER_DIR": "/tmp/fh", "pythonpath": "/tmp/evil", "bash_env": "/tmp/evil.sh",
}


class Dask(ClusterProvider):
    EXPORTS = ("DASK_SCHEDULER_ADDRESS", "SCHEDULER_IP", "OCI__DASK_SCHEDULER_PORT")  # as the Dask engine's

    def configuration(self, conf=None):  # an oracle-ads Dask provider's (MAIN adds SCHEDULER_IP)
        return {**(conf or {}), "nprocs": 1, "death_timeout": 10}


def worker(tmp_path, cls=ClusterProvider, **env) -> tuple[ClusterProvider, dict]:
    environ = {"OCI__SELF_IP": WORKER_IP, "OCI__MODE": "WORKER", "RANK": "1", "JOB_RUN_OCID": "w1", **env}
    p = cls("WORKER", work_dir=str(tmp_path), environ=environ)
    conf = p.configuration(p.basic_configuration())
    p.rendezvous.register(NodeConfig(node=p.node_id, mode="WORKER", run_id="w1", ip=WORKER_IP,
                                     env={k: str(v) for k, v in conf.items()}))  # its registration: its own names
    return p, environ


def main_config(p, env: dict, ip: str = MAIN_IP) -> None:
    """An unsigned MAIN_config.json (fsm_cluster's flat format) listing the worker."""
    roster = [RosterEntry(node="MAIN", mode="MAIN", run_id="main", rank=0, ip=ip),
              RosterEntry(node=p.node_id, mode="WORKER", run_id="w1", rank=1, ip=WORKER_IP)]
    cfg = NodeConfig(node="MAIN", mode="MAIN", run_id="main", ip=ip, env=env, roster=roster)
    p.workdir.write_bytes("MAIN_config.json", cfg.model_dump_json().encode())


def test_no_name_issue_24_reached_is_exported_and_fsm_clusters_own_are(tmp_path, caplog):
    p, env = worker(tmp_path)
    main_config(p, {**REACHED, "OCI__MAIN_IP": MAIN_IP, "OCI__WORLD_SIZE": "2", "WORLD_SIZE": "2",
                    "OCI__NODE_LIST": f"{MAIN_IP},{WORKER_IP}", "OCI__CLUSTER_ID": "ocid1.datasciencejob.oc1..x"})
    with caplog.at_level(logging.WARNING, logger="fsm_cluster.node.formation"):
        p.export_configuration([p.main_config_file])
    assert not set(REACHED) & set(env), sorted(set(REACHED) & set(env))
    assert {k: env[k] for k in ("OCI__MAIN_IP", "OCI__WORLD_SIZE", "WORLD_SIZE", "OCI__NODE_LIST", "OCI__CLUSTER_ID")} \
        == {"OCI__MAIN_IP": MAIN_IP, "OCI__WORLD_SIZE": "2", "WORLD_SIZE": "2",
            "OCI__NODE_LIST": f"{MAIN_IP},{WORKER_IP}", "OCI__CLUSTER_ID": "ocid1.datasciencejob.oc1..x"}
    said = caplog.text
    assert "not exporting from MAIN_config.json: " in said
    assert "DASK_DISTRIBUTED__WORKER__PRELOAD (unsigned: a name that loads code or names a path)" in said
    assert "CC (unsigned: a name neither this node's provider, fsm_cluster, the engine nor OCI__EXPORTS declares)" in said


@pytest.mark.parametrize("declared", ["", "DASK_*,CC,MY_*"])
def test_the_schedulers_address_must_be_mains_even_when_declared(tmp_path, declared):
    """An attacker's scheduler address (its scheduler ran `id` on the worker) is refused; so is a
    declared name whose value is a path or code; MAIN's own address passes."""
    p, env = worker(tmp_path, Dask, OCI__EXPORTS=declared)
    main_config(p, {"DASK_SCHEDULER_ADDRESS": f"tcp://{ELSEWHERE}:8786", "SCHEDULER_IP": ELSEWHERE,
                    "OCI__DASK_SCHEDULER_PORT": "8786", "CC": "/tmp/evil-cc", "MY_MODEL": "bert-base.v2",
                    "MY_CODE": "__import__('os').system('id')"})
    p.export_configuration([p.main_config_file])
    assert "DASK_SCHEDULER_ADDRESS" not in env and "SCHEDULER_IP" not in env and "CC" not in env
    assert "MY_CODE" not in env and env["OCI__DASK_SCHEDULER_PORT"] == "8786"
    assert ("MY_MODEL" in env) == bool(declared)  # a plain word, when declared
    main_config(p, {"DASK_SCHEDULER_ADDRESS": f"tls://{MAIN_IP}:8786", "SCHEDULER_IP": MAIN_IP})
    p.export_configuration([p.main_config_file])
    assert (env["DASK_SCHEDULER_ADDRESS"], env["SCHEDULER_IP"]) == (f"tls://{MAIN_IP}:8786", MAIN_IP)
    assert p.exported["DASK_SCHEDULER_ADDRESS"] == f"tls://{MAIN_IP}:8786"


def test_oracle_ads_providers_names_come_through(tmp_path):
    """Its own configuration's names (nprocs, death_timeout), and the addresses oracle-ads' MAIN alone
    writes (SCHEDULER_IP, MASTER_ADDR, HEAD_IP, OCI__WORKER_IP) when they are MAIN's; a path is not."""
    p, env = worker(tmp_path, Dask)
    main_config(p, {"OCI__MAIN_IP": MAIN_IP, "SCHEDULER_IP": MAIN_IP, "MASTER_ADDR": MAIN_IP, "HEAD_IP": MAIN_IP,
                    "OCI__WORKER_IP": MAIN_IP, "WORKER_PORT": "12345", "nprocs": "2", "death_timeout": "10",
                    "tmpdir": "/tmp/main-scratch", "OCI__MODE": "MAIN"})
    p.export_configuration([p.main_config_file])
    assert {k: env.get(k) for k in ("SCHEDULER_IP", "MASTER_ADDR", "HEAD_IP", "OCI__WORKER_IP", "nprocs",
                                    "death_timeout")} == {"SCHEDULER_IP": MAIN_IP, "MASTER_ADDR": MAIN_IP,
                                                          "HEAD_IP": MAIN_IP, "OCI__WORKER_IP": MAIN_IP,
                                                          "nprocs": "2", "death_timeout": "10"}
    assert "WORKER_PORT" not in env  # neither declared nor its own, nor an address's name
    assert env.get("tmpdir") != "/tmp/main-scratch" and env["OCI__MODE"] == "WORKER"
    main_config(p, {"MASTER_ADDR": ELSEWHERE, "HEAD_IP": f"{MAIN_IP}/evil"})
    env.pop("MASTER_ADDR"), env.pop("HEAD_IP")
    p.export_configuration([p.main_config_file])
    assert "MASTER_ADDR" not in env and "HEAD_IP" not in env


def test_a_file_this_node_wrote_itself_is_taken_whole(tmp_path):
    """horovod_style exports its own config file: what this node wrote is its own (as when signed)."""
    p, env = worker(tmp_path)
    own = p.rendezvous.registration
    p.workdir.write_bytes(f"{p.node_id}_config.json", own.model_dump_json().encode())
    p.export_configuration([p.config_file])
    assert env["tmpdir"] == own.env["tmpdir"]


RULE = UnsignedExports(declared=("OCI__NODE_LIST", "OCI__TF_CLUSTER", "N", "FLAG", "WORD", "EMPTY"),
                       own=frozenset({"nprocs"}), main=MAIN_IP, roster=frozenset({MAIN_IP, WORKER_IP}))


@pytest.mark.parametrize("name, value", [
    ("OCI__NODE_LIST", f"{MAIN_IP},{WORKER_IP}"), ("OCI__TF_CLUSTER", json.dumps({"worker": [f"{MAIN_IP}:12345",
                                                                                               f"{WORKER_IP}:12345"]})),
    ("N", "3"), ("N", "2.5"), ("FLAG", "True"), ("WORD", "ocid1.job.oc1..aaa"), ("WORD", "run:7@x"), ("EMPTY", ""),
    ("nprocs", "4"),
    ("RAY_HOST", f"{MAIN_IP}:6379"), ("MASTER_ADDR", MAIN_IP), ("SOME_ADDRESS", f"ucx://{MAIN_IP}:8786"),
])
def test_values_of_their_type_pass(name, value):
    assert RULE.refusal(name, value) is None


@pytest.mark.parametrize("name, value, why", [
    ("OCI__NODE_LIST", f"{MAIN_IP},{ELSEWHERE}", "'6.6.6.6' in its list is not an address of the roster"),
    ("OCI__TF_CLUSTER", json.dumps({"worker": [f"{ELSEWHERE}:1"]}), "'6.6.6.6:1' in its JSON is not an address"),
    ("OCI__TF_CLUSTER", json.dumps({"worker": ["/tmp/x"]}), "'/tmp/x' in its JSON"),
    ("OCI__TF_CLUSTER", json.dumps({"worker": [ELSEWHERE]}), "'6.6.6.6' in its JSON"),
    ("N", f"{ELSEWHERE}:80", "'6.6.6.6:80' is not MAIN's address (10.0.0.1)"),
    ("WORD", "a b", "is not a count, a number, a flag, an address or a plain word"),
    ("WORD", "../x/y", "is not a count"), ("WORD", "$(id)", "is not a count"),
    ("MASTER_ADDR", f"http://{MAIN_IP}:80/x", "is not MAIN's address"), ("MASTER_ADDR", "evil.example.com", "not MAIN's"),
    ("UNDECLARED", "1", "a name neither this node's provider"),
    ("OCI__TF_CLUSTER_PLUGIN", "1", "a name that loads code or names a path"),
])
def test_values_not_of_their_type_or_names_not_declared_are_refused(name, value, why):
    refusal = RULE.refusal(name, value)
    assert refusal is not None and why in refusal, refusal
