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


def _run(code: str) -> str:
    """The last line ``code`` prints, run in a fresh interpreter."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()[-1]


def _imported(code: str, watch) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {list(watch)!r} if m in sys.modules)))"
    return json.loads(_run(probe))


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



def test_a_node_process_builds_itself_with_the_collector_paused_then_frozen_and_on_again():
    """``fsm-cluster run`` (execute(node_process=True)): no collection walks what the node builds
    while it builds it (settings, provider, their imports), then that is frozen and the collector
    is on again for the life — also when the build fails. In a fresh interpreter: freezing is for
    the node's own process, never a host program's (execute() alone leaves the collector as is)."""
    code = (
        "import gc, json\n"
        "from fsm_cluster.errors import SettingsError\n"
        "from fsm_cluster.runner import ClusterRunner\n"
        "seen = []\n"
        "class Probe(ClusterRunner):\n"
        "    @property\n"
        "    def cluster(self):\n"
        "        seen.append(gc.isenabled())\n"
        "        raise SettingsError('probe')\n"
        "out = {}\n"
        "for node_process in (False, True):\n"
        "    try:\n"
        "        Probe(environ={}).execute(node_process=node_process)\n"
        "    except SettingsError:\n"
        "        pass\n"
        "    out[str(node_process)] = [seen[-1], gc.isenabled(), gc.get_freeze_count() > 0]\n"
        "gc.disable()\n"
        "try:\n"
        "    Probe(environ={}).execute(node_process=True)\n"
        "except SettingsError:\n"
        "    pass\n"
        "out['off'] = [seen[-1], gc.isenabled()]\n"
        "print(json.dumps(out))")
    got = json.loads(_run(code))
    assert got["False"] == [True, True, False]  # a host program's node: collector untouched, nothing frozen
    assert got["True"] == [False, True, True]  # paused while built, frozen, on again after (a failed build too)
    assert got["off"] == [False, False]  # a collector the caller turned off stays off


def test_the_run_command_runs_its_node_as_the_process_own():
    """``fsm-cluster run`` asks for the node-process build (collector paused, then frozen)."""
    code = (
        "import json, os\n"
        "import fsm_cluster.runner as runner\n"
        "got = {}\n"
        "def execute(self, **kw):\n"
        "    got.update(kw)\n"
        "    return 0\n"
        "runner.ClusterRunner.execute = execute\n"
        "os._exit = lambda code: None  # the command ends its process with os._exit\n"
        "from fsm_cluster.cli import main\n"
        "main(['run'])\n"
        "print(json.dumps(got))")
    assert json.loads(_run(code)) == {"node_process": True}


# -- psutil only where a life needs it (issue 26 item 2) ----------------------------------------------
TRIVIAL_LIFE = """
import json, os, subprocess, sys, tempfile
tmp = tempfile.mkdtemp()
entry = os.path.join(tmp, "entry.sh")
with open(entry, "w") as f:
    f.write("#!/bin/sh\\nexit 0\\n")
os.chmod(entry, 0o755)
env = {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "JOB_")) and k != "RANK"}
env.update({"OCI__MODE": "MAIN", "OCI__WORK_DIR": os.path.join(tmp, "wd"), "JOB_OCID": "c", "JOB_RUN_OCID": "main",
            "OCI__SELF_IP": "127.0.0.1", "OCI__WORKER_COUNT": "0", "OCI__ENTRY_SCRIPT": entry,
            "OCI__HEARTBEAT_INTERVAL": "60", "OCI__HEARTBEAT_TIMEOUT": "300", "PYTHONPROFILEIMPORTTIME": "1"})
r = subprocess.run([sys.executable, "-m", "fsm_cluster", "run"], env=env, capture_output=True, text=True, timeout=120)
with open(os.path.join(tmp, "wd", "c", "MAIN_state.json")) as f:
    state = json.load(f)
