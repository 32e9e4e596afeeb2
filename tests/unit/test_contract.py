"""The seed's contract: provider method names, construction, factory, entry points, runner."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fsm_cluster.errors import SettingsError
from fsm_cluster.provider import ClusterProvider
from fsm_cluster.registry import ClusterProviderFactory
from fsm_cluster.runner import ClusterRunner

SEED_NAMES = """basic_configuration check_cluster_status configuration create_sync_script execution_failed
expected_worker_count export_config_files export_configuration fetch_all_worker_info fetch_code
find_self_ip get_oci_auth get_sync_loc get_sync_script profile_cmd reached_endoflife ready run_code
setup_configuration setup_extra_configs start start_main start_ps start_worker stop stop_filesystem
sync tearable when_ready DEFAULT_CODE_DIR SYNC_SCRIPT_PATH""".split()


def test_every_seed_name_exists():
    missing = [n for n in SEED_NAMES if not hasattr(ClusterProvider, n)]
    assert missing == []
    assert ClusterProvider.DEFAULT_CODE_DIR == "/code"
    assert ClusterProvider.SYNC_SCRIPT_PATH == "/etc/datascience/sync.sh"


def test_seed_constructor_reads_the_rest_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("JOB_OCID", "job1")
    monkeypatch.setenv("JOB_RUN_OCID", "run7")
    monkeypatch.setenv("OCI__SELF_IP", "127.0.0.1")
    monkeypatch.setenv("OCI__WORKER_COUNT", "3")
    p = ClusterProvider("WORKER", ephemeral=False, life_span="2h", work_dir=str(tmp_path))
    assert (p.mode, p.ephemeral, p.expected_worker_count()) == ("WORKER", False, 3)
    assert p.end_time - p.start_time == pytest.approx(7200)
    assert p.config_file == f"{tmp_path}/job1/WORKER_run7_config.json"
    assert p.main_config_file == f"{tmp_path}/job1/MAIN_config.json"
    assert p.stop_file == f"{tmp_path}/job1/stop"
    assert p.state == "init"
    assert p.get_oci_auth() == {}  # no OCI involved: no auth asked for
    assert p.stop_filesystem.protocol[0] == "file"


def test_local_ip_comes_from_the_interfaces(monkeypatch, tmp_path):
    import psutil

    monkeypatch.delenv("OCI__SELF_IP", raising=False)
    p = ClusterProvider("MAIN", work_dir=str(tmp_path))
    addrs = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    assert p.ip in addrs | {"127.0.0.1"}


def test_export_configuration_refuses_hijacking_names(tmp_path, monkeypatch):
    monkeypatch.setenv("OCI__SELF_IP", "127.0.0.1")
    env: dict[str, str] = {"OCI__SELF_IP": "127.0.0.1"}
    p = ClusterProvider("MAIN", work_dir=str(tmp_path), environ=env)
    meta = '"fsm_cluster":{"schema_version":1,"node":"MAIN","mode":"MAIN","run_id":"r","ip":"1.2.3.4"}'
    from fsm_cluster.errors import ProtocolError

    for name in ["LD_PRELOAD", "PATH", "PYTHONHOME", "PYTHONSTARTUP", "http_proxy", "BASH_ENV",
                 "DYLD_INSERT_LIBRARIES"]:
        for body in ('{"%s":"x",%s}' % (name, meta), '{"OCI__MAIN_IP":"1.2.3.4","%s":"x"}' % name):  # ours; oracle-ads'
            p.workdir.write_bytes("MAIN_config.json", body.encode())
            with pytest.raises(ProtocolError, match=f"MAIN_config.json.*{name}.*hijack"):
                p.export_configuration([p.main_config_file])
            assert name not in env


def test_export_configuration_exports_every_variable_like_oracle_ads(tmp_path, monkeypatch):
    """oracle-ads exports every key of MAIN's flat config, lower-case ones too (Dask's nprocs,
    death_timeout), as str(value); who a node is (OCI__MODE, RANK, JOB_OCID, JOB_RUN_OCID) stays in
    the file; OCI__EXPORTS narrows the exports to declared names. (A file the cluster's secret
    vouches for; an unsigned one gives less: tests/unit/test_unsigned_exports.py, issue 24 H1.)"""
    import json

    monkeypatch.setenv("OCI__SELF_IP", "127.0.0.1")
    flat = {"OCI__MAIN_IP": "1.2.3.4", "SCHEDULER_IP": "1.2.3.4", "nprocs": 2, "death_timeout": 10,
            "tls": True, "OCI__MODE": "MAIN", "RANK": "0", "JOB_OCID": "x", "JOB_RUN_OCID": "y", "a-b": "1"}
    for declared, expect in (("", {"OCI__MAIN_IP": "1.2.3.4", "SCHEDULER_IP": "1.2.3.4", "nprocs": "2",
                                   "death_timeout": "10", "tls": "True"}),
                             ("SCHED*", {"OCI__MAIN_IP": "1.2.3.4", "SCHEDULER_IP": "1.2.3.4"})):
        env: dict[str, str] = {"OCI__SELF_IP": "127.0.0.1", "OCI__MODE": "WORKER", "RANK": "1",
                               "OCI__EXPORTS": declared, "OCI__CLUSTER_SECRET": "s" * 32}
        p = ClusterProvider("WORKER", work_dir=str(tmp_path), environ=env)
        p.workdir.write_bytes("MAIN_config.json", p.workdir.sign("MAIN_config.json", json.dumps(flat).encode()))
        p.export_configuration([p.main_config_file])
        taken = {k: env[k] for k in flat if k in env}
        assert {k: v for k, v in taken.items() if k not in ("OCI__MODE", "RANK")} == expect
        assert (env["OCI__MODE"], env["RANK"]) == ("WORKER", "1")  # never MAIN's identity
        assert "JOB_OCID" not in env and "a-b" not in env


@pytest.fixture(autouse=True)
def _registry_left_as_found(monkeypatch):
    """Kinds registered (or cached) by a test do not leak into the tests after it."""
    monkeypatch.setattr(ClusterProviderFactory, "provider", dict(ClusterProviderFactory.provider))


def test_factory_register_get_and_unknown():
    class Mine(ClusterProvider):
        pass

    ClusterProviderFactory.register("mine", Mine)
    assert ClusterProviderFactory.get_provider_class("MINE") is Mine
    assert ClusterProviderFactory.get_provider_class("command").__name__ == "CommandProvider"
    with pytest.raises(SettingsError, match="OCI__CLUSTER_TYPE: unknown cluster type 'NOPE'"):
        ClusterProviderFactory.get_provider_class("NOPE")


def test_provider_discovered_through_entry_points(tmp_path, monkeypatch):
    """A real installed distribution (dist-info on sys.path) declaring fsm_cluster.providers."""
    (tmp_path / "myprov.py").write_text(textwrap.dedent("""
        from fsm_cluster.provider import ClusterProvider
        class MyProvider(ClusterProvider):
            pass
    """))
    dist = tmp_path / "myprov-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myprov\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fsm_cluster.providers]\nMYKIND = myprov:MyProvider\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = ClusterProviderFactory.get_provider_class("mykind")
    assert cls.__name__ == "MyProvider" and cls.__module__ == "myprov"
    assert "MYKIND" in ClusterProviderFactory.known()


def test_cluster_runner_run_exits_with_the_node_code(tmp_path, monkeypatch):
    for k, v in {"OCI__MODE": "MAIN", "OCI__WORK_DIR": str(tmp_path), "JOB_OCID": "c",
                 "OCI__SELF_IP": "127.0.0.1", "OCI__ENTRY_SCRIPT": "/bin/false", "OCI__WORKER_COUNT": "0"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as e:
        ClusterRunner().run()
    assert e.value.code == 1
    monkeypatch.setenv("OCI__ENTRY_SCRIPT", "/bin/true")
    (tmp_path / "c" / "stop").unlink()
    with pytest.raises(SystemExit) as e:
        ClusterRunner().run()
    assert e.value.code == 0


def test_cluster_runner_with_a_given_provider(tmp_path):
    env = {"OCI__MODE": "MAIN", "OCI__WORK_DIR": str(tmp_path), "OCI__SELF_IP": "127.0.0.1", "OCI__WORKER_COUNT": "0"}
    p = ClusterProvider("MAIN", work_dir=str(tmp_path), environ=env)
    assert ClusterRunner(cluster_provider=p, environ=env).execute() == 0
    assert p.state == "stopped"


def test_python_dash_m_and_version():
    r = subprocess.run([sys.executable, "-m", "fsm_cluster", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("fsm-cluster ")
