"""`fsm-cluster local` replaces a lost node when MAIN records a restart waiting for it (issue 15).

Real launcher, real node processes, real kill -9. MAIN alone decides: the launcher replaces a node
only for a record in MAIN's state file whose ``waiting_for`` names it, with the lost node's
environment (same mode, rank, every variable) plus ``OCI__REPLACES`` and a new run id.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import psutil
import pytest

from fsm_cluster.wire import secretstore
from fsm_cluster.wire.models import RestartRecord
from fsm_cluster.wire.workdir import WorkDir, state_name

from .clihelp import HANG_GUARD, clean_env, cli, popen, wait_for, write_train

pytestmark = pytest.mark.integration

RECOVERY_FIXTURE = Path(__file__).resolve().parents[1] / "spec" / "fixtures" / "fsm_recovery.yaml"

# Each rank marks its start (rank, restart count, pid) and waits for the test's "go".
ENTRY = """\
import os, time
marks = os.environ["MARK_DIR"]
rank, restart = os.environ["RANK"], os.environ.get("OCI__RESTART_COUNT", "0")
with open(os.path.join(marks, f"started-{rank}-{restart}-{os.getpid()}"), "w"):
    pass
while not os.path.exists(os.path.join(marks, "go")):
    time.sleep(0.05)
print(f"rank {rank} done after {restart} restart(s)", flush=True)
"""


class Launcher:
    """`fsm-cluster local` in the background; its output collected line by line."""

    def __init__(self, *args, cwd):
        self.proc = popen("local", "--no-progress", *args, cwd=cwd)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def out(self) -> str:
        return "\n".join(self.lines)

    def family(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []

    def node_with(self, name: str, value: str) -> dict | None:
        """The environment of a live node process (``fsm_cluster run``) whose ``name`` is ``value``."""
        for p in self.family():
            try:
                if p.cmdline()[-2:] == ["fsm_cluster", "run"] and p.environ().get(name) == value:
                    return p.environ()
            except psutil.Error:
                continue
        return None

    def __enter__(self) -> "Launcher":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:  # a failed test leaves nothing running
            self.proc.kill()

    def finish(self) -> int:
        try:
            self.proc.wait(timeout=HANG_GUARD)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.reader.join(timeout=10)
        return self.proc.returncode


def node_pid(cluster_dir, node: str) -> int:
    return json.loads((cluster_dir / state_name(node)).read_text())["pid"]


def kill_node(cluster_dir, node: str) -> None:
    os.kill(node_pid(cluster_dir, node), signal.SIGKILL)


def started(marks) -> set[str]:
    return {p.name for p in marks.iterdir() if p.name.startswith("started-")}


def no_process_left(family: list[psutil.Process]) -> bool:
    _, alive = psutil.wait_procs(family, timeout=10)  # hang guard only
    return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []


def start_cluster(tmp_path, *env: str, workers: int = 2):
    """1 MAIN + ``workers`` WORKERs running ENTRY on every node under OnFailure (backoffLimit 2),
    once every entry script started: (launcher, marks folder, cluster dir)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "entry.py").write_text(ENTRY)
    wd = tmp_path / "wd"
    options = ["-e", "OCI__RESTART_POLICY=OnFailure", "-e", "OCI__BACKOFF_LIMIT=2", "-e", f"MARK_DIR={marks}"]
    for pair in env:
        options += ["-e", pair]
    launcher = Launcher("--workers", workers, "--run-on", "all", "--work-dir", wd, "--cluster-id", "c",
                        *options, "--", "python", "entry.py", cwd=tmp_path)
    try:
        wait_for(lambda: len(started(marks)) == 1 + workers or launcher.proc.poll() is not None,
                 "every entry script to start")
        assert len(started(marks)) == 1 + workers, launcher.out
    except BaseException:
        launcher.proc.kill()
        raise
    return launcher, marks, wd / "c"


