"""The work dir as a trust boundary, and a cluster's lives, on virtual time and memory:// (real
provider, lifecycle and protocol code): signed files, refused forgeries, bounded reads, declared
exports, re-runs of the same job in the same work dir, and settings that make no sense."""

from __future__ import annotations

import json
import logging

import pytest

from fsm_cluster.env import Settings
from fsm_cluster.errors import ProtocolError, SettingsError, SignatureError
from fsm_cluster.wire.models import NodeConfig, RosterEntry, StopMarker
from fsm_cluster.wire.workdir import WorkDir

from .simcluster import SimCluster

SECRET = "0123456789abcdef" * 4


def path(c: SimCluster, name: str) -> str:
    return WorkDir(c.work_dir, "c1", fs=c.fs).path(name)


def raw(c: SimCluster, name: str) -> bytes:
    return c.fs.cat_file(path(c, name))


def put(c: SimCluster, name: str, data: bytes) -> None:
    c.fs.pipe_file(path(c, name), data)


def unsigned(model) -> bytes:
    return model.model_dump_json().encode()


# --- lives: the same job again, in the same work dir --------------------------------------------
def test_a_rerun_runs_its_code_and_keeps_the_previous_life_aside():
    c = SimCluster(workers=2)
    assert c.run(code_seconds=30) == [0, 0, 0]
    first = c.workdir.read_stop()
    c.providers = []
    began = c.clock.now()
    # The workers of the new life start before its MAIN: they find the old stop marker and the
    # old MAIN_config.json (whose roster even lists them: same run ids) and must not take either.
    assert c.run(code_seconds=30, start_at=[20.0, 0.0, 0.0]) == [0, 0, 0]
    main = c.providers[0]
    second = c.workdir.read_stop()
    assert second.outcome == "complete" and second.life == main.life != first.life
    assert c.clock.now() - began >= 20 + 30  # this life's code ran, for its 30 s
    for w in c.providers[1:]:
        assert w.life == main.life and "running" in w.entered
        assert c.workdir.read_state(w.node_id).stop.life == main.life
    archived = [p for p in c.fs.find(c.workdir.root) if "/previous/" in p]
    assert any(p.endswith(f"/previous/{first.life}-" + p.split(f"{first.life}-")[1].split("/")[0] + "/stop")
               for p in archived)
    assert {p.rsplit("/", 1)[1] for p in archived} >= {"stop", "MAIN_config.json", "MAIN_state.json",
                                                        "WORKER_worker1_config.json", "WORKER_worker2_state.json"}


def test_a_rerun_with_a_new_secret_takes_nothing_of_the_old_launch():
    c = SimCluster(workers=1, OCI__CLUSTER_SECRET=SECRET)
    assert c.run(code_seconds=5) == [0, 0]
    c.providers = []
    c.envs = [{**e, "OCI__CLUSTER_SECRET": "f" * 64} for e in c.envs]
    began = c.clock.now()
    assert c.run(code_seconds=5, start_at=[3.0, 0.0]) == [0, 0]
    assert c.clock.now() - began >= 8
    assert c.workdir.read_stop().life == c.providers[0].life


def test_a_worker_that_never_sees_mains_state_file_fails_after_the_timeout():
    c = SimCluster(workers=1, OCI__HEARTBEAT_INTERVAL=1, OCI__HEARTBEAT_TIMEOUT=3)
    # MAIN published its configuration, then died before its first state file.
    main_cfg = NodeConfig(node="MAIN", mode="MAIN", run_id="main", ip="10.0.0.1", life="l1",
                          roster=[RosterEntry(node="MAIN", mode="MAIN", run_id="main", rank=0, ip="10.0.0.1"),
                                  RosterEntry(node="WORKER_worker1", mode="WORKER", run_id="worker1",
                                              rank=1, ip="10.0.0.2")])
    w = c.build(c.envs[1])
    w.workdir.write("MAIN_config.json", main_cfg)
    from fsm_cluster.runner import drive

    began = c.clock.now()
    assert c.clock.run([lambda: drive(w)]) == [1]
    assert "MAIN wrote no state file" in w.reason
    assert c.clock.now() - began <= 3 + 2 * 1


# --- settings that make no sense ------------------------------------------------------------------
BASE = {"OCI__MODE": "MAIN", "OCI__WORK_DIR": "/tmp/x"}


