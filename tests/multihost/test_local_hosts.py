"""``fsm-cluster local --hosts``: the user's own multi-host cluster on this machine — each node in a
host of its own with its own address, the hosts gone when the cluster ends, and a crashed
launcher's hosts deleted by the next run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsm_cluster.commands.local import HOSTS_PREFIX
from fsm_cluster.launch import hosts as H

pytestmark = [pytest.mark.multihost, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
HANG_GUARD = 300

# the user's code: where it runs, and what the node told it
WHERE = """\
import json, os, sys
keys = ("RANK", "OCI__NODE_IP", "OCI__MAIN_IP", "TMPDIR")
with open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump({k: os.environ.get(k) for k in keys}, f)
"""


def launcher_namespaces(pid: int) -> list[str]:
    return [n for n in H.listed() if n.startswith(f"{HOSTS_PREFIX}-{pid}-")]


@pytest.fixture
def launchers(namespaces_possible):
    """``launchers(*args)`` starts ``fsm-cluster local --hosts --no-progress *args``; whatever a
    launcher left (processes, namespaces) is deleted after the test."""
    started: list[subprocess.Popen] = []

    def start(*args, cwd: Path) -> subprocess.Popen:
        started.append(subprocess.Popen([sys.executable, "-m", "fsm_cluster", "local", "--hosts", "--no-progress",
                                         *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL))
        return started[-1]

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()
        for name in launcher_namespaces(p.pid):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def test_local_hosts_gives_every_node_a_host_and_an_address_of_its_own(launchers, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "where.py").write_text(WHERE)
    p = launchers("--run-on", "all", "--", "python", "where.py", out, cwd=tmp_path)
    output, _ = p.communicate(timeout=HANG_GUARD)
    assert p.returncode == 0, output
    assert "cluster complete" in output and "hosts: main " in output, output
    seen = [json.loads((out / f"rank{r}.json").read_text()) for r in range(3)]
    assert [(s["OCI__NODE_IP"], s["OCI__MAIN_IP"]) for s in seen] == [
        (f"10.213.0.{r + 1}", "10.213.0.1") for r in range(3)], (seen, output)
    folders = [s["TMPDIR"] for s in seen]
    assert len(set(folders)) == 3 and not any(Path(f).exists() for f in folders), folders  # own, then gone
    assert launcher_namespaces(p.pid) == []


def test_a_killed_launchers_hosts_are_deleted_by_the_next_run(launchers, tmp_path):
    crashed = launchers("--", "sleep", "600", cwd=tmp_path)
    deadline = time.monotonic() + HANG_GUARD
    while len(launcher_namespaces(crashed.pid)) < 4:  # the switch and three hosts
        assert crashed.poll() is None and time.monotonic() < deadline, crashed.stdout.read()
        time.sleep(0.2)
    crashed.send_signal(signal.SIGKILL)
    crashed.wait()
    left = launcher_namespaces(crashed.pid)
    assert len(left) == 4  # a launcher killed with SIGKILL cannot clean up
    p = launchers("--", "true", cwd=tmp_path)
    output, _ = p.communicate(timeout=HANG_GUARD)
    assert p.returncode == 0, output
    assert launcher_namespaces(crashed.pid) == [] and launcher_namespaces(p.pid) == [], output
