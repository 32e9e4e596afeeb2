"""Issue 24, M4: without OCI__CLUSTER_SECRET the control channel's key is MAIN's own, fresh for
each life: a ``channel_secret`` planted before MAIN starts is never used, and a life's key moves
to ``previous/`` with the life. Real `fsm-cluster run` nodes, a real channel client.

Before, MAIN took a key file it found in the cluster dir: an attacker who planted one joined as
``WORKER_w1``, announced "complete", and MAIN's code was cut short; the key survived re-runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fsm_cluster.wire.channel import ChannelClient, ChannelUnavailable
from integration.localnodes import LocalNodes
from unit.test_channel_kit import hello

pytestmark = pytest.mark.integration

PLANTED = b"a7" * 32
ENTRY = """import os, time
open(os.path.join(os.environ["MARKS"], os.environ["RANK"]), "w").close()
time.sleep(float(os.environ.get("CODE_SECONDS", "0")))
"""


def cluster(tmp_path: Path, **extra) -> LocalNodes:
    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY)
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    return LocalNodes(tmp_path, workers=1, extra={"OCI__ENTRY_SCRIPT": str(entry), "MARKS": str(marks),
                                                  "OCI__TIMEOUT": "60", **extra})


def key_files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("channel_secret")}


def main_channel(c: LocalNodes) -> tuple[str, int]:
    """The address of the channel of ``c``'s MAIN (node 0), once it published it in its state file."""
    deadline = time.monotonic() + 60
    address = ""
    while not address:  # MAIN publishes its channel in its state file at its first heartbeat
        assert time.monotonic() < deadline and c.procs[0].poll() is None, c.dump()
        try:
            address = json.loads((c.state_dir() / "MAIN_state.json").read_text()).get("control", "")
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    host, _, port = address.rpartition(":")
    return host, int(port)


def test_a_planted_channel_key_is_never_used(tmp_path):
    c = cluster(tmp_path, CODE_SECONDS="1")
    d = c.state_dir()
    d.mkdir(parents=True)
    (d / "channel_secret").write_bytes(PLANTED)
    c.start(["MAIN"])
    host, port = main_channel(c)
    attacker = ChannelClient(host, port, PLANTED, hello("WORKER_w1"), ping_interval=0.5, timeout=5)
    with pytest.raises(ChannelUnavailable, match="refused the authentication"):
        attacker.connect()  # before: it joined as WORKER_w1 and could announce "complete"
    attacker.close()
    keys = key_files(d)
    assert keys["channel_secret"] != PLANTED and len(keys["channel_secret"]) == 64
    assert [k for k, v in keys.items() if v == PLANTED and k.startswith("previous/unclaimed-")], keys
    c.start_node("WORKER")
    assert c.wait(timeout=60) == [0, 0], c.dump()
    logs = c.dump()
    assert "WORKER_w1 joined the control channel" in logs and "never used" in logs


def test_each_life_has_its_own_key_and_it_moves_with_the_life(tmp_path):
    first = cluster(tmp_path).start()
    assert first.wait(timeout=60) == [0, 0], first.dump()
    d = first.state_dir()
    key1 = (d / "channel_secret").read_bytes()
    second = cluster(tmp_path, CODE_SECONDS="3")  # a life long enough for the worker to join (a worker
    second.start()  # that first looks after MAIN's end learns the outcome from the files: it never joins)
    assert second.wait(timeout=60) == [0, 0], second.dump()
    assert "WORKER_w1 joined the control channel" in second.dump()
    keys = key_files(d)
    assert keys["channel_secret"] != key1  # before: the first life's key, for ever
    moved = [k for k, v in keys.items() if v == key1]
    assert len(moved) == 1 and moved[0].startswith("previous/") and not moved[0].startswith("previous/unclaimed")
    life_folder = (d / moved[0]).parent  # beside that life's stop marker
    assert (life_folder / "stop").is_file(), sorted(p.name for p in life_folder.iterdir())
