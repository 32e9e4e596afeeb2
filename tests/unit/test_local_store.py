"""A local work dir is read, written and listed without fsspec (issue 26, item 2: fsspec and the
asyncio it loads were ~30 ms of every node's start), and its listings follow no link.

Real files in a temporary folder; a real ``fsm-cluster run`` node (MAIN of a 1+0 cluster, in a
process of its own) for the imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fsm_cluster.errors import ProtocolError
from fsm_cluster.wire.models import DoneMarker
from fsm_cluster.wire.stores import open_store
from fsm_cluster.wire.workdir import WorkDir


@pytest.mark.parametrize("form", ["{p}", "file://{p}", "local://{p}"])
def test_a_path_or_a_file_url_is_the_local_disk(tmp_path, form):
    protocol, fs, path = open_store(form.format(p=tmp_path))
    assert (fs, path) == (None, str(tmp_path))
    wd = WorkDir(form.format(p=tmp_path), "c1")
    assert wd.local and wd.disk is not None
    assert wd.write("MAIN_done", DoneMarker(node="MAIN"))
    assert (tmp_path / "c1" / "MAIN_done").is_file()
    assert "MAIN_done" in wd.listing() and wd.exists("MAIN_done") and not wd.exists("stop")
    assert wd.read("MAIN_done", DoneMarker) == DoneMarker(node="MAIN")


def test_other_schemes_still_open_with_fsspec():
    protocol, fs, path = open_store("memory://wd")
    assert protocol == "memory" and fs is not None and "memory" in fs.protocol


def test_a_listing_is_what_fsspec_gave_and_a_fingerprint_changes_with_the_file(tmp_path):
    wd = WorkDir(str(tmp_path), "c1")
    wd.write_bytes("MAIN_state.json", b"{}")
    wd.write_bytes("logs/MAIN.log", b"x")
    first = wd.listing()
    assert sorted(first) == ["MAIN_state.json"]  # folders and hidden files left out
    assert list(wd.listing("logs")) == ["MAIN.log"]
    assert wd.subdirectories() == ["logs"] and WorkDir(str(tmp_path), "").subdirectories() == ["c1"]
    import fsspec

    by_fsspec = {e["name"]: e for e in fsspec.filesystem("file").ls(wd.root, detail=True)}
    ours = {e["name"]: e for e in wd.disk.entries("c1")}
    assert ours.keys() == by_fsspec.keys()
    for name, e in ours.items():
        assert (e["type"], e["size"], e["mtime"], e["ino"]) == tuple(by_fsspec[name][k] for k in
                                                                      ("type", "size", "mtime", "ino"))
    wd.write_bytes("MAIN_state.json", b'{"heartbeat": 1}')
    assert wd.listing()["MAIN_state.json"] != first["MAIN_state.json"]
    assert wd.listing("absent") == {} and WorkDir(str(tmp_path), "nothing").listing() == {}


def test_a_listing_follows_no_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "MAIN_config.json").write_text("{}" * 1000)
    (tmp_path / "wd" / "c1").mkdir(parents=True)
    (tmp_path / "wd" / "c1" / "MAIN_config.json").symlink_to(outside / "MAIN_config.json")
    os.mkfifo(tmp_path / "wd" / "c1" / "stop")
    wd = WorkDir(str(tmp_path / "wd"), "c1")
    entries = {os.path.basename(e["name"]): e for e in wd.disk.entries("c1")}
    assert entries["MAIN_config.json"]["type"] == "other"  # the link itself, not its target
    assert entries["MAIN_config.json"]["size"] == len(str(outside / "MAIN_config.json"))
    assert entries["stop"]["type"] == "other"  # a FIFO is listed, never opened
    assert wd.exists("stop") and wd.exists("MAIN_config.json")
    # a cluster dir that is a link is refused, as every write below it is
    (tmp_path / "wd" / "c2").symlink_to(outside)
    with pytest.raises(ProtocolError, match="wd/c2: a symbolic link, not a folder: refused"):
        WorkDir(str(tmp_path / "wd"), "c2").listing()


def test_fs_is_made_only_when_asked_for(tmp_path):
    wd = WorkDir(str(tmp_path), "c1")
    wd.write_bytes("MAIN_done", b"{}")
    assert wd._fs is None
    wd.fs.pipe_file(wd.path("stop"), b"stop")  # oracle-ads' stop_filesystem, the tests' raw writes
    assert wd.read_bytes("stop") == b"stop"


@pytest.mark.integration
def test_a_node_on_a_local_work_dir_never_imports_fsspec(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCI__")}
    env.update({"OCI__MODE": "MAIN", "OCI__WORK_DIR": str(tmp_path / "wd"), "OCI__WORKER_COUNT": "0",
                "JOB_OCID": "c1", "OCI__ENTRY_SCRIPT": "/bin/true", "OCI__HEARTBEAT_INTERVAL": "10",
                "OCI__HEARTBEAT_TIMEOUT": "60", "OCI__SELF_IP": "127.0.0.1"})
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "fsm_cluster", "run"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    imported = {line.rpartition("|")[2].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert {"fsm_cluster.wire.workdir", "pydantic", "transitions"} <= imported  # (the list is whole)
    assert {m for m in imported if m.split(".")[0] in ("fsspec", "asyncio")} == set()
    assert json.loads((tmp_path / "wd" / "c1" / "MAIN_state.json").read_text())["state"] == "stopped"
