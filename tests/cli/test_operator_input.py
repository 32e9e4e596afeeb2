"""Issue 24: what an operator types is checked before anything is claimed or waited for —
``stop --reason`` a node would ignore (M7), ``dump --wait`` that is not a finite bounded number
of seconds (L6)."""

from __future__ import annotations

import pytest

from fsm_cluster.commands.stop import MAX_REASON
from fsm_cluster.wire.workdir import WorkDir

from .clihelp import cli


def _cluster(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "MAIN_config.json").write_text("{}")  # a cluster dir (status/stop find it by its files)
    return tmp_path / "c"


def test_stop_refuses_a_reason_the_nodes_would_ignore_and_writes_nothing(tmp_path):
    cluster = _cluster(tmp_path)
    r = cli("stop", cluster, "--reason", "x" * 70_000)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"--reason is 70000 characters long: at most {MAX_REASON} (nothing written)" in r.stderr
    assert "stop marker written" not in r.stdout and "Traceback" not in r.stderr
    assert not (cluster / "stop").exists()


def test_stop_with_the_longest_reason_writes_a_marker_the_nodes_read(tmp_path):
    cluster = _cluster(tmp_path)
    reason = "\x01" * MAX_REASON  # escaped in JSON: six bytes each
    r = cli("stop", cluster, "--reason", reason)
    assert r.returncode == 0 and "stop marker written" in r.stdout, r.stdout + r.stderr
    marker = WorkDir(str(tmp_path), "c").read_stop()
    assert (marker.outcome, marker.node, marker.reason) == ("stopped", "operator", reason)


@pytest.mark.parametrize("value", ["nan", "1e400", "inf", "-1", "86401", "soon"])
def test_dump_wait_must_be_finite_non_negative_and_bounded(tmp_path, value):
    r = cli("dump", _cluster(tmp_path), "--wait", value)
    assert r.returncode == 2 and "argument --wait:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "c" / "dump_request").exists()