modules = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
print(json.dumps({"code": r.returncode, "modules": modules, "state": state["state"], "resources": state["resources"],
                  "tail": r.stderr[-2000:]}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the /proc sweep and the subreaper: Linux")
def test_a_real_node_whose_life_is_shorter_than_an_interval_never_imports_psutil():
    """``fsm-cluster run``, a trivial job, the whole life within one heartbeat interval: no resource
    sample (the first is taken an interval into the life) and a teardown sweep that found nothing
    (one pass over /proc) — psutil is never imported. The interval is 60 s so that no slow host
    makes this life longer than one."""
    got = json.loads(_run(TRIVIAL_LIFE))
    assert got["code"] == 0, got["tail"]
    assert "fsm_cluster.node.drive" in got["modules"], got["tail"]  # -X importtime saw the node's imports
    assert got["state"] == "stopped" and got["resources"] is None
    assert [m for m in got["modules"] if m.split(".")[0] == "psutil" or m == "fsm_cluster.runtime.resources"] == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the /proc sweep and the subreaper: Linux")
def test_a_node_group_whose_children_left_nothing_ends_without_psutil_and_one_that_left_something_is_swept():
    code = (
        "import json, subprocess, sys\n"
        "from fsm_cluster.runtime.process import ProcessGroup, become_subreaper\n"
        "assert become_subreaper()\n"
        "group = ProcessGroup()\n"
        "group.spawn('entry', ['true']).popen.wait(timeout=60)\n"
        "group.terminate_all(grace=5)\n"
        "clean = 'psutil' in sys.modules\n"
        "child = group.spawn('entry', ['sh', '-c', 'sleep 60 >/dev/null 2>&1 & echo $!'], stdout=subprocess.PIPE)\n"
        "left = int(child.popen.stdout.readline())\n"
        "child.popen.wait(timeout=60)\n"
        "group.terminate_all(grace=5)\n"
        "import psutil\n"
        "gone = not psutil.pid_exists(left) or psutil.Process(left).status() == psutil.STATUS_ZOMBIE\n"
        "print(json.dumps([clean, gone]))")
    assert json.loads(_run(code)) == [False, True]  # nothing left: no psutil; a leftover: swept


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the /proc sweep: Linux")
def test_the_token_sweep_reads_the_environment_of_no_process_older_than_the_node(monkeypatch):
    """What carries the token was started by the node or below it, so after it: the sweep reads the
    environment of processes started since this one only (the host's older processes are many)."""
    import os

    import psutil

    from fsm_cluster.runtime import process
    from fsm_cluster.runtime.process import OWNER_ENV, sweep

    read: list[int] = []
    real = process._environ
    monkeypatch.setattr(process, "_environ", lambda pid: read.append(pid) or real(pid))
    token = "lean-" + os.urandom(4).hex()
    sh = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], env={**os.environ, OWNER_ENV: token},
                        capture_output=True, text=True, check=True)
    mine = psutil.Process(int(sh.stdout))
    try:
        assert sweep(token=token, grace=5) == []  # it ended on SIGTERM
        assert not mine.is_running() or mine.status() == psutil.STATUS_ZOMBIE
        born = process._stat("self")[2]
        assert mine.pid in read and os.getppid() not in read and 1 not in read
        assert all((process._stat(pid) or (0, 0, born))[2] >= born for pid in read)
    finally:
        if mine.is_running():
            mine.kill()


def test_the_record_samples_resources_from_the_end_of_its_first_interval_and_the_first_is_meaningful():
    """No figures in the first heartbeat interval (the sampler is not even made); from then on each
    state carries them, the first with each process's CPU over its life so far (psutil's own first
    answer would be 0.0)."""
    import time

    from fsm_cluster.node.record import StateRecord

    class Clock:
        t = 1000.0

        def wall(self):
            return self.t

    record = StateRecord("n", Clock(), simulated=False, interval=10.0, fields=dict, flush=None, changed=None,
                         ending=None)
    record.clock.t = 1009.9
    assert record.resources() is None and record._sampler is None and record.usage == []
    import psutil

    while time.time() - psutil.Process().create_time() < 2.0:  # its start is known to the second only
        time.sleep(0.1)
    spin = time.process_time() + 0.05  # and it has used CPU
    while time.process_time() < spin:
        pass
    record.clock.t = 1010.0
    first = record.resources()
    assert first is not None and first.processes >= 1 and first.rss_bytes > 0
    assert first.cpu_percent > 0
    assert len(record.usage) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard is Linux's")
def test_the_guard_starts_its_child_without_subprocess_or_the_signal_modules_enums():
    """Every child of a node is started through the guard, a Python of its own: it imports what it
    uses (os, the signal module's C core, ctypes), not subprocess, threading or enum (~10 ms of CPU
    per node), and still returns its child's exit status."""
    import os

    from fsm_cluster.runtime.process import GUARD

    r = subprocess.run([sys.executable, "-S", "-E", "-X", "importtime", "-c", GUARD, str(os.getpid()), "5", "--",
                        "sh", "-c", "exit 3"], capture_output=True, text=True, timeout=60, start_new_session=True)
    assert r.returncode == 3, r.stderr
    modules = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "ctypes" in modules, r.stderr  # -X importtime saw the guard's imports
    assert modules.isdisjoint({"subprocess", "signal", "enum", "threading", "selectors"}), sorted(modules)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard is Linux's")
def test_a_guarded_child_has_the_signal_dispositions_and_mask_of_a_popen_child():
    import os

    from fsm_cluster.runtime.process import GUARD

    probe = ["grep", "-E", "^Sig(Blk|Ign|Cgt)", "/proc/self/status"]
    direct = subprocess.run(probe, capture_output=True, text=True, timeout=60, start_new_session=True)
    guarded = subprocess.run([sys.executable, "-S", "-E", "-c", GUARD, str(os.getpid()), "5", "--", *probe],
                             capture_output=True, text=True, timeout=60, start_new_session=True)
    assert guarded.returncode == direct.returncode == 0, guarded.stderr
    assert guarded.stdout == direct.stdout
