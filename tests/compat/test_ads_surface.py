"""oracle-ads' provider surface, one pattern per test: the names its providers use, where its
runner calls the hooks (and where it does not), and processes a provider starts itself."""

from __future__ import annotations

import subprocess

import psutil
import pytest

from fsm_cluster.provider import ClusterProvider
from fsm_cluster.registry import ClusterProviderFactory
from unit.simcluster import SimCluster


def _provider(tmp_path, mode="WORKER", **env):
    environ = {"OCI__SELF_IP": "10.1.2.3", "JOB_OCID": "job1", "JOB_RUN_OCID": "run7", "OCI__MODE": mode,
               "OCI__WORK_DIR": str(tmp_path / "wd"), **env}
    return ClusterProvider(mode, work_dir=str(tmp_path / "wd"), environ=environ)


def test_oracle_ads_attribute_names(tmp_path):
    p = _provider(tmp_path)
    assert (p.jobDefID, p.jobRunID, p.scheme) == ("job1", "run7", "file")
    assert p.my_work_dir.endswith("/wd/job1")
    assert p.config_file == p.my_work_dir + "/WORKER_run7_config.json"
    assert p.main_config_file == p.my_work_dir + "/MAIN_config.json" and p.stop_file == p.my_work_dir + "/stop"
    assert p.basic_configuration() == {"OCI__WORKER_IP": "10.1.2.3", "tmpdir": p.my_work_dir}
    assert (p.SYNC_SCRIPT_PATH, p.DEFAULT_CODE_DIR) == ("/etc/datascience/sync.sh", "/code")
    p._get_my_work_dir()  # oracle-ads subclasses may call it again
    assert p.config_file.endswith("WORKER_run7_config.json")
    p.execution_failure = True  # oracle-ads' attribute is assignable
    assert p.execution_failure and p.tearable()


def test_find_self_ip_is_callable_on_the_class_and_overridable(tmp_path, monkeypatch):
    monkeypatch.setenv("OCI__SELF_IP", "10.9.9.9")
    assert ClusterProvider.find_self_ip({}) == "10.9.9.9"  # oracle-ads: a classmethod

    class Local(ClusterProvider):  # the samples' override, calling the base
        def find_self_ip(self, authinfo):
            return "local:" + super().find_self_ip(authinfo)

    p = Local("MAIN", work_dir=str(tmp_path), environ={"OCI__SELF_IP": "10.1.1.1", "OCI__MODE": "MAIN"})
    assert p.ip == "local:10.1.1.1"


def test_factory_provider_dict_register_and_get_provider(monkeypatch):
    monkeypatch.setattr(ClusterProviderFactory, "provider", dict(ClusterProviderFactory.provider))

    class Mine(ClusterProvider):
        pass

    ClusterProviderFactory.register("mine", Mine)
    assert ClusterProviderFactory.provider["MINE"] is Mine  # oracle-ads' dict, upper-case keys


def test_fetch_remote_and_fetch_git_take_the_code_dir(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print('hi')\n")
    p = _provider(tmp_path, OCI__RUNTIME_URI=str(src))
    p._fetch_remote(code_dir=str(tmp_path / "code_remote"))
    assert (tmp_path / "code_remote" / "train.py").read_text() == "print('hi')\n"

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q", str(src)], check=True)
    subprocess.run(git + ["-C", str(src), "add", "train.py"], check=True)
    subprocess.run(git + ["-C", str(src), "commit", "-q", "-m", "c"], check=True)
    p = _provider(tmp_path, OCI__RUNTIME_URI=str(src), OCI__RUNTIME_TYPE="git")
    p._fetch_git(code_dir=str(tmp_path / "code_git"))
    assert (tmp_path / "code_git" / "train.py").exists()


def test_check_cluster_status_is_called_only_by_the_provider_itself():
    """oracle-ads' runner never calls check_cluster_status (the Dask sample opens a Client in it):
    the node's life must not call it on every heartbeat."""
    calls = []

    class Counting(SimCluster().provider_cls):
        def check_cluster_status(self):
            calls.append(self.node_id)

    c = SimCluster(workers=2, provider_cls=Counting, OCI__HEARTBEAT_INTERVAL=1, OCI__HEARTBEAT_TIMEOUT=5)
    assert c.run(code_seconds=30) == [0, 0, 0]
    assert calls == []


PROVIDER = '''
import os, subprocess, sys
from fsm_cluster.provider import ClusterProvider

class Backgrounding(ClusterProvider):
    """Starts its "engine" the way oracle-ads' Dask and Ray samples do: a script that backgrounds
    a daemon and exits at once."""

    def _start(self, what):
        ret = subprocess.run(["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(600)' "
                              f"ads-bg-{what}-$JOB_RUN_OCID & echo started"])
        if ret.returncode != 0:
            raise Exception("could not start")

    def start_main(self):
        self._start("scheduler")

    def start_worker(self):
        self._start("worker")
'''


@pytest.mark.integration
def test_processes_a_start_script_backgrounds_are_ended_with_the_node(tmp_path):
    """Nodes started by hand, as job runs are (no launcher to sweep after them): the daemons
    their start scripts backgrounded end with them."""
    from integration.localnodes import LocalNodes

    (tmp_path / "bgprov.py").write_text(PROVIDER)
    entry = tmp_path / "entry.sh"  # MAIN's job outlasts the start: every node starts its daemon
    entry.write_text("#!/bin/sh\nsleep 2\n")
    entry.chmod(0o755)
    c = LocalNodes(tmp_path, extra={"OCI__CLUSTER_TYPE": "bgprov:Backgrounding", "PYTHONPATH": str(tmp_path),
                                    "OCI__ENTRY_SCRIPT": str(entry)})
    codes = c.start().wait(timeout=60)
    left = [p for p in psutil.process_iter(["cmdline"]) if any("ads-bg-" in a for a in p.info["cmdline"] or [])]
    for p in left:
        p.kill()
    assert codes == [0, 0, 0], c.dump()
    assert c.dump().count("started") >= 3
    assert left == []


def test_fetch_code_goes_through_the_overridable_fetch_hooks(tmp_path):
    """oracle-ads' fetch_code dispatches to self._fetch_git / self._fetch_remote: a subclass that
    overrides one (e.g. to fetch from its own store) is used."""
    fetched = []

    class Own(ClusterProvider):
        def _fetch_remote(self, code_dir):
            fetched.append(code_dir)

    environ = {"OCI__SELF_IP": "10.1.2.3", "OCI__MODE": "MAIN", "OCI__RUNTIME_TYPE": "remote",
               "OCI__RUNTIME_URI": "oci://bucket@ns/code.tar.gz", "OCI__CODE_DIR": str(tmp_path / "code")}
    Own("MAIN", work_dir=str(tmp_path / "wd"), environ=environ).fetch_code()
    assert fetched == [str(tmp_path / "code")]
