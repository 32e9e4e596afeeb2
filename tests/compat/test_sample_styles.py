"""Providers written in the style of each of oracle-ads' published sample providers (Dask,
PyTorch, TensorFlow, Horovod, Ray: oracle-samples/oci-data-science-ai-samples,
distributed_training/), each run unchanged on a real local cluster of 1 MAIN + 2 WORKER nodes.

Each style lives in tests/compat/samples/<style>/ (provider module, the image's run script, start
scripts, entry script) and imports only fsm_cluster. The nodes are started by hand as the platform
starts job runs: ``python run.py`` with the contract in the environment, a heartbeat timeout of
2 s (every style's code blocks in its hooks for longer: a keeper must beat meanwhile) and a token
(WIRE_TOKEN) that every process they start inherits. Each test checks the work really done, exit 0
everywhere, and that nothing the cluster started is still running: by the token in the
environment, and by a marker (this test's own folder) in the engines' command lines.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

import fsm_cluster
from fsm_cluster.runtime.process import sweep as end_processes
from cli.clihelp import clean_env

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).parent / "samples"
FSM_ROOT = Path(fsm_cluster.__file__).resolve().parents[1]  # the fsm_cluster under test
HANG_GUARD = 240  # seconds for a whole cluster: a guard against hangs, never a timing assertion
HB_INTERVAL, HB_TIMEOUT = 0.5, 2.0
HOLD = 2 * HB_TIMEOUT  # how long each style's blocking code holds after its work: past the timeout
WORKERS = ("w1", "w2")


def node_id(run: str) -> str:
    """The node's name in the work dir's files (oracle-ads' config file stems)."""
    return "MAIN" if run == "main" else f"WORKER_{run}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


class SampleCluster:
    """One cluster of a sample style: MAIN (RANK 0) and the WORKERS, each ``python run.py`` in the
    style's folder, as one job run each. ``marker`` appears in the command line of every engine
    process the style starts (a path under it); ``out`` is where the code writes its results."""

    def __init__(self, tmp_path: Path, sweep, style: str, cluster_type: str, entry: str, **env):
        self.tmp, self.sweep, self.dir = tmp_path, sweep, SAMPLES / style
        self.out = tmp_path / "out"
        self.out.mkdir()
        self.work_dir = tmp_path / "wd"
        self.job = f"{style}-cluster"
        self.token = uuid.uuid4().hex
        self.marker = str(env.pop("marker", tmp_path))
        self.env = dict(OCI__WORK_DIR=self.work_dir, JOB_OCID=self.job, OCI__CLUSTER_TYPE=cluster_type,
                        OCI__WORKER_COUNT=len(WORKERS), OCI__EPHEMERAL=1, OCI__TIMEOUT=120,
                        OCI__SELF_IP="127.0.0.1", OCI__HEARTBEAT_INTERVAL=HB_INTERVAL,
                        OCI__HEARTBEAT_TIMEOUT=HB_TIMEOUT, OCI__ENTRY_SCRIPT=entry, OCI__CODE_DIR=self.dir,
                        POST_PROCESSING_WAIT=0, PYTHONUNBUFFERED=1, SAMPLE_OUT=self.out, SAMPLE_HOLD=HOLD,
                        WIRE_TOKEN=self.token, PYTHONPATH=os.pathsep.join(map(str, (self.dir, SAMPLES, FSM_ROOT))),
                        # the engines' scripts (dask, ray) are on PATH, as in the samples' images
                        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **env)
        self.nodes: dict[str, tuple[subprocess.Popen, Path]] = {}
        sweep(self.token)  # registered now: the fixture ends what carries the token even if the test fails

    def start(self, node_env: dict[str, dict] | None = None) -> "SampleCluster":
        """MAIN and the workers, each with ``node_env[run]`` added to its environment."""
        runs = {"main": ("MAIN", 0), **{w: ("WORKER", i) for i, w in enumerate(WORKERS, start=1)}}
        for run, (mode, rank) in runs.items():
            env = clean_env(**self.env, OCI__MODE=mode, JOB_RUN_OCID=run, RANK=rank, **(node_env or {}).get(run, {}))
            log = self.tmp / f"{run}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen([sys.executable, "run.py"], cwd=self.dir, env=env, stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self.nodes[run] = (proc, log)
        return self

    def wait(self) -> dict[str, int]:
        deadline = time.monotonic() + HANG_GUARD
        try:
            for p, _ in self.nodes.values():
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"cluster still running after {HANG_GUARD} s:{self.explain()}") from None
        return {run: p.returncode for run, (p, _) in self.nodes.items()}

    def explain(self) -> str:
        logs = "\n".join(f"----- {run} (exit {p.poll()})\n{log.read_text()[-8000:]}"
                         for run, (p, log) in self.nodes.items())
        d = self.work_dir / self.job
        files = sorted(f.name for f in d.iterdir()) if d.is_dir() else []
        return f"\n{logs}\nwork dir: {files}\nout: {sorted(f.name for f in self.out.iterdir())}"

    def left_running(self) -> list[str]:
        """Processes the cluster started that are still running: carrying its token, the marker in
        their command line, or working in the style's folder (the nodes' working directory, which
        their processes inherit). A process that renames itself with setproctitle (Ray's
        ``ray::DashboardAgent``) overwrites both its command line and its environment as /proc
        shows them: only its working directory still tells where it came from."""
        return sorted({f"{p.pid} {cmdline(p)[:200]}" for p in self.sweep(self.token) + self.strays()})

    def strays(self) -> list[psutil.Process]:
        me = os.getpid()
        return [p for p in psutil.process_iter() if p.pid != me and (self.marker in cmdline(p) or self.works_here(p))]

    def works_here(self, p: psutil.Process) -> bool:
        try:
            return p.cwd() == str(self.dir) and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def kill_left(self) -> None:
        """The test's own cleanup (after its assertions): what only the folder or marker tells."""
        end_processes(seen=self.strays(), grace=0)

    def completed(self) -> None:
        """Every node exited 0 and nothing the cluster started is still running (a moment is
        allowed for processes the teardown killed to be reaped)."""
        codes = self.wait()
        assert codes == dict.fromkeys(codes, 0), f"exit codes {codes}{self.explain()}"
        for run in self.nodes:  # what each node itself says (a runner of its own picks the exit code)
            state = json.loads((self.work_dir / self.job / f"{node_id(run)}_state.json").read_text())
            said = (state["state"], state["exit_code"], (state["stop"] or {}).get("outcome"))
            assert said == ("stopped", 0, "complete"), f"{run}: {said} {state['reason']}{self.explain()}"
        deadline = time.monotonic() + 10
        while self.left_running() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.left_running() == [], f"left running after the cluster completed{self.explain()}"

    def result(self, name: str = "result.json"):
        path = self.out / name
        assert path.exists(), f"no {name}{self.explain()}"
        return json.loads(path.read_text())

    def calls(self, hook: str) -> list[list[str]]:
        """``[mode, run, caller]`` for each call of ``hook`` recorded by samples/calls.py."""
        path = self.out / f"{hook}.calls"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def sample_cluster(tmp_path, sweep):
    """``sample_cluster(style, cluster_type, entry, **env)`` makes a SampleCluster; whatever one
    left running is ended after the test, failed or not."""
    made: list[SampleCluster] = []

    def make(style: str, cluster_type: str, entry: str, **env) -> SampleCluster:
        made.append(SampleCluster(tmp_path, sweep, style, cluster_type, entry, **env))
        return made[-1]

    yield make
    for c in made:
        c.kill_left()


