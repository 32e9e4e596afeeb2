"""A node's address and MAIN's reachability on real networks (issue 23, items 1 and 2): network
namespaces made here, each a host of its own (veth links, addresses, routes), every one deleted
afterwards, also when a test fails; all traffic stays inside them.

* the address a node takes: the default route's interface's (not the first listed), the
  OCI__CLUSTER_NETWORK subnet's or interface's, OCI__SELF_IP over both, one clear error when the
  node has no address there, and without a default route the first non-loopback address, then
  127.0.0.1;
* a worker that cannot reach MAIN's published address fails at once saying which address, which
  interface it would use and which setting to use — with the channel (before it registers) and
  without it (OCI__CONTROL=off, OCI__CONTROL_PORT set: on MAIN's configuration); two reachable
  hosts form and complete with no per-node setting;
* a provider in the style of Oracle's PyTorch sample finds GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME
  naming the interface of the node's address in the environment its own ``subprocess.run`` gives.

Needs root (CAP_NET_ADMIN) and ``ip``; without them the tests skip saying so (under CI=true that
is a failure).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fsm_cluster
from fsm_cluster.clock import Backoff, SystemClock, wait_until

ROOT = Path(fsm_cluster.__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "compat" / "samples"
_names = itertools.count()


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _show(ns: str, nic: str) -> str:
    return subprocess.run(["ip", "-n", ns, "-o", "link", "show", "dev", nic], capture_output=True, text=True,
                          check=False).stdout


class Hosts:
    """Network namespaces of one test, each standing for a host (``add``), linked by veth pairs
    (``link``); ``delete`` removes every one (and with them their links)."""

    def __init__(self):
        self.names: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def add(self) -> str:
        name = f"fsmt{os.getpid()}x{next(_names)}"
        _ip("netns", "add", name)
        self.names.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def link(self, a: str, a_if: str, a_cidr: str | None, b: str, b_if: str, b_cidr: str | None) -> None:
        """A veth pair: ``a_if`` in ``a`` (address ``a_cidr``), ``b_if`` in ``b``; both up."""
        _ip("-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b)
        for ns, nic, cidr in ((a, a_if, a_cidr), (b, b_if, b_cidr)):
            if cidr:
                _ip("-n", ns, "addr", "add", cidr, "dev", nic)
            _ip("-n", ns, "link", "set", nic, "up")
        for ns, nic in ((a, a_if), (b, b_if)):  # the carrier comes up a moment later
            wait_for(lambda ns=ns, nic=nic: "LOWER_UP" in _show(ns, nic), 10, f"{nic} up")

    def run(self, ns: str, code: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code)],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})

    def start(self, ns: str, argv: list[str], env: dict, log: Path, cwd: Path | None = None) -> subprocess.Popen:
        with open(log, "wb") as out:
            p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *argv], env=env, cwd=cwd,
                                 stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def delete(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for name in self.names:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


@pytest.fixture
def hosts():
    why = None
    if os.geteuid() != 0:
        why = "network namespaces need root (CAP_NET_ADMIN)"
    elif shutil.which("ip") is None:
        why = "no `ip` command (iproute2)"
    h = Hosts()
    if why is None:
        try:
            h.add()
        except RuntimeError as e:
            why = f"cannot make a network namespace: {e}"
    if why is not None:
        h.delete()
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield h
    finally:
        h.delete()


CHOICE = """
    import json
    from fsm_cluster.errors import SettingsError
    from fsm_cluster.node.identity import default_address, find_self_ip, interfaces, node_address

    out = {"listed_first": default_address(None, interfaces()),
           "default": find_self_ip("", "Undefined", {}),
           "subnet": find_self_ip("", "Undefined", {}, "10.77.9.0/24"),
           "interface": find_self_ip("", "Undefined", {}, "side0"),
           "self_ip_wins": node_address({"OCI__SELF_IP": "10.77.1.2", "OCI__CLUSTER_NETWORK": "side0"}, {})}
    try:
        find_self_ip("", "Undefined", {}, "172.31.0.0/16")
    except SettingsError as e:
        out["none"] = str(e)
    print(json.dumps(out))
