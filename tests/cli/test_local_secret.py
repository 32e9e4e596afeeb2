"""`fsm-cluster local` gives its nodes a per-cluster secret: every shared file is signed, the secret
is in no log and no file of the work dir, and a stop marker written without it is refused."""

from __future__ import annotations

import json
import os
import stat

import pytest

from .clihelp import HANG_GUARD, cli, clean_env, popen, wait_for, write_train

pytestmark = pytest.mark.integration


def test_a_local_cluster_signs_its_files_and_refuses_an_unsigned_stop(tmp_path):
    train = write_train(tmp_path)
    wd, cache = tmp_path / "wd", tmp_path / "cache"
    env = clean_env(XDG_CACHE_HOME=cache, SLEEP="4", MARK_DIR=tmp_path)
    launcher = popen("local", "--no-progress", "--workers", "1", "--work-dir", wd, "--cluster-id", "c1",
                     "--", "python", train, cwd=tmp_path, env=env)
    try:
        wait_for(lambda: (tmp_path / "started-0").exists(), what="the entry script to start")
        # Someone without the secret (another machine, another user) asks the cluster to stop.
        r = cli("stop", wd / "c1", "--reason", "not yours", env=clean_env(XDG_CACHE_HOME=tmp_path / "other"))
        assert r.returncode == 0, r.stderr
        out, _ = launcher.communicate(timeout=HANG_GUARD)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, out
    assert "stop: not signed, refused" in out and "cluster complete: code completed" in out
    stored = list((cache / "fsm_cluster" / "secrets").iterdir())
    assert len(stored) == 1 and stat.S_IMODE(os.stat(stored[0]).st_mode) == 0o600
    secret = stored[0].read_text().strip()
    assert len(secret) == 64
    files = [p for p in (wd / "c1").rglob("*") if p.is_file()]
    for p in files:
        assert secret not in p.read_text(errors="replace"), p
        if p.parent.name != "logs":
            assert len(json.loads(p.read_text())["sig"]) == 64, p
    assert secret not in out
    stop = json.loads((wd / "c1" / "stop").read_text())
    assert (stop["node"], stop["reason"]) == ("MAIN", "code completed")
