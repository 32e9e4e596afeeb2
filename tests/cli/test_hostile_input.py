"""Inputs that used to crash, hang or lie (issue 11): each ends in ONE error line naming the file,
field, option or variable, a non-zero exit, no traceback, and nothing already written is lost."""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from fsm_cluster.cli import main
from fsm_cluster.jobspec import MAX_SPEC_BYTES
from fsm_cluster.launch.plan import MAX_NODES_ENV, machine_node_limit

from .clihelp import cli, clean_env, write_train

SPEC = """\
kind: distributed
apiVersion: v1.0
spec:
  cluster:
    kind: COMMAND
    spec:
      workDir: /tmp/unused
      runOn: all
      worker:
        replicas: {replicas}
  runtime:
    spec:
      entryPoint: entry.sh
"""
BOMB_GUARD = 30  # seconds: a hang guard (the bomb is refused in well under a second)


def one_error_line(r: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    """The run failed with exactly one `fsm-cluster <command>: error: ...` line holding every fragment."""
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"fsm-cluster {command}: error: "), r.stderr
    for fragment in fragments:
        assert fragment in lines[0], r.stderr
    return lines[0]


def nothing_in(path: Path) -> bool:
    return not path.exists() or not any(path.iterdir())


# -- 1, 2: node counts ---------------------------------------------------------------------------
@pytest.mark.parametrize("args, env, fragments", [
    (["--workers", "99999999999999999999"], {},
     ["--workers and --ps: 100000000000000000000 nodes (1 MAIN + 99999999999999999999 WORKER) is more than"]),
    (["--ps", "99999999999999999999"], {},
     ["1 MAIN + 2 WORKER + 99999999999999999999 PS) is more than"]),
    (["--max-nodes", "99999999999999999999", "--workers", "99999999999999999999"], {},
     ["is more than this machine can ever run as processes", "pid_max"]),
    (["--max-nodes", "3", "--workers", "3"], {},
     ["4 nodes (1 MAIN + 3 WORKER) is more than the local limit of 3 (set by --max-nodes)"]),
    (["--max-nodes", "0"], {}, ["--max-nodes must be 1 or more (got 0)"]),
    ([], {MAX_NODES_ENV: "2"}, [f"3 nodes (1 MAIN + 2 WORKER) is more than the local limit of 2 (set by {MAX_NODES_ENV})"]),
    ([], {MAX_NODES_ENV: "many"}, [f"{MAX_NODES_ENV}='many': expected a whole number of nodes"]),
])
def test_node_counts_past_the_limit_are_one_error_before_anything_starts(tmp_path, args, env, fragments):
    r = cli("local", "--work-dir", tmp_path / "wd", *args, "--", "true", cwd=tmp_path, env=clean_env(**env))
    one_error_line(r, "local", *fragments)
    assert nothing_in(tmp_path / "wd")


def test_the_default_limit_comes_from_this_machine_and_names_the_override(tmp_path):
    limit = machine_node_limit()
    assert 1 <= limit.nodes and limit.why
    workers = limit.nodes  # one MAIN more than the limit
    r = cli("local", "--work-dir", tmp_path / "wd", "--workers", workers, "--", "true", cwd=tmp_path)
    line = one_error_line(r, "local", f"{workers + 1} nodes (1 MAIN + {workers} WORKER) is more than")
    if workers + 1 <= limit.ceiling[0]:
        assert "--max-nodes N or FSM_CLUSTER_MAX_NODES=N" in line
    assert nothing_in(tmp_path / "wd")


def test_spec_replicas_past_the_limit_are_refused(tmp_path):
    spec = tmp_path / "big.yaml"
    spec.write_text(SPEC.format(replicas=99999999999999999999))
    r = cli("local", "-f", spec, "--work-dir", tmp_path / "wd", cwd=tmp_path)
    one_error_line(r, "local", f"{spec}: the replicas of worker and ps: 100000000000000000000 nodes")
    spec.write_text(SPEC.format(replicas=4))
    r = cli("local", "-f", spec, "--work-dir", tmp_path / "wd", cwd=tmp_path, env=clean_env(**{MAX_NODES_ENV: "4"}))
    one_error_line(r, "local", "5 nodes (1 MAIN + 4 WORKER) is more than the local limit of 4")
    assert nothing_in(tmp_path / "wd")