"""


def choose(hosts: Hosts, ns: str) -> dict:
    r = hosts.run(ns, CHOICE)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_address_a_node_takes(hosts):
    """A host whose first interface (side0) is not the one its default route leaves by (main0)."""
    node, net = hosts.names[0], hosts.add()
    hosts.link(node, "side0", "10.77.9.2/24", net, "side1", None)
    hosts.link(node, "main0", "10.77.1.2/24", net, "main1", "10.77.1.1/24")
    _ip("-n", node, "route", "add", "default", "via", "10.77.1.1", "dev", "main0")

    got = choose(hosts, node)
    assert got["listed_first"] == ["10.77.9.2", "side0"]  # what a node took before: the first listed
    assert got["default"] == ["10.77.1.2", "main0"]  # the default route's interface
    assert got["subnet"] == ["10.77.9.2", "side0"]
    assert got["interface"] == ["10.77.9.2", "side0"]
    assert got["self_ip_wins"] == ["10.77.1.2", None]
    assert got["none"].startswith("OCI__CLUSTER_NETWORK=172.31.0.0/16: this node has no address in subnet "
                                  "172.31.0.0/16; its interfaces: lo 127.0.0.1")
    assert "side0 10.77.9.2" in got["none"] and "main0 10.77.1.2" in got["none"]
    assert got["none"].endswith("or OCI__SELF_IP on this node")

    _ip("-n", node, "route", "del", "default")  # no default route: the first non-loopback address
    assert choose(hosts, node)["default"] == ["10.77.9.2", "side0"]
    alone = hosts.add()  # loopback only: 127.0.0.1
    r = hosts.run(alone, "from fsm_cluster.node.identity import find_self_ip; print(find_self_ip('', 'x', {}))")
    assert r.stdout.strip() == "('127.0.0.1', 'lo')", r.stderr


# -- two hosts: MAIN and a worker -----------------------------------------------------------------------
def node_env(tmp: Path, mode: str, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "JOB_", "RANK", "GLOO_", "NCCL_"))}
    env.update({"OCI__WORK_DIR": str(tmp / "wd"), "JOB_OCID": "netcluster", "OCI__WORKER_COUNT": "1",
                "OCI__MODE": mode, "RANK": "0" if mode == "MAIN" else "1",
                "JOB_RUN_OCID": "main" if mode == "MAIN" else "w1", "OCI__CLUSTER_NETWORK": "10.77.0.0/16",
                "OCI__HEARTBEAT_INTERVAL": "0.5", "OCI__HEARTBEAT_TIMEOUT": "5", "OCI__TIMEOUT": "60",
                "OCI__TEARDOWN_GRACE": "2", "OCI__ENTRY_SCRIPT": str(tmp / "code.py"), "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def two_hosts(hosts: Hosts, tmp: Path, same_subnet: bool) -> tuple[str, str]:
    """MAIN's host (10.77.1.2) and a worker's, linked: on the same subnet (10.77.1.3), or the worker
    on another (10.77.2.2) with its default route through a gateway nobody answers for."""
    main, worker = hosts.names[0], hosts.add()
    hosts.link(main, "m0", "10.77.1.2/24", worker, "w0", "10.77.1.3/24" if same_subnet else "10.77.2.2/24")
    if not same_subnet:
        _ip("-n", worker, "route", "add", "default", "via", "10.77.2.1", "dev", "w0")
    (tmp / "code.py").write_text("import time; time.sleep(float(__import__('os').environ.get('HOLD', '0')))\n")
    return main, worker


def wait_for(predicate, timeout: float, what: str):
    return wait_until(predicate, timeout, SystemClock(), Backoff(first=0.05, cap=0.2), what)


def main_channel(tmp: Path) -> str:
    def read():
        try:
            return json.loads((tmp / "wd" / "netcluster" / "MAIN_state.json").read_text()).get("control")
        except (OSError, ValueError):
            return None
    return wait_for(read, 30, "control address in MAIN's state file")


def run_nodes(hosts, tmp, main_ns, worker_ns, main_first=True, **extra) -> tuple[list[int], str, str]:
    logs = [tmp / "main.log", tmp / "worker.log"]
    procs = [hosts.start(main_ns, ["-m", "fsm_cluster", "run"], node_env(tmp, "MAIN", **extra), logs[0])]
    if main_first:
        main_channel(tmp)
    procs.append(hosts.start(worker_ns, ["-m", "fsm_cluster", "run"], node_env(tmp, "WORKER", **extra), logs[1]))
    codes = [p.wait(90) for p in procs]
    return codes, logs[0].read_text(errors="replace"), logs[1].read_text(errors="replace")


ADVICE = ("Every node must publish an address the others can reach: set OCI__CLUSTER_NETWORK (spec: "
          "cluster.spec.network) to the cluster's subnet (e.g. 10.0.1.0/24) or interface name (e.g. eth1), the "
          "same for every node, or OCI__SELF_IP on each node")


def test_an_unreachable_main_is_said_before_the_worker_registers(hosts, tmp_path):
    main, worker = two_hosts(hosts, tmp_path, same_subnet=False)
    codes, main_log, worker_log = run_nodes(hosts, tmp_path, main, worker, HOLD="30")
    channel = main_channel(tmp_path)
    assert channel.startswith("10.77.1.2:")
    assert codes == [1, 1], (main_log, worker_log)
    said = (f"MAIN's control channel (from MAIN's state file) {channel} is not reachable from this node (")
    assert said in worker_log
    assert ("this node's address is 10.77.2.2, it would reach 10.77.1.2 from 10.77.2.2 on interface w0. "
            + ADVICE) in worker_log
    assert not (tmp_path / "wd" / "netcluster" / "WORKER_w1_config.json").exists()  # it never registered
    assert "cluster failed on WORKER_w1: " + said in main_log


def test_without_the_channel_it_is_said_on_mains_configuration(hosts, tmp_path):
    main, worker = two_hosts(hosts, tmp_path, same_subnet=False)
    codes, main_log, worker_log = run_nodes(hosts, tmp_path, main, worker, main_first=False,
                                            OCI__CONTROL="off", OCI__CONTROL_PORT="4777", HOLD="30")
    assert codes == [1, 1], (main_log, worker_log)
    assert ("MAIN's address (MAIN_config.json) on OCI__CONTROL_PORT 10.77.1.2:4777 is not reachable from this "
            "node (") in worker_log
    assert "it would reach 10.77.1.2 from 10.77.2.2 on interface w0. " + ADVICE in worker_log


def test_two_hosts_on_one_subnet_form_and_complete_without_per_node_addresses(hosts, tmp_path):
    main, worker = two_hosts(hosts, tmp_path, same_subnet=True)
    codes, main_log, worker_log = run_nodes(hosts, tmp_path, main, worker)  # MAIN's channel is out: checked
    assert codes == [0, 0], (main_log, worker_log)
    config = json.loads((tmp_path / "wd" / "netcluster" / "MAIN_config.json").read_text())
    assert [r["ip"] for r in config["fsm_cluster"]["roster"]] == ["10.77.1.2", "10.77.1.3"]
    assert "not reachable" not in worker_log
    # the worker's check of MAIN's channel before it registered is no warning on MAIN's side
    assert "closed before the handshake (a reachability check)" in main_log
    assert not [ln for ln in main_log.splitlines() if "WARNING" in ln and "control channel" in ln], main_log


# -- oracle-ads' environment for an oracle-ads-style provider ----------------------------------------------
def test_a_pytorch_style_providers_subprocess_binds_to_the_nodes_interface(hosts, tmp_path):
    """Oracle's PyTorch sample starts training with ``subprocess.run(cmd)`` from ``os.environ``: the
    node's address is on ``n0`` (OCI__CLUSTER_NETWORK), so gloo / NCCL must be told ``n0``."""
    node, net = hosts.names[0], hosts.add()
    hosts.link(node, "n0", "10.77.5.2/24", net, "n1", None)
    (tmp_path / "dump.py").write_text(textwrap.dedent("""
        import json, os
        names = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "MASTER_ADDR", "OCI__CODE_DIR")
        with open(os.path.join(os.environ["SAMPLE_OUT"], "env.json"), "w") as f:
            json.dump({n: os.environ.get(n) for n in names}, f)
    """))
    style = SAMPLES / "pytorch_style"
    env = node_env(tmp_path, "MAIN", OCI__WORKER_COUNT="0", OCI__CLUSTER_TYPE="PYTORCH", OCI__CLUSTER_NETWORK="n0",
                   OCI__CODE_DIR=str(tmp_path), OCI__ENTRY_SCRIPT="dump.py", SAMPLE_OUT=str(tmp_path),
                   POST_PROCESSING_WAIT="0", PYTHONPATH=os.pathsep.join(map(str, (style, SAMPLES, ROOT))))
    p = hosts.start(node, [str(style / "run.py")], env, tmp_path / "node.log", cwd=style)
    code = p.wait(90)
    log = (tmp_path / "node.log").read_text(errors="replace")
    assert code == 0, log
    seen = json.loads((tmp_path / "env.json").read_text())
    assert seen == {"GLOO_SOCKET_IFNAME": "n0", "NCCL_SOCKET_IFNAME": "n0", "MASTER_ADDR": "10.77.5.2",
                    "OCI__CODE_DIR": str(tmp_path)}