def engine_pids(out: Path, pattern: str) -> dict[str, int]:
    """The pids of the engines the start scripts backgrounded (``$!``, written by the scripts)."""
    return {f.name: int(f.read_text().split()[0]) for f in sorted(out.glob(pattern))}


def test_dask_sample_style(sample_cluster):
    """The Dask sample: start scripts background the real ``dask scheduler`` / ``dask worker``
    and exit (the node must still end them: oracle-ads' samples left three orphans per run);
    ``nprocs`` / ``death_timeout`` (lower case) reach the workers through MAIN's exported
    configuration; MAIN's run_code polls check_cluster_status (its own Client, closed) until both
    workers joined, then blocks in the entry script's real computation for longer than the
    heartbeat timeout. check_cluster_status is called by the provider only, never by the life."""
    c = sample_cluster("dask_style", "DASK", "compute.py", SCHEDULER_PORT=free_port()).start()
    c.completed()
    assert c.result() == {"total": sum(i * i for i in range(100)), "workers": list(WORKERS)}, c.explain()
    pids = engine_pids(c.out, "*.bg")
    assert sorted(pids) == ["scheduler.bg", "worker-w1.bg", "worker-w2.bg"], c.explain()
    assert not [pid for pid in pids.values() if psutil.pid_exists(pid) and c.marker in cmdline(psutil.Process(pid))]
    calls = c.calls("check_cluster_status")
    assert calls and {(mode, caller) for mode, _, caller in calls} == {("MAIN", "runnable")}, calls
    main_config = json.loads((c.work_dir / c.job / "MAIN_config.json").read_text())
    assert (main_config["nprocs"], main_config["death_timeout"], main_config["SCHEDULER_IP"]) == (1, 10, "127.0.0.1")


def test_pytorch_sample_style(sample_cluster):
    """The PyTorch sample: the provider's ``__init__`` has no ``**kwargs`` (built positionally) and
    takes its mode from RANK; its own start() exports MAIN's configuration, so MASTER_ADDR reaches
    every node's environment; every node's run_code blocks in a real gloo all-reduce that holds
    past the heartbeat timeout (no node may be declared dead meanwhile)."""
    c = sample_cluster("pytorch_style", "PYTORCH", "allreduce.py", MASTER_PORT=free_port()).start()
    c.completed()
    runs = {0: "main", 1: "w1", 2: "w2"}
    for rank, run in runs.items():
        assert c.result(f"allreduce-{rank}.json") == {"rank": rank, "world": 3, "sum": 6.0, "master": "127.0.0.1",
                                                      "run": run}, c.explain()
    main_config = json.loads((c.work_dir / c.job / "MAIN_config.json").read_text())
    assert main_config["MASTER_ADDR"] == "127.0.0.1"
    for run in WORKERS:
        assert json.loads((c.work_dir / c.job / f"WORKER_{run}_config.json").read_text())["OCI__WORKER_IP"] == "127.0.0.1"


