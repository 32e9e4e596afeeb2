"""Artifact sync: background rounds, final sync on stop (also from a signal handler and after a
SIGTERM of a real process), only new or changed files sent, to the work dir and to an S3 WORKSPACE."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from fsm_cluster.clock import FakeClock
from fsm_cluster.runtime.sync import (ArtifactSync, create_sync_script, get_sync_loc,
                                      get_sync_script, workspace_base)
from fsm_cluster.wire.workdir import WorkDir


def eventually(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout} s")


class CountingPuts:
    """Counts the real ``put_file`` calls a work dir (``put_file(name, local)``) or an fsspec
    filesystem (``put_file(local, remote)``) receives (they still happen)."""

    def __init__(self, target, remote_arg: int = 1):
        self.calls: list[str] = []
        self._orig = target.put_file

        def put_file(*a, **k):
            self.calls.append(a[remote_arg])
            return self._orig(*a, **k)

        target.put_file = put_file
        self.target = target

    def restore(self):
        del self.target.put_file  # back to the class method


@pytest.fixture
def local_sync(make_settings, tmp_path):
    """An ArtifactSync to a local work dir, with its put_file calls counted."""
    created = []

    def make(sleep=0.1, clock=None, **env):
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        s = make_settings(SYNC_ARTIFACTS=1, OCI__SYNC_DIR=out, SYNC_SLEEP=sleep, **env)
        wd = WorkDir(s.work_dir, s.cluster_id)
        sync = ArtifactSync(s, wd, clock=clock)
        counter = CountingPuts(wd, remote_arg=0)  # on a local work dir: through its link-safe disk
        created.append((sync, counter))
        remote = tmp_path / "work" / s.cluster_id / "sync" / s.job_run_ocid
        return sync, out, remote, counter

    yield make
    for sync, counter in created:
        sync.stop(final=False)
        counter.restore()


def test_files_appear_during_the_run_and_the_last_one_after_stop(local_sync):
    sync, out, remote, puts = local_sync(sleep=0.1)
    sync.start()
    (out / "metrics.json").write_text('{"loss": 1}')
    (out / "ckpt").mkdir()
    (out / "ckpt" / "epoch1.pt").write_bytes(b"\0" * 1000)
    eventually(lambda: (remote / "ckpt" / "epoch1.pt").exists() and (remote / "metrics.json").exists(),
               what="background sync")
    assert sync._thread.is_alive()  # still running: these came from the background rounds
    (out / "final.txt").write_text("written just before stop")
    sent = sync.stop()
    assert sent == 1
    assert (remote / "final.txt").read_text() == "written just before stop"
    assert not sync._thread.is_alive()
    assert (remote / "ckpt" / "epoch1.pt").read_bytes() == b"\0" * 1000
    assert sync.destination.endswith(f"/sync/{sync.settings.job_run_ocid}")


def test_unchanged_files_are_not_resent(local_sync):
    sync, out, remote, puts = local_sync(sleep=3600)
    for i in range(5):
        (out / f"f{i}.txt").write_text(str(i))
    assert sync.sync_once() == 5
    assert sync.sync_once() == 0
    assert sync.sync_once() == 0
    assert len(puts.calls) == 5
    (out / "f2.txt").write_text("changed, longer")
    (out / "new.txt").write_text("new")
    assert sync.sync_once() == 2
    assert sorted(os.path.basename(p) for p in puts.calls[5:]) == ["f2.txt", "new.txt"]
    assert (remote / "f2.txt").read_text() == "changed, longer"
    assert sync.stop() == 0  # final sync: nothing new
    assert len(puts.calls) == 7
    assert sync.workdir.ops["put"] == 7


def test_same_size_rewrite_is_detected_by_mtime(local_sync):
    sync, out, remote, puts = local_sync(sleep=3600)
    f = out / "a.txt"
    f.write_text("aaaa")
    assert sync.sync_once() == 1
    f.write_text("bbbb")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert sync.sync_once() == 1
    assert (remote / "a.txt").read_text() == "bbbb"


def test_fake_clock_drives_the_rounds(local_sync):
    clock = FakeClock()
    sync, out, remote, puts = local_sync(sleep=60, clock=clock)
    sync.start()
    (out / "a.txt").write_text("a")
    time.sleep(0.3)  # real time passes, simulated time does not: no round yet
    assert puts.calls == []
    clock.advance(60)
    eventually(lambda: (remote / "a.txt").exists(), what="round after the clock moved")
    assert sync.rounds == 1


@pytest.mark.parametrize("background", [False, True])
def test_stop_from_a_signal_handler_during_a_sync_does_not_deadlock(local_sync, background):
    """SIGUSR1 arrives while the main thread is inside sync_once (holding the lock), and
    (``background``) while the background thread is waiting for that lock."""
    sync, out, remote, puts = local_sync(sleep=0.02 if background else 3600)
    for i in range(3):
        (out / f"f{i}.txt").write_text(str(i))
    results = []
    old = signal.signal(signal.SIGUSR1, lambda *a: results.append(sync.stop()))
    started = time.monotonic()
    try:
        fired = []

        def on_upload(rel):
            if not fired and threading.current_thread() is threading.main_thread():
                fired.append(rel)
                (out / "late.txt").write_text("late")
                time.sleep(0.2)  # the background thread is now blocked on the lock
                os.kill(os.getpid(), signal.SIGUSR1)  # handler runs in this (main) thread

        if background:
            sync._lock.acquire()  # the main thread is first in: the thread's round must wait
            sync.start()

        sync.on_upload = on_upload
        done = threading.Event()
        timer = threading.Timer(10, lambda: done.is_set() or os._exit(3))  # a deadlock kills the run
        timer.start()
        try:
            sync.sync_once()
        finally:
            if background:
                sync._lock.release()
        done.set()
        timer.cancel()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert results and results[0] >= 1
    assert time.monotonic() - started < 5  # not the 120 s join timeout
    assert sync._thread is None or not sync._thread.is_alive()
    for name in ("f0.txt", "f1.txt", "f2.txt", "late.txt"):
        assert (remote / name).exists(), name
    assert len(puts.calls) == len(set(puts.calls))  # nothing sent twice


def test_disabled_or_without_sync_dir_does_nothing(make_settings, tmp_path):
    s = make_settings(SYNC_ARTIFACTS=0, OCI__SYNC_DIR=tmp_path)
    sync = ArtifactSync(s, WorkDir(s.work_dir, s.cluster_id))
    sync.start()
    assert sync._thread is None and sync.sync_once() == 0 and sync.stop() == 0
    s = make_settings(SYNC_ARTIFACTS=1)
    sync = ArtifactSync(s, WorkDir(s.work_dir, s.cluster_id))
    sync.start()
    assert sync._thread is None and sync.stop() == 0
    assert not (tmp_path / "work").exists()


# -- a real node process killed with SIGTERM ---------------------------------------------------------
NODE = textwrap.dedent("""\
    import os, signal, sys, time
    from fsm_cluster.env import Settings
    from fsm_cluster.runtime.sync import ArtifactSync
    from fsm_cluster.wire.workdir import WorkDir

    s = Settings.from_env()
    sync = ArtifactSync(s, WorkDir(s.work_dir, s.cluster_id))

    def on_term(signum, frame):
        sync.stop()          # final sync, completes before we exit
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    sync.start()
    out = s.sync_dir
    with open(os.path.join(out, "early.txt"), "w") as f:
        f.write("early")
    while os.environ.get("WAIT_EARLY") and sync.uploads < 1:  # a background round sent it
        time.sleep(0.02)
    with open(os.path.join(out, "last.txt"), "w") as f:
        f.write("written just before SIGTERM")
    print("ready", flush=True)
    while True:
        time.sleep(1)