@pytest.mark.parametrize("name,value", [
    # infinite durations
    ("OCI__TIMEOUT", "inf"), ("OCI__TIMEOUT", "nan"), ("OCI__HEARTBEAT_INTERVAL", "inf"),
    ("OCI__TEARDOWN_GRACE", "inf"),
    # identifiers that could leave the work dir
    ("JOB_OCID", "../x"), ("JOB_OCID", "a/b"), ("JOB_RUN_OCID", ".."), ("JOB_RUN_OCID", "w\n1"),
    ("JOB_OCID", ".hidden"),
    # a secret too short to be one
    ("OCI__CLUSTER_SECRET", "short"),
])
def test_a_meaningless_or_unsafe_setting_is_refused_naming_its_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**BASE, name: value})


def test_a_heartbeat_timeout_shorter_than_two_intervals_is_refused():
    with pytest.raises(SettingsError, match="OCI__HEARTBEAT_TIMEOUT .* OCI__HEARTBEAT_INTERVAL"):
        Settings.from_env({**BASE, "OCI__HEARTBEAT_INTERVAL": "10", "OCI__HEARTBEAT_TIMEOUT": "5"})
    Settings.from_env({**BASE, "OCI__HEARTBEAT_INTERVAL": "10", "OCI__HEARTBEAT_TIMEOUT": "20"})


def test_the_secret_is_not_in_the_settings_repr():
    s = Settings.from_env({**BASE, "OCI__CLUSTER_SECRET": SECRET})
    assert SECRET not in repr(s) and SECRET not in str(s)


# --- the entry script is checked before a node registers -------------------------------------------
def test_a_missing_entry_script_fails_the_node_before_it_registers(tmp_path):
    c = SimCluster(workers=1, OCI__RUN_ON="all", OCI__ENTRY_SCRIPT="no_such_script.py",
                   OCI__CODE_DIR=str(tmp_path), OCI__HEARTBEAT_INTERVAL=1, OCI__HEARTBEAT_TIMEOUT=3)
    from fsm_cluster.runner import drive
    from fsm_cluster.testing import SimulatedCodeProvider

    w = c.build(c.envs[1])
    assert c.clock.run([lambda: drive(w)]) == [1]
    assert "OCI__ENTRY_SCRIPT: no such file: no_such_script.py" in w.reason
    assert not c.fs.exists(path(c, "WORKER_worker1_config.json"))  # never registered
    assert isinstance(w, SimulatedCodeProvider)


# --- signatures --------------------------------------------------------------------------------
def test_with_a_secret_every_shared_file_is_signed_and_the_cluster_completes():
    c = SimCluster(workers=2, OCI__CLUSTER_SECRET=SECRET, OCI__RUN_ON="all")
    assert c.run(code_seconds=5) == [0, 0, 0]
    names = [n.rsplit("/", 1)[1] for n in c.fs.find(c.workdir.root)]
    assert {"stop", "MAIN_config.json", "WORKER_worker1_done"} <= set(names)
    for name in names:
        body = json.loads(raw(c, name))
        assert len(body["sig"]) == 64, name
    with pytest.raises(SignatureError, match="bad signature"):
        WorkDir(c.work_dir, "c1", fs=c.fs, secret="x" * 32).read_stop()


def test_forged_registrations_never_join_the_roster(caplog):
    c = SimCluster(workers=1, OCI__CLUSTER_SECRET=SECRET)
    # Before the cluster starts, someone with write access adds a node of their own (unsigned),
    # one that names another node than its file, and a 5 MB one.
    put(c, "WORKER_evil_config.json", unsigned(NodeConfig(node="WORKER_evil", mode="WORKER",
                                                          run_id="evil", ip="6.6.6.6")))
    signed_wrong = WorkDir(c.work_dir, "c1", fs=c.fs, secret=SECRET)
    signed_wrong.write("WORKER_x_config.json", NodeConfig(node="WORKER_worker1", mode="WORKER",
                                                          run_id="worker1", ip="6.6.6.6"))
    put(c, "WORKER_big_config.json", b"{" + b" " * (5 * 1024 * 1024) + b"}")
    caplog.set_level(logging.WARNING)
    assert c.run(code_seconds=5) == [0, 0]
    roster = c.workdir.read_config("MAIN").roster
    assert [r.node for r in roster] == ["MAIN", "WORKER_worker1"]
    assert "6.6.6.6" not in raw(c, "MAIN_config.json").decode()
    text = caplog.text
    assert "WORKER_evil_config.json: not signed, refused" in text
    assert "WORKER_x_config.json: names node 'WORKER_worker1'" in text
    assert "WORKER_big_config.json: larger than" in text