def test_policy_never_a_lost_node_ends_the_cluster_as_before(tmp_path):
    """No node side needed: under Never MAIN records no restart, the launcher writes the failure at
    once (or MAIN does, on its channel) and nothing is replaced."""
    train = write_train(tmp_path)
    r = cli("local", "--no-progress", "--workers", "2", "--run-on", "all", "--work-dir", tmp_path,
            "--cluster-id", "c", "-e", "OCI__RESTART_POLICY=Never", "-e", "OCI__BACKOFF_LIMIT=2",
            "-e", "KILL_NODE_RANK=1", "-e", "SLEEP=300", "--", "python", train, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("cluster failed on worker-1: worker-1 exited with code -9" in r.stdout
            or "cluster failed on main: WORKER_worker-1: lost on the control channel" in r.stdout), r.stdout
    assert "replaced" not in r.stdout and "MAIN decides" not in r.stdout
    assert sorted(p.name for p in (tmp_path / "c" / "logs").iterdir()) == ["main.log", "worker-1.log",
                                                                           "worker-2.log"]
    assert json.loads((tmp_path / "c" / "stop").read_text())["outcome"] == "failed"


def test_a_restart_record_of_main_gets_the_lost_node_replaced(tmp_path):
    """The launcher's half alone, with MAIN's record written by the test: MAIN runs files-only with
    an hour's heartbeat, so it neither notices the loss nor rewrites its state file meanwhile (the
    node side of issue 15 is not needed). A WORKER killed -9 is not replaced until MAIN's state
    records a restart waiting for it; then it is, with its rank and environment and OCI__REPLACES.
    A record waiting for a node whose process still lives (MAIN lost it: frozen, cut off) gets that
    process killed and replaced too. Ctrl-C then tears every process down, replacements included."""
    launcher, _, cluster = start_cluster(tmp_path, "OCI__CONTROL=off", "OCI__HEARTBEAT_INTERVAL=3600",
                                         "OCI__HEARTBEAT_TIMEOUT=7200", "OCI__TIMEOUT=600")
    wd = cluster.parent
    with launcher:
        worker1 = launcher.node_with("JOB_RUN_OCID", "worker-1")
        kill_node(cluster, "WORKER_worker-1")
        wait_for(lambda: "worker-1 exited with code -9; MAIN decides" in launcher.out
                 or launcher.proc.poll() is not None, "the launcher to see the loss")
        # no record yet: nothing replaced, the cluster goes on
        assert launcher.proc.poll() is None, launcher.out
        assert launcher.node_with("OCI__REPLACES", "WORKER_worker-1") is None
        assert not (cluster / "stop").exists()

        # MAIN's decision, as the node side writes it: signed with the cluster's secret
        workdir = WorkDir(str(wd), "c", secret=secretstore.load(f"{wd}/c"))
        main = workdir.read_state("MAIN")
        records = [RestartRecord(count=1, node="WORKER_worker-1", reason="WORKER_worker-1 lost",
                                 waiting_for="WORKER_worker-1"),
                   RestartRecord(count=2, node="WORKER_worker-2", reason="WORKER_worker-2 silent",
                                 waiting_for="WORKER_worker-2")]
        workdir.write(state_name("MAIN"), main.model_copy(update={"restarts": records}))

        def replacements():
            one = launcher.node_with("OCI__REPLACES", "WORKER_worker-1")
            two = launcher.node_with("OCI__REPLACES", "WORKER_worker-2")
            return (one, two) if one and two else launcher.proc.poll() is not None
        found = wait_for(replacements, "both replacements to start")
        assert found is not True, launcher.out
        one, two = found
        # the lost node's environment, unchanged but for the run id and OCI__REPLACES
        assert one == {**worker1, "JOB_RUN_OCID": "worker-1-r1", "OCI__REPLACES": "WORKER_worker-1"}
        assert (one["OCI__MODE"], one["RANK"]) == ("WORKER", "1")
        assert (two["OCI__MODE"], two["RANK"], two["JOB_RUN_OCID"]) == ("WORKER", "2", "worker-2-r2")
        assert "MAIN lost worker-2 while its process lives: killing it to replace it" in launcher.out
        assert "restart 1: WORKER_worker-1 lost; worker-1 (rank 1) is replaced by worker-1-r1" in launcher.out
        assert (cluster / "logs" / "worker-1-r1.log").exists() and (cluster / "logs" / "worker-2-r2.log").exists()

        family = launcher.family()
        launcher.proc.send_signal(signal.SIGINT)  # nodes look at the work dir hourly: Ctrl-C twice
        wait_for(lambda: "interrupted: stop marker written" in launcher.out, "the first interrupt")
        launcher.proc.send_signal(signal.SIGINT)
        code = launcher.finish()
    assert code == 130, launcher.out
    assert "2 node(s) replaced: worker-1 by worker-1-r1, worker-2 by worker-2-r2" in launcher.out
    assert no_process_left(family)
    # each record was served once: one replacement per record, no more
    assert launcher.out.count("is replaced by") == 2


def test_a_lost_node_main_never_decides_on_fails_the_cluster_after_main_s_heartbeat_timeout(tmp_path):
    """No node side needed: MAIN is frozen (SIGSTOP) when the only WORKER is killed, so neither a
    restart record nor a stop marker comes; the launcher fails the cluster once MAIN's heartbeat
    timeout (3 s) and a margin passed, naming the node. MAIN, let go, ends with the cluster."""
    launcher, _, cluster = start_cluster(tmp_path, "OCI__HEARTBEAT_TIMEOUT=3", workers=1)
    main_pid = node_pid(cluster, "MAIN")
    with launcher:
        os.kill(main_pid, signal.SIGSTOP)
        try:
            kill_node(cluster, "WORKER_worker-1")
            wait_for(lambda: (cluster / "stop").exists() or launcher.proc.poll() is not None,
                     "the launcher's verdict")
        finally:
            os.kill(main_pid, signal.SIGCONT)
        code = launcher.finish()
    assert code == 1, launcher.out
    assert "worker-1 exited with code -9; MAIN decides whether it is replaced" in launcher.out
    assert ("cluster failed on worker-1: worker-1 exited with code -9 (MAIN recorded no restart for it "
            "within 8 s)") in launcher.out
    assert "replaced by" not in launcher.out


def test_kill_9_of_a_worker_under_on_failure_is_replaced_and_the_job_completes(tmp_path):
    """End to end: MAIN sees the loss, records a restart waiting for the lost WORKER, the launcher
    starts the replacement (same rank, OCI__REPLACES), it registers, the code completes: exit 0."""
    launcher, marks, cluster = start_cluster(tmp_path)
    with launcher:
        kill_node(cluster, "WORKER_worker-1")
        found = wait_for(lambda: launcher.node_with("OCI__REPLACES", "WORKER_worker-1")
                         or launcher.proc.poll() is not None, "the replacement")
        assert found is not True, launcher.out
        assert (found["OCI__MODE"], found["RANK"], found["JOB_RUN_OCID"]) == ("WORKER", "1", "worker-1-r1")
        (marks / "go").write_text("")
        code = launcher.finish()
    assert code == 0, launcher.out
    assert "1 node(s) replaced: worker-1 by worker-1-r1" in launcher.out
    assert "cluster complete" in launcher.out
    assert json.loads((cluster / "stop").read_text())["outcome"] == "complete"
    restarts = json.loads((cluster / "MAIN_state.json").read_text())["restarts"]
    assert [(r["count"], r["node"]) for r in restarts] == [(1, "WORKER_worker-1")]
    # rank 1 ran the code twice: the lost node, then its replacement
    assert len([m for m in started(marks) if m.startswith("started-1-")]) == 2, started(marks)
    status = cli("status", cluster, env=clean_env(COLUMNS="200"))
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("restart #") == 1 and "WORKER_worker-1 (lost)" in status.stdout, status.stdout


def test_local_spec_carries_the_recovery_keys_to_every_node(tmp_path):
    """`fsm-cluster local -f`: the cluster's keys on every node, a role's own policy on its nodes;
    an OCI__REPLACES exported by the shell never reaches a node (only a launcher sets it)."""
    spec = tmp_path / "train.yaml"
    spec.write_text(RECOVERY_FIXTURE.read_text().replace("ephemeral: true", "runOn: all"))
    (tmp_path / "train.py").write_text(
        'import os\nprint("rank {RANK}: {OCI__RESTART_POLICY} {OCI__BACKOFF_LIMIT} '
        '{OCI__ACTIVE_DEADLINE_SECONDS} replaces=[{r}]".format(r=os.environ.get("OCI__REPLACES", ""), '
        '**os.environ), flush=True)\n')
    r = cli("local", "--no-progress", "-f", spec, "--work-dir", tmp_path / "wd", cwd=tmp_path,
            env=clean_env(OCI__REPLACES="WORKER_someone"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rank 0: Never 2 3600 replaces=[]" in r.stdout
    assert "rank 1: ExitCode 2 3600 replaces=[]" in r.stdout
    assert "rank 2: ExitCode 2 3600 replaces=[]" in r.stdout
