"""A node imports what its life needs, when it needs it (issue 26, item 2).

Each check runs in a fresh interpreter and lists what got imported: a module-level import of
psutil, tenacity, the control channel, the stall watchdog, stacks dumps, OCI auth or code fetching
in the bootstrap's modules (or in a trivial simulated life's path) fails here, naming the module.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

BOOTSTRAP = ("fsm_cluster.cli", "fsm_cluster.commands.run", "fsm_cluster.runner", "fsm_cluster.provider",
             "fsm_cluster.frameworks.command", "fsm_cluster.node.drive", "fsm_cluster.node.assembly",
             "fsm_cluster.node.identity", "fsm_cluster.wire.watch", "fsm_cluster.wire.workdir")
# Imported only where used: none of them by importing the bootstrap.
NOT_AT_IMPORT = ("psutil", "tenacity", "tornado", "oci", "fsm_cluster.wire.channel", "fsm_cluster.runtime.stall",
                 "fsm_cluster.runtime.stacks", "fsm_cluster.runtime.resources", "fsm_cluster.runtime.oci_auth",
                 "fsm_cluster.runtime.archive", "tarfile")
# A whole trivial life (1 MAIN + 2 WORKERs on a simulated clock, local storage in memory): storage
# calls and formation waits retry in plain loops (no tenacity); no OCI, no stall watchdog.
NOT_IN_A_LIFE = ("tenacity", "tornado", "oci", "fsm_cluster.runtime.stall", "fsm_cluster.runtime.oci_auth",
                 "fsm_cluster.runtime.archive")


def _imported(code: str, watch) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {list(watch)!r} if m in sys.modules)))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_importing_the_node_bootstrap_loads_none_of_the_parts_a_life_may_not_need():
    assert _imported("\n".join(f"import {m}" for m in BOOTSTRAP), NOT_AT_IMPORT) == []


def test_a_trivial_simulated_life_needs_no_tenacity_oci_or_stall_watchdog():
    life = ("from fsm_cluster.testing import SimulatedCluster\n"
            "codes = SimulatedCluster(workers=2).run(code_seconds=1.0)\n"
            "assert codes == [0, 0, 0], codes")
    assert _imported(life, NOT_IN_A_LIFE) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIOCGIFADDR is Linux's")
def test_interface_of_finds_each_primary_ipv4_without_psutil_as_psutil_does():
    import psutil

    from fsm_cluster.node.identity import _primary_ipv4, interface_of

    kernel = dict((addr, name) for name, addr in _primary_ipv4())
    assert kernel.get("127.0.0.1") == "lo"
    listed = {a.address: name for name, addrs in psutil.net_if_addrs().items() for a in addrs
              if a.family == socket.AF_INET}
    for addr, name in kernel.items():
        assert listed.get(addr) == name == interface_of(addr)
    assert interface_of("203.0.113.254") is None  # TEST-NET-3: nobody's


def test_an_engine_nodes_provider_imports_no_engine_and_no_yaml():
    """Every built-in provider module (the spec builder lives beside it) loads without PyYAML —
    the spec parser imports it when a spec is parsed — and without its engine's own packages: a
    node starts the engine's processes, it never imports the engine (issue 26 item 1)."""
    from fsm_cluster.registry import BUILTIN

    modules = sorted({target.split(":")[0] for target in BUILTIN.values()})
    heavy = ("yaml", "torch", "ray", "tensorflow", "distributed", "dask", "horovod")
    assert _imported("\n".join(f"import {m}" for m in modules), heavy) == []