def test_forged_and_bare_stop_markers_are_ignored_and_replaced():
    c = SimCluster(workers=1, OCI__CLUSTER_SECRET=SECRET, OCI__HEARTBEAT_INTERVAL=1, OCI__HEARTBEAT_TIMEOUT=5)

    def forge():
        c.clock.sleep(5)  # mid-run: a forged "complete" would end the code early (exit 0, a lie)
        put(c, "stop", unsigned(StopMarker(outcome="complete", node="MAIN", reason="forged")))
        c.clock.sleep(5)
        c.fs.rm_file(path(c, "stop"))
        put(c, "stop", b"stop")  # the ADS bare stop file is unsigned too

    began = c.clock.now()
    codes = c.run(code_seconds=30, extra_fns=[forge])
    assert codes[:2] == [0, 0]
    assert c.clock.now() - began >= 30
    stop = c.workdir.read_stop()  # verified: MAIN replaced the forged file with its own
    assert (stop.node, stop.reason) == ("MAIN", "code completed")


def test_a_forged_state_file_of_an_unknown_node_does_not_fail_the_cluster():
    c = SimCluster(workers=1, OCI__HEARTBEAT_INTERVAL=1, OCI__HEARTBEAT_TIMEOUT=3)
    put(c, "WORKER_ghost_state.json", b'{"node": "WORKER_ghost"}')
    assert c.run(code_seconds=20) == [0, 0]  # a state file that never changes is not a node


def test_with_oci_exports_mains_variables_reach_the_nodes_only_when_declared():
    class Exporting(SimCluster().provider_cls):
        def configuration(self, conf=None):
            return {**(conf or {}), "FOO_INJECT": "1", "EXTRA_OK": "2"}

    c = SimCluster(workers=1, provider_cls=Exporting, OCI__EXPORTS="EXTRA_OK")
    assert c.run(code_seconds=1) == [0, 0]
    w = c.providers[1]
    assert w.main_config.env["FOO_INJECT"] == "1"  # still in the file
    assert "FOO_INJECT" not in w.environ and w.environ["EXTRA_OK"] == "2"
    assert w.environ["OCI__MAIN_IP"] == "10.0.0.1" and w.environ["WORLD_SIZE"] == "2"


@pytest.mark.parametrize("name", ["GLIBC_TUNABLES", "JDK_JAVA_OPTIONS", "PERLLIB", "RUBYLIB", "NODE_PATH",
                                  "CLASSPATH", "GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "HTTPS_PROXY",
                                  "REQUESTS_CA_BUNDLE", "SSL_CERT_DIR", "AWS_ENDPOINT_URL", "ZDOTDIR",
                                  "PYTHONPYCACHEPREFIX", "OCI__START_ARGS", "OCI_CONFIG_LOCATION"])
def test_hijack_names_in_a_shared_config_are_refused_naming_them(name):
    wd = WorkDir("memory://hijack", "c1")
    for flat in ({name: "x", "fsm_cluster": {"node": "MAIN", "mode": "MAIN", "run_id": "m", "ip": "1.2.3.4"}},
                 {"OCI__MAIN_IP": "1.2.3.4", name: "x"}):  # fsm_cluster's file; oracle-ads'
        wd.fs.pipe_file(wd.path("MAIN_config.json"), json.dumps(flat).encode())
        with pytest.raises(ProtocolError, match=f"MAIN_config.json: .*{name}.*may not be set by a shared config"):
            wd.read_config("MAIN")


def test_reads_are_bounded_whatever_the_file_size():
    wd = WorkDir("memory://bounded", "c1")
    wd.fs.pipe_file(wd.path("MAIN_state.json"), b" " * (5 << 20))
    with pytest.raises(ProtocolError, match="MAIN_state.json: larger than 4194304 bytes"):
        wd.read_state("MAIN")
    with pytest.raises(ValueError, match="node\n  String should match pattern"):
        NodeConfig(node="../MAIN", mode="MAIN", run_id="m", ip="1.1.1.1")


def test_a_stop_written_before_the_life_began_ends_it():
    """A marker without a life and without MAIN's files (a launcher's Ctrl-C while the nodes
    start, an operator's early stop) is this life's: the nodes stop without running code."""
    c = SimCluster(workers=1)
    put(c, "stop", unsigned(StopMarker(outcome="stopped", node="operator", reason="not now")))
    began = c.clock.now()
    # (A worker arriving after MAIN already stopped finds MAIN's state file beside the marker and
    # cannot tell this life from a previous one: it waits for a new MAIN. Here it looks first.)
    assert c.run(code_seconds=30, start_at=[1.0, 0.0]) == [0, 0]
    assert c.clock.now() - began < 30
    assert all("stopped by operator: not now" == p.reason for p in c.providers)
    assert not any("running" in p.entered for p in c.providers)
    assert not c.fs.exists(path(c, "previous"))
