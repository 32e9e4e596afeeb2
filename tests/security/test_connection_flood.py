"""Issue 24, M1: a connection flood does not take MAIN down. A real MAIN node under the common
``ulimit -n 1024`` (prlimit on its process), 2,000 idle TCP connections to its channel from
loopback, then its worker: MAIN survives, the cluster completes, and MAIN's log says the flood in
a bounded number of lines.

Before: ``accept failed: [Errno 24] Too many open files`` ×10,900 within 0.1 s, then MAIN failed
with ``OSError: [Errno 24]`` (its cap of 4,096 connections was above the limit), could write
neither its state nor the stop marker, and the worker waited out OCI__TIMEOUT.
"""

from __future__ import annotations

import errno
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from fsm_cluster.wire.channel import ChannelClient, ChannelUnavailable
from integration.localnodes import LocalNodes
from security.test_channel_key import main_channel
from unit.test_channel_kit import hello

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")]

FLOOD = 2000
LIMIT = 1024
ENTRY = """import os, time
open(os.path.join(os.environ["MARKS"], os.environ["RANK"]), "w").close()
time.sleep(float(os.environ["CODE_SECONDS"]))
"""


@pytest.fixture
def descriptors():
    """Enough open files in this process for the flood (its own limit, raised to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FLOOD + 256
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"the hard limit of open files ({hard}) is below {want}")
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def flood(address: tuple[str, int], n: int) -> list[socket.socket]:
    """``n`` idle connections (non-blocking connects: none waits on MAIN's accept queue)."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(address)
        assert err in (0, errno.EINPROGRESS, errno.EAGAIN), errno.errorcode.get(err, err)
        socks.append(s)
    return socks


def test_two_thousand_idle_connections_do_not_take_main_down(tmp_path, descriptors):
    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY)
    marks = tmp_path / "marks"
    marks.mkdir()
    c = LocalNodes(tmp_path, workers=1, extra={"OCI__ENTRY_SCRIPT": str(entry), "MARKS": str(marks),
                                               "CODE_SECONDS": "3", "OCI__RUN_ON": "all", "OCI__TIMEOUT": "90",
                                               "OCI__CLUSTER_SECRET": "f100d" * 13})
    c.launcher = ["prlimit", f"--nofile={LIMIT}:{LIMIT}", "--"]
    c.start_node("MAIN")
    c.launcher = []
    address = main_channel(c)
    socks = flood(address, FLOOD)
    try:
        time.sleep(1.0)  # MAIN takes them in (or refuses them at its cap) before its worker comes
        assert c.procs[0].poll() is None, c.dump()
        c.start_node("WORKER")
        codes = c.wait(timeout=120)
    finally:
        for s in socks:
            s.close()
    main_log = c.logs[0].read_text()
    assert codes == [0, 0], c.dump()
    assert "Too many open files" not in main_log.replace("accepts failed (Too many open files", ""), main_log[-3000:]
    assert "Traceback" not in main_log
    assert "control channel: at most" in main_log  # the cap, below the limit of 1,024
    assert "WORKER_w1 joined the control channel" in main_log  # room was made for it
    channel_lines = [ln for ln in main_log.splitlines() if "control channel" in ln]
    flood_lines = [ln for ln in channel_lines if "connection flood" in ln]
    assert 1 <= len(flood_lines) <= 10 and len(channel_lines) <= 30, "\n".join(channel_lines[:50])
    print("\n".join(flood_lines))


SERVER = r"""
import logging, os, sys, time
from fsm_cluster.wire.channel import ChannelServer
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
server = ChannelServer(b"k" * 32, "127.0.0.1", flood_interval=60).start()
held = []
try:  # the node's own files take every descriptor but a few
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
for fd in held[-4:]:
    os.close(fd)
print("PORT", server.address[1], flush=True)
sys.stdin.readline()  # the test floods the channel now
for fd in held[:-4]:
    os.close(fd)
print("FREED", flush=True)
sys.stdin.readline()  # the test's own client connected
server.close()
print("ALIVE", server._thread is not None and not server._thread.is_alive(), flush=True)
"""


def test_accept_without_descriptors_pauses_instead_of_spinning(tmp_path):
    """EMFILE in accept (the node's own files took the descriptors): the channel stops accepting
    for a moment instead of failing the same accept in a tight loop, says so in one line, and
    serves again once descriptors are free."""
    p = subprocess.Popen(["prlimit", "--nofile=256:256", "--", sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    guard = threading.Timer(120, p.kill)  # a hang guard: a server that stops answering ends the test
    guard.start()
    try:
        seen: list[str] = []

        def line(start: str) -> str:  # the server's output up to the line starting with ``start``
            while not seen or not seen[-1].startswith(start):
                seen.append(p.stdout.readline().rstrip("\n"))
                assert seen[-1] or p.poll() is None, seen
            return seen[-1]

        port = int(line("PORT").split()[1])
        socks = flood(("127.0.0.1", port), 100)
        time.sleep(1.5)  # three pauses of ACCEPT_PAUSE at most
        p.stdin.write("\n")
        p.stdin.flush()
        line("FREED")
        for s in socks:
            s.close()
        client = ChannelClient("127.0.0.1", port, b"k" * 32, hello("WORKER_w1"), ping_interval=0.5, timeout=5)
        deadline = time.monotonic() + 30
        while True:  # once the paused listener takes connections again
            try:
                client.connect()
                break
            except ChannelUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        client.close()
        p.stdin.write("\n")
        p.stdin.flush()
        out, _ = p.communicate(timeout=30)
    finally:
        guard.cancel()
        if p.poll() is None:
            p.kill()
    lines = seen + out.splitlines()
    out = "\n".join(lines)
    assert lines[-1] == "ALIVE True", out
    assert not any("accept failed" in ln for ln in lines), out[:3000]  # before: a line per failed accept
    flood_lines = [ln for ln in lines if "connection flood" in ln]
    assert len(flood_lines) <= 2 and "accepting paused" in flood_lines[0], out[:3000]
