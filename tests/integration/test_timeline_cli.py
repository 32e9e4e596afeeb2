"""`fsm-cluster timeline` on a real failed cluster: a picture per format; bad output is one error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .localnodes import LocalNodes

pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install 'fsm_cluster[timeline]'")
pytestmark = pytest.mark.integration


def _cli(c, *args):
    return subprocess.run([sys.executable, "-m", "fsm_cluster", *map(str, args)], capture_output=True, text=True,
                          env={**c.node_env("MAIN", 0), "COLUMNS": "200"})


def test_timeline_of_a_real_failed_cluster(tmp_path):
    entry = tmp_path / "fail.sh"
    entry.write_text('#!/bin/sh\nsleep 0.5\n[ "$RANK" = 2 ] && exit 3\nsleep 5\n')
    entry.chmod(0o755)
    c = LocalNodes(tmp_path, extra={"OCI__ENTRY_SCRIPT": str(entry), "OCI__RUN_ON": "all"}).start()
    assert c.wait(timeout=60) == [1, 1, 1], c.dump()
    for name in ("life.svg", "life.png", "life.html"):
        r = _cli(c, "timeline", c.state_dir(), "-o", tmp_path / name)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"{tmp_path / name}: 3 node(s) over")
    svg = (tmp_path / "life.svg").read_text()
    assert "first failure: WORKER_w2" in svg and "stop: failed by WORKER_w2" in svg
    # every node recorded its resources over the life: the picture has the CPU and memory panels
    import json

    for node in ("MAIN", "WORKER_w1", "WORKER_w2"):
        usage = json.loads((c.state_dir() / f"{node}_state.json").read_text())["usage"]
        assert usage and all(u["rss"] > 0 for u in usage), (node, usage)
    assert "CPU %" in svg and "memory GiB" in svg
    assert (tmp_path / "life.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "life.html").read_text().startswith("<!doctype html>")
    bad = _cli(c, "timeline", c.state_dir(), "-o", tmp_path / "life.gif")
    assert bad.returncode == 2 and bad.stderr.strip().endswith(".svg, .png or .html"), bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    status = _cli(c, "status", c.state_dir())
    assert "fsm-cluster timeline" in status.stdout