@pytest.mark.integration
@pytest.mark.parametrize("signum, code, how", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_a_signal_while_nodes_start_stops_the_start_and_tears_down_those_started(
        tmp_path, monkeypatch, capsys, signum, code, how):
    """The signal arrives (deterministically) right after the 3rd of 10 nodes was started."""
    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen(argv, *a, **kw):
        proc = real_popen(argv, *a, **kw)
        if list(argv[-2:]) == ["fsm_cluster", "run"]:
            started.append(proc)
            if len(started) == 3:
                os.kill(os.getpid(), signum)
        return proc

    before = {c.pid for c in psutil.Process().children(recursive=True)}  # earlier tests' (e.g. zombies)
    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setenv(MAX_NODES_ENV, "10")
    monkeypatch.chdir(tmp_path)
    rc = main(["local", "--no-progress", "--workers", "9", "--work-dir", str(tmp_path), "--cluster-id", "c",
               "-e", "OCI__TIMEOUT=600", "--", "sleep", "600"])
    out = capsys.readouterr().out
    assert rc == code, out
    assert len(started) == 3, out  # no node started after the signal
    assert "interrupted while starting: 7 node(s) not started" in out
    assert f"cluster stopped by operator: interrupted on the local launcher ({how})" in out
    assert sorted(p.name for p in (tmp_path / "c" / "logs").iterdir()) == ["main.log", "worker-1.log",
                                                                              "worker-2.log"]
    # the launcher's marker, or (when a starting MAIN archived it as a previous life's) a node's on SIGTERM
    assert json.loads((tmp_path / "c" / "stop").read_text())["outcome"] == "stopped"
    assert all(p.poll() is not None for p in started)  # torn down (reaped), none left behind
    assert [c for c in psutil.Process().children(recursive=True) if c.pid not in before] == []


# -- 3: hostile specs ----------------------------------------------------------------------------
def alias_bomb(path: Path) -> Path:
    """The 9-level "billion laughs" of the issue: a few hundred bytes, 9^9 values when expanded."""
    lines = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("command", [["submit", "--dry-run"], ["local"]])
def test_a_yaml_alias_bomb_is_refused(tmp_path, command):
    bomb = alias_bomb(tmp_path / "bomb.yaml")
    assert bomb.stat().st_size < 400
    r = cli(*command, "-f", bomb, cwd=tmp_path, timeout=BOMB_GUARD)
    one_error_line(r, command[0], f"{bomb}: the YAML expands to more than 100000 values")


@pytest.mark.parametrize("command", [["submit", "--dry-run"], ["local"]])
def test_a_spec_of_10_mb_is_refused_by_size(tmp_path, command):
    spec = tmp_path / "huge.yaml"
    spec.write_text(SPEC.format(replicas=1) + "# padding\n" * (1024 * 1024))
    size = spec.stat().st_size
    assert size > 10 * 1024 * 1024
    r = cli(*command, "-f", spec, cwd=tmp_path, timeout=BOMB_GUARD)
    one_error_line(r, command[0], f"{spec}: {size} bytes; a spec may hold at most {MAX_SPEC_BYTES} bytes")


# -- 4, 5: work dirs and output folders that cannot be used ------------------------------------------
@pytest.mark.parametrize("target, fragment", [
    ("afile", "Not a directory (a file is in the way: a folder is needed)"),
    ("afile/sub", "Not a directory (a file is in the way: a folder is needed)"),
    ("/proc/fsm-cluster-test/wd", "No such file or directory"),  # nothing, not even root, writes here
])
@pytest.mark.parametrize("entry", [["--", "sh", "-c", "true"], ["--", "python", "train.py"]])
def test_an_unusable_work_dir_is_one_error_and_loses_nothing(tmp_path, target, fragment, entry):
    write_train(tmp_path)
    (tmp_path / "afile").write_text("precious\n")
    r = cli("local", "--workers", "0", "--work-dir", target, *entry, cwd=tmp_path)
    one_error_line(r, "local", f"--work-dir {target}: cannot write ", fragment)
    assert (tmp_path / "afile").read_text() == "precious\n"


@pytest.fixture
def read_only_mount(tmp_path):
    """A read-only tmpfs (root ignores permission bits, not a read-only mount); skipped where
    mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    target = tmp_path / "ro"
    target.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "fsm-cluster-test", str(target)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.mark.parametrize("entry", [["--", "sh", "-c", "true"], ["--", "python", "train.py"]])
def test_a_read_only_work_dir_is_one_error(tmp_path, read_only_mount, entry):
    write_train(tmp_path)
    r = cli("local", "--workers", "0", "--work-dir", read_only_mount, *entry, cwd=tmp_path)
    one_error_line(r, "local", f"--work-dir {read_only_mount}: cannot write {read_only_mount}/",
                   "Read-only file system")


@pytest.mark.parametrize("uri", ["memory://wd", "simplecache::memory://wd"])
def test_a_process_local_work_dir_is_refused(tmp_path, uri):
    # (before: every node had its own memory store, and MAIN waited for the workers until OCI__TIMEOUT)
    r = cli("local", "--workers", "1", "--work-dir", uri, "-e", "OCI__TIMEOUT=5", cwd=tmp_path)
    one_error_line(r, "local", f"--work-dir {uri}: memory:// is private to one process")


@pytest.mark.parametrize("args, fragment", [
    (["--out", "afile"], "--out afile: cannot write afile: File exists (a file is in the way"),
    (["--out", "afile/sub"], "--out afile/sub: cannot write afile/sub: Not a directory"),
    (["-o", "."], "-o .: cannot write .: Is a directory"),
])
def test_diagram_output_that_cannot_be_written_is_one_error(tmp_path, args, fragment):
    (tmp_path / "afile").write_text("precious\n")
    r = cli("diagram", *args, cwd=tmp_path)
    one_error_line(r, "diagram", fragment)
    assert (tmp_path / "afile").read_text() == "precious\n"


# -- 6: the command `init` prints works as printed ---------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("framework", ["command", "dask"])
def test_the_next_command_printed_by_init_runs(tmp_path, framework):
    if framework == "dask":
        pytest.importorskip("distributed")
    env = clean_env(TMPDIR=tmp_path, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    for name in ("PROJECT_OCID", "COMPARTMENT_OCID", "SUBNET_OCID", "LOG_GROUP_OCID", "IMAGE", "WORK_DIR"):
        env.pop(name, None)  # the infrastructure placeholders are not set: local runs ignore them
    r = cli("init", "--framework", framework, "-d", "proj", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    printed = next(line for line in r.stdout.splitlines() if line.startswith("next: "))
    argv = shlex.split(printed[len("next: "):].split("  (")[0])
    assert argv[:2] == ["fsm-cluster", "local"]
    run = cli(*argv[1:], "--no-progress", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "cluster complete" in run.stdout
    assert ("sum of squares: 328350" if framework == "dask" else "rank 2 of 3") in run.stdout


# -- 7: one corrupt state file does not hide the others ----------------------------------------------
@pytest.mark.integration
def test_status_shows_every_node_and_flags_the_corrupt_one(tmp_path):
    r = cli("local", "--no-progress", "--workers", "2", "--work-dir", tmp_path, "--cluster-id", "c", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "c" / "WORKER_worker-1_state.json"
    bad.write_text('{"schema_version": 1, "node": "WORKER_worker-1"}')
    # With the cluster's secret (kept by the launcher) a hand-written file is refused as unsigned...
    signed = cli("status", tmp_path / "c", "--json")
    one_error_line(signed, "status", "1 file(s) could not be read", f"{bad}: not signed, refused")
    # ...and a reader without it sees what is wrong with the file's content.
    r = cli("status", tmp_path / "c", "--json", env=clean_env(XDG_CACHE_HOME=tmp_path / "elsewhere"))
    line = one_error_line(r, "status", "1 file(s) could not be read", f"{bad}: field 'mode' is missing")
    doc = json.loads(r.stdout)
    states = {n["node"]: (n["state"], n["error"]) for n in doc["nodes"]}
    assert states["MAIN"] == ("stopped", None) and states["WORKER_worker-2"] == ("stopped", None)
    assert states["WORKER_worker-1"][0] == "unreadable"
    assert f"{bad}: field 'mode' is missing" in states["WORKER_worker-1"][1] in line
    assert doc["outcome"]["outcome"] == "complete" and doc["counts"] == {"stopped": 2, "unreadable": 1}
    table = cli("status", tmp_path / "c", env=clean_env(XDG_CACHE_HOME=tmp_path / "elsewhere"))
    one_error_line(table, "status", f"{bad}")
    rows = {row.split("│")[1].strip(): row for row in table.stdout.splitlines() if row.startswith("│ ")}
    assert "unreadable" in rows["WORKER_worker-1"] and "WORKER_worker-1_state.json" in rows["WORKER_worker-1"]
    assert "stopped" in rows["MAIN"] and "stopped" in rows["WORKER_worker-2"]
    assert "outcome: complete by MAIN" in table.stdout


# -- 8: identifiers from the command line ------------------------------------------------------------
@pytest.mark.parametrize("cluster_id", ["../x", "a/b", ".hidden", ""])
def test_a_cluster_id_that_is_not_one_folder_name_is_refused(tmp_path, cluster_id):
    wd = tmp_path / "wd"
    (wd / "c").mkdir(parents=True)
    (wd / "c" / "stop").write_text('{"outcome": "complete", "node": "MAIN"}')
    for command in (["local", "--workers", "0", "--work-dir", wd], ["status", wd], ["stop", wd]):
        r = cli(*command, "--cluster-id", cluster_id, cwd=tmp_path)
        one_error_line(r, command[0], f"--cluster-id: {cluster_id!r} is not a valid identifier")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wd"]  # nothing written outside the work dir
    assert sorted(p.name for p in wd.iterdir()) == ["c"] and sorted(p.name for p in (wd / "c").iterdir()) == ["stop"]


# -- 9: logs are owner-only ----------------------------------------------------------------------
@pytest.mark.integration
def test_logs_and_the_folders_the_launcher_creates_are_owner_only(tmp_path):
    wd = tmp_path / "wd"
    r = cli("local", "--no-progress", "--workers", "1", "--work-dir", wd, "--cluster-id", "c",
            "--", "sh", "-c", "echo secret", cwd=tmp_path, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    mode = {p.relative_to(wd).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in wd.rglob("*")}
    assert mode["c/logs"] == mode["c"] == mode["c/launch"] == 0o700
    assert mode["c/logs/main.log"] == mode["c/logs/worker-1.log"] == 0o600
    assert mode["c/launch/entry.sh"] == 0o700
    assert "secret" in (wd / "c" / "logs" / "main.log").read_text()