def test_tensorflow_sample_style(sample_cluster):
    """The TensorFlow sample: ``os.environ["JOB_OCID"]`` read before ``super().__init__``; MAIN's
    start_main globs every node's ``*config.json`` through ``stop_filesystem`` and reads it flat
    (``cfg["OCI__MODE"]``, ``cfg["OCI__WORKER_IP"]``, ``cfg["WORKER_PORT"]``) into its own
    cluster.json; the workers' overridden ready() waits for that file; each worker's non-daemon
    thread polls for the stop file (the node cannot exit before it is there); every node's code
    checks the TF_CONFIG built from cluster.json, holding past the heartbeat timeout."""
    ports = {run: free_port() for run in ("main", *WORKERS)}
    c = sample_cluster("tensorflow_style", "TENSORFLOW", "check_tf_config.py")
    c.start({run: {"WORKER_PORT": port, "SAMPLE_PORT": port} for run, port in ports.items()}).completed()
    cluster = json.loads((c.work_dir / c.job / "cluster.json").read_text())
    assert sorted(cluster["worker"].values()) == sorted(f"127.0.0.1:{p}" for p in ports.values()), cluster
    assert cluster["worker"]["0"] == f"127.0.0.1:{ports['main']}"  # MAIN is the chief
    seen = {c.result(f"tf-{i}.json")["run"]: c.result(f"tf-{i}.json")["tf_config"] for i in range(3)}
    assert sorted(seen) == ["main", *WORKERS], c.explain()
    assert all(tf["cluster"]["worker"] == [cluster["worker"][str(i)] for i in range(3)] for tf in seen.values())
    for run in WORKERS:  # the monitor threads ended on the stop file MAIN wrote
        assert (c.out / f"monitor-{run}").read_text() == "stop file seen", c.explain()


def test_horovod_sample_style(sample_cluster):
    """The Horovod sample: a ClusterRunner subclass with its own oracle-ads-shaped run() drives
    the node; the provider calls expected_worker_count() before ``super().__init__()``, exports
    its own config file, runs the "training" inside run_code called from start_main (blocking
    past the heartbeat timeout), discovers the hosts by reading every ``*config.json`` flat, and
    writes the ``stop`` file itself (its stop() override); the workers wait for that file in their
    start_worker. What start_worker.sh left in the background (the sample's sshd) is ended."""
    c = sample_cluster("horovod_style", "HOROVOD", "train_check.py").start()
    c.completed()
    assert c.result("hosts.json") == {"hosts": [["127.0.0.1", 1]] * 3, "args": ["--np", "1"]}, c.explain()
    assert (c.work_dir / c.job / "stop").exists() and not (c.work_dir / c.job / "stop_fail").exists()
    pids = engine_pids(c.out, "sshd-*.bg")  # MAIN starts its own worker side too
    assert sorted(pids) == ["sshd-main.bg", "sshd-w1.bg", "sshd-w2.bg"], c.explain()
    for run in ("main", *WORKERS):
        config = json.loads((c.work_dir / c.job / f"{node_id(run)}_config.json").read_text())
        assert (config["OCI__WORKER_IP"], config["OCI__SLOTS"]) == ("127.0.0.1", "1"), config


RAY_NODE_PORTS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                  "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")


@pytest.mark.flaky(reruns=1, only_rerun=["timed out during startup"])  # Ray's own 30 s limit: see tests/engines/test_ray.py
def test_ray_sample_style(sample_cluster):
    """The Ray sample: ``ray start`` daemonizes the head and the workers (their processes are no
    children the node spawned); MAIN's run_code polls ray.nodes() until both workers joined and
    blocks in a real Ray job; every Ray process is gone after the cluster completed."""
    ray_tmp = Path(f"/tmp/rs-{uuid.uuid4().hex[:8]}")  # short: Ray's socket paths must fit in 107 bytes
    c = sample_cluster("ray_style", "RAY", "job.py", RAY_PORT=free_port(), marker=ray_tmp)
    try:
        # three Ray nodes on one host: each its own temp dir and ports (the sample's nodes have a
        # host each; nodes starting at once in one session dir on one IP collide), the ports given
        # through OCI__START_ARGS, which the provider passes to its start script
        c.start({run: {"RAY_TMP": ray_tmp / run,
                       "OCI__START_ARGS": " ".join(f"--{name}={free_port()}" for name in RAY_NODE_PORTS)}
                 for run in ("main", *WORKERS)})
        c.completed()
        assert c.result() == {"total": 0 + 1 + 4, "nodes": 3}, c.explain()
        calls = c.calls("check_cluster_status")
        assert calls and {(mode, caller) for mode, _, caller in calls} == {("MAIN", "runnable")}, calls
    finally:
        c.kill_left()
        shutil.rmtree(ray_tmp, ignore_errors=True)