""")


def _run_node(tmp_path, env) -> None:
    script = tmp_path / "node.py"
    script.write_text(NODE)
    p = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        ready = threading.Timer(30, p.kill)  # a node that never gets ready fails the test
        ready.start()
        line = p.stdout.readline().strip()
        ready.cancel()
        assert line == "ready", p.stderr.read()
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 143, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _node_env(tmp_path, **extra) -> dict:
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "SYNC_", "WORKSPACE"))}
    env.update({"OCI__MODE": "WORKER", "OCI__WORK_DIR": str(tmp_path / "work"), "JOB_OCID": "job1",
                "JOB_RUN_OCID": "run7", "SYNC_ARTIFACTS": "1", "OCI__SYNC_DIR": str(out),
                "SYNC_SLEEP": "0.1"})
    env.update(extra)
    return env


@pytest.mark.integration
def test_file_written_just_before_sigterm_is_synced(tmp_path):
    _run_node(tmp_path, _node_env(tmp_path, SYNC_SLEEP="3600"))
    remote = tmp_path / "work" / "job1" / "sync" / "run7"
    assert (remote / "last.txt").read_text() == "written just before SIGTERM"
    assert (remote / "early.txt").read_text() == "early"


@pytest.mark.integration
def test_background_rounds_then_sigterm(tmp_path):
    _run_node(tmp_path, _node_env(tmp_path, WAIT_EARLY="1"))  # "early" sent by a background round
    remote = tmp_path / "work" / "job1" / "sync" / "run7"
    assert (remote / "last.txt").read_text() == "written just before SIGTERM"


@pytest.mark.s3
@pytest.mark.integration
def test_sigterm_node_to_s3_workspace(tmp_path, s3):
    fs, bucket = s3
    _run_node(tmp_path, _node_env(tmp_path, WORKSPACE=f"s3://{bucket}", WORKSPACE_PREFIX="exp/1",
                                        WAIT_EARLY="1"))
    base = f"{bucket}/exp/1/sync/job1/run7"
    assert fs.cat_file(f"{base}/last.txt") == b"written just before SIGTERM"
    assert fs.cat_file(f"{base}/early.txt") == b"early"


# -- S3 WORKSPACE in process -------------------------------------------------------------------------
@pytest.mark.s3
def test_workspace_on_s3_sends_only_changes(make_settings, s3, tmp_path):
    fs, bucket = s3
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a.txt").write_text("a")
    (out / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    s = make_settings(SYNC_ARTIFACTS=1, OCI__SYNC_DIR=out, SYNC_SLEEP=0.1,
                      WORKSPACE=f"s3://{bucket}", WORKSPACE_PREFIX="/team/exp/")
    sync = ArtifactSync(s, WorkDir(s.work_dir, s.cluster_id))
    sync._open()
    puts = CountingPuts(sync._fs)
    try:
        sync.start()
        base = f"{bucket}/team/exp/sync/{s.cluster_id}/{s.job_run_ocid}"
        eventually(lambda: fs.invalidate_cache() or fs.exists(f"{base}/sub/b.bin"), what="upload to S3")
        time.sleep(0.5)  # several more rounds with nothing new
        assert len(puts.calls) == 2
        (out / "a.txt").write_text("a2")
        assert sync.stop() in (0, 1)
    finally:
        puts.restore()
    fs.invalidate_cache()
    assert fs.cat_file(f"{base}/a.txt") == b"a2"
    assert fs.cat_file(f"{base}/sub/b.bin") == (out / "sub" / "b.bin").read_bytes()
    assert len(puts.calls) == 3
    assert sync.destination == f"s3://{base}"


def test_upload_failures_are_retried_next_round(local_sync):
    sync, out, remote, puts = local_sync(sleep=3600)
    (out / "a.txt").write_text("a")
    fails = {"n": 0}

    def broken(lpath, rpath, *a, **k):
        fails["n"] += 1
        raise PermissionError("denied for now")

    disk = sync.workdir.disk
    disk.copy_in = broken
    assert sync.sync_once() == 0 and sync.errors == 1 and fails["n"] == 1  # permanent: no retry loop
    del disk.copy_in
    assert sync.sync_once() == 1
    assert (remote / "a.txt").read_text() == "a"


# -- seed helpers --------------------------------------------------------------------------------
def test_get_sync_loc(make_settings):
    assert get_sync_loc(make_settings(WORKSPACE="bkt", WORKSPACE_PREFIX="p/q")) == ("bkt", "p/q")
    assert get_sync_loc(make_settings(WORKSPACE="bkt")) == ("bkt", None)
    assert get_sync_loc(make_settings(OCI__WORK_DIR="oci://wbkt@ns/some/prefix/")) == ("wbkt", "some/prefix")
    assert get_sync_loc(make_settings(OCI__WORK_DIR="/tmp/x")) == (None, None)
    assert get_sync_loc(make_settings(OCI__WORK_DIR="s3://b/p")) == (None, None)


def test_workspace_base(make_settings, monkeypatch):
    monkeypatch.delenv("OCI_NAMESPACE", raising=False)
    assert workspace_base(make_settings(WORKSPACE="s3://b/")) == "s3://b"
    assert workspace_base(make_settings(WORKSPACE="bkt", OCI__WORK_DIR="oci://w@myns/x")) == "oci://bkt@myns"
    monkeypatch.setenv("OCI_NAMESPACE", "envns")
    assert workspace_base(make_settings(WORKSPACE="bkt")) == "oci://bkt@envns"


def test_workspace_namespace_from_object_storage(make_settings, monkeypatch, oci_server, oci_auth):
    monkeypatch.delenv("OCI_NAMESPACE", raising=False)
    oci_server.routes["/n"] = lambda path: (200, "tenancyns")
    assert workspace_base(make_settings(WORKSPACE="bkt"), oci_auth) == "oci://bkt@tenancyns"
    assert oci_server.bad_signatures == 0


def test_sync_script_runs_oci_cli_with_the_seed_layout(tmp_path):
    path = tmp_path / "etc" / "datascience" / "sync.sh"
    create_sync_script(str(path), get_sync_script())
    assert (path.stat().st_mode & 0o777) == 0o755
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "oci_calls"
    fake = bindir / "oci"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "OCI__SYNC_DIR": str(out), "JOB_OCID": "job1",
           "JOB_RUN_OCID": "run1", "OCI_IAM_TYPE": "api_key", "HOME": str(tmp_path)}
    subprocess.run([str(path), "bkt", "pre/fix"], env=env, check=True, capture_output=True, timeout=30)
    assert calls.read_text().split() == ["os", "object", "sync", "--auth", "api_key", "--bucket-name",
                                         "bkt", "--prefix", "pre/fix/sync/job1/run1/", "--src-dir", str(out)]


def test_a_link_in_place_of_the_sync_folder_is_refused_not_followed(local_sync, tmp_path, caplog):
    """Issue 24 M3: a work-dir writer who replaces ``<cluster>/sync`` (or ``sync/<run>``) by a
    symbolic link must not steer where the node writes the artifacts (as root, in a container)."""
    sync, out, remote, puts = local_sync(sleep=3600)
    (out / "model.bin").write_bytes(b"weights")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    remote.parent.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(elsewhere, remote.parent)  # <cluster>/sync -> elsewhere
    assert sync.sync_once() == 0 and sync.errors == 1
    assert list(elsewhere.iterdir()) == []
    assert "not a folder: refused" in caplog.text
    os.unlink(remote.parent)  # the link gone: the next round sends the file
    assert sync.sync_once() == 1 and (remote / "model.bin").read_bytes() == b"weights"
