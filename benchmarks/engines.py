"""Every built-in engine at production defaults against its raw launcher doing the same work (issue 26, item 1).

Per engine, ``--reps`` pairs run back to back in one process, alternating raw (A) and fsm_cluster
(B): A B A B …, so both see the same load. Each run does the same work on this host and is timed
from the launch of its first process to the moment every process it started (and every process
below them, found by a token in their environment) has exited:

* pytorch: 1 + N nodes, one gloo all-reduce. Raw: N+1 ``torchrun --nnodes N+1 --nproc-per-node 1
  --rdzv-backend=static --master-addr 127.0.0.1 --master-port P --node-rank i script.py``; fsm:
  ``fsm-cluster local --framework pytorch --workers N -- python script.py`` (the provider runs a
  ``.py`` entry under torchrun with the node's Python).
* dask: a scheduler + N workers + one client job (100 tasks). Raw: ``dask scheduler``, N ``dask
  worker``, the client, which waits for the N workers, runs the tasks and shuts the cluster down
  (``Client.shutdown``); fsm: the same client script as the entry (the cluster ends itself).
* ray: a head + N nodes + one job (100 tasks once every node is alive). Raw: ``ray start --head
  --block`` and, once it says "Ray runtime started", N ``ray start --address … --block`` (each with its own
  temp dir and free ports, as fsm_cluster gives them on one host), the job, then every Ray node's
  process group killed (what ``ray stop --force`` does, for this cluster only: a machine-wide
  ``ray stop`` would stop other Ray clusters here); fsm: the job as entry script.
* tensorflow: N+1 processes with a hand-written TF_CONFIG (free ports on 127.0.0.1), one
  MultiWorkerMirroredStrategy all-reduce; fsm: ``--framework tensorflow``.
* horovod: ``horovodrun -np N+1 -H localhost:N+1 --gloo python script.py`` vs ``--framework
  horovod``; only when ``import horovod.torch`` works in this Python (else skipped, saying why).

Every engine comes from this Python environment (its scripts dir, else ``sys.executable -m``).
fsm_cluster runs with ``-e OCI__HEARTBEAT_INTERVAL=10 -e OCI__HEARTBEAT_TIMEOUT=60`` (``-e`` adds
or overrides variables). Each script prints ``BENCH init <time>`` once its engine formed and
``BENCH done <time>`` after its work, so every run splits into formation (launch → last init),
work, and the end (last done → every process exited); fsm_cluster's runs also give the nodes'
logged transitions (``-> ready``, ``-> running``, MAIN's ``-> complete``, the last ``-> stopped``).
Prints per engine the raw and fsm_cluster medians, each pair's ratio and the median ratio against
the 1.2× target; writes benchmarks/results/engines.json.

    python benchmarks/engines.py --reps 3
    python benchmarks/engines.py --engines pytorch dask --reps 5
    python benchmarks/engines.py --quick          # 1 pair each, results/tmp/engines.json
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import HANG_GUARD, Nodes, cluster_bench, write_results  # noqa: E402
from benchmarks.formation import first_line, transitions  # noqa: E402

ENGINES = ("pytorch", "dask", "ray", "tensorflow", "horovod")
PRODUCTION = {"OCI__HEARTBEAT_INTERVAL": "10", "OCI__HEARTBEAT_TIMEOUT": "60"}
TARGET = 1.2
BENCH = re.compile(r"BENCH (init|done) (\d+\.\d+)")
BIN = Path(sys.executable).parent  # this environment's scripts dir (the venv's bin)
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
MADE: list[str] = []  # raw Ray's temp dirs (below /tmp: Ray's socket paths must stay short), removed after each run

SCRIPTS = {
    "pytorch": """
import time, torch, torch.distributed as dist
dist.init_process_group("gloo")
print("BENCH init", time.time(), flush=True)
t = torch.ones(1)
dist.all_reduce(t)
assert t.item() == dist.get_world_size(), t
print("BENCH done", time.time(), flush=True)
dist.destroy_process_group()
""",
    "dask": """
import os, sys, time
from distributed import Client
client = Client(os.environ["DASK_SCHEDULER_ADDRESS"])
client.wait_for_workers(int(sys.argv[1]))
print("BENCH init", time.time(), flush=True)
assert sum(client.gather(client.map(lambda x: x + 1, range(100)))) == 5050
print("BENCH done", time.time(), flush=True)
if "--shutdown" in sys.argv:  # the raw cluster: the client ends it (fsm_cluster ends its own)
    client.shutdown()
else:
    client.close()
""",
    "ray": """
import logging, os, sys, time
import ray
ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING, log_to_driver=False)
while sum(1 for n in ray.nodes() if n["Alive"]) < int(sys.argv[1]):
    time.sleep(0.1)
print("BENCH init", time.time(), flush=True)

@ray.remote
def inc(x):
    return x + 1

assert sum(ray.get([inc.remote(i) for i in range(100)])) == 5050
print("BENCH done", time.time(), flush=True)
ray.shutdown()
""",
    "tensorflow": """
import os, time
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
print("BENCH init", time.time(), flush=True)

@tf.function
def step():
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.constant(1.0))

total = float(strategy.experimental_local_results(strategy.run(step))[0].numpy())
assert total == strategy.num_replicas_in_sync, total
print("BENCH done", time.time(), flush=True)
""",
    "horovod": """
import time, torch
import horovod.torch as hvd
hvd.init()
print("BENCH init", time.time(), flush=True)
t = hvd.allreduce(torch.ones(1), op=hvd.Sum)
assert t.item() == hvd.size(), t
print("BENCH done", time.time(), flush=True)
hvd.shutdown()
""",
}
# how many processes print BENCH lines in one run of n WORKERs (+ MAIN)
PRINTERS = {"pytorch": lambda n: n + 1, "dask": lambda n: 1, "ray": lambda n: 1,
            "tensorflow": lambda n: n + 1, "horovod": lambda n: n + 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool(program: str, module: str) -> list[str]:
    """An engine's launcher from this environment: its console script, else ``python -m module``."""
    path = BIN / program
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


def horovod_missing() -> str | None:
    """Why Horovod cannot run here (None: ``import horovod.torch`` works in this Python)."""
    r = subprocess.run([sys.executable, "-c", "import horovod.torch"], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["import failed"])[-1]


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "JOB_", "TF_CONFIG"))}
    return {**env, **QUIET}


def gone(nodes: Nodes, guard: float = 30.0) -> float:
    """Wait until no process carrying the run's token is left; when that was (wall time)."""
    deadline = time.monotonic() + guard
    while nodes.leftovers():
        if time.monotonic() > deadline:
            raise SystemExit("processes left 30 s after the run: " + ", ".join(p.name() for p in nodes.leftovers()))
        time.sleep(0.02)
    return time.time()


def bench_lines(*logs: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"init": [], "done": []}
    for log in logs:
        for m in BENCH.finditer(log.read_text(errors="replace") if log.exists() else ""):
            out[m.group(1)].append(float(m.group(2)))
    return out


def phases(t0: float, end: float, marks: dict[str, list[float]], engine: str, n: int, logs) -> dict:
    want = PRINTERS[engine](n)
    if len(marks["done"]) != want or len(marks["init"]) != want:
        tails = "\n".join(f"----- {p}\n{p.read_text(errors='replace')[-2500:]}" for p in logs if p.exists())
        raise SystemExit(f"{engine}: {len(marks['done'])} of {want} processes did the work\n{tails}")
    return {"total": end - t0, "formed": max(marks["init"]) - t0, "work": max(marks["done"]) - max(marks["init"]),
            "end": end - max(marks["done"])}


# -- raw launchers ---------------------------------------------------------------------------------
def raw_pytorch(nodes: Nodes, tmp: Path, script: str, n: int) -> list[Path]:
    port, logs = free_port(), []
    env = {**base_env(), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}  # what fsm_cluster sets too
    for i in range(n + 1):
        logs.append(tmp / f"torchrun{i}.log")
        nodes.start(tool("torchrun", "torch.distributed.run") + [
            "--nnodes", str(n + 1), "--nproc-per-node", "1", "--rdzv-backend=static", "--master-addr", "127.0.0.1",
            "--master-port", str(port), "--node-rank", str(i), script], env, logs[-1])
    return logs


def raw_dask(nodes: Nodes, tmp: Path, script: str, n: int) -> list[Path]:
    port, env, dask = free_port(), base_env(), tool("dask", "dask")
    addr = f"tcp://127.0.0.1:{port}"
    logs = [tmp / "scheduler.log"]
    nodes.start(dask + ["scheduler", "--host", "127.0.0.1", "--port", str(port),
                        "--dashboard-address", f"127.0.0.1:{free_port()}"], env, logs[0])
    for i in range(n):
        logs.append(tmp / f"worker{i}.log")
        nodes.start(dask + ["worker", addr, "--host", "127.0.0.1", "--name", f"w{i}",
                            "--dashboard-address", "127.0.0.1:0"], env, logs[-1])
    logs.append(tmp / "client.log")
    nodes.start([sys.executable, script, str(n), "--shutdown"], {**env, "DASK_SCHEDULER_ADDRESS": addr}, logs[-1])
    return logs


def ray_isolation(tmp: Path, i: int, head: bool) -> list[str]:
    """What fsm_cluster gives every Ray node on one host: a temp dir and free ports of its own."""
    MADE.append(tempfile.mkdtemp(prefix=f"ray{i}-", dir="/tmp"))
    args = ["--temp-dir", MADE[-1],
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]
    if head:
        args += ["--ray-client-server-port", str(free_port()), "--dashboard-host", "127.0.0.1",
                 "--dashboard-port", str(free_port())]
    return args


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def raw_ray(nodes: Nodes, tmp: Path, script: str, n: int) -> list[Path]:
    port, env = free_port(), base_env()
    start = tool("ray", "ray.scripts.scripts") + ["start"]
    common = ["--node-ip-address", "127.0.0.1", "--block", "--disable-usage-stats"]
    logs = [tmp / "head.log"]
    nodes.start(start + ["--head", "--port", str(port)] + common + ray_isolation(tmp, 0, True), env, logs[0])
    deadline = time.monotonic() + HANG_GUARD
    # a worker's `ray start --address` needs the head up (its raylet registered: else, on a busy
    # machine, "The current node timed out during startup"): `ray start --head` says so
    while not (tcp_open(port) and "Ray runtime started" in logs[0].read_text(errors="replace")):
        if time.monotonic() > deadline or nodes.codes[0] is not None:
            raise SystemExit(f"ray head not up:\n{logs[0].read_text(errors='replace')[-2500:]}")
        time.sleep(0.05)
    for i in range(1, n + 1):
        logs.append(tmp / f"ray{i}.log")
        nodes.start(start + ["--address", f"127.0.0.1:{port}"] + common + ray_isolation(tmp, i, False), env, logs[-1])
    logs.append(tmp / "job.log")
    job = nodes.start([sys.executable, script, str(n + 1)], {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}, logs[-1])
    if not nodes.wait(HANG_GUARD, [job]):
        raise SystemExit("ray job still running")
    # the job is over: end every Ray node (ray stop --force, this cluster only): the `ray start`
    # groups, and Ray's daemons, which leave them (found by the run's token, as fsm_cluster's sweep does)
    for i in range(n + 1):
        try:
            os.killpg(nodes.procs[i].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in nodes.leftovers():
        if p.pid != nodes.procs[job].pid:
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - gone meanwhile
                pass
    return logs


def raw_tensorflow(nodes: Nodes, tmp: Path, script: str, n: int) -> list[Path]:
    import json

    workers = [f"127.0.0.1:{free_port()}" for _ in range(n + 1)]
    logs = []
    for i in range(n + 1):
        logs.append(tmp / f"tf{i}.log")
        config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        nodes.start([sys.executable, script], {**base_env(), "TF_CONFIG": config}, logs[-1])
    return logs


def raw_horovod(nodes: Nodes, tmp: Path, script: str, n: int) -> list[Path]:
    logs = [tmp / "horovodrun.log"]
    nodes.start(tool("horovodrun", "horovod.runner.launch") + [
        "-np", str(n + 1), "-H", f"localhost:{n + 1}", "--gloo", sys.executable, script], base_env(), logs[0])
    return logs


RAW = {"pytorch": raw_pytorch, "dask": raw_dask, "ray": raw_ray, "tensorflow": raw_tensorflow,
       "horovod": raw_horovod}


def cpu() -> float:
    """CPU seconds (user + system) of every child of this process waited for so far, and theirs."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def raw_run(engine: str, tmp: Path, script: str, n: int) -> dict:
    import shutil

    before = cpu()
    try:
        return {**_raw_run(engine, tmp, script, n), "cpu": cpu() - before}
    finally:
        while MADE:
            shutil.rmtree(MADE.pop(), ignore_errors=True)


def _raw_run(engine: str, tmp: Path, script: str, n: int) -> dict:
    with Nodes() as nodes:
        t0 = time.time()
        logs = RAW[engine](nodes, tmp, script, n)
        if not nodes.wait(HANG_GUARD):
            raise SystemExit(f"raw {engine} still running after {HANG_GUARD} s: {logs}")
        end = max(max(nodes.exits), gone(nodes))
        codes = nodes.codes if engine != "ray" else nodes.codes[-1:]  # Ray's nodes were killed at the end
        if any(codes):
            raise SystemExit(f"raw {engine} failed: exit codes {nodes.codes}\n"
                             + "\n".join(f"----- {p}\n{p.read_text(errors='replace')[-2500:]}" for p in logs))
        return phases(t0, end, bench_lines(*logs), engine, n, logs)


# -- fsm_cluster -----------------------------------------------------------------------------------
def fsm_run(engine: str, tmp: Path, script: str, n: int, env: dict[str, str]) -> dict:
    work, cid = tmp / "work", f"bench-{engine}"
    argv = [sys.executable, "-m", "fsm_cluster", "local", "--framework", engine, "--workers", str(n),
            "--no-progress", "--work-dir", str(work), "--cluster-id", cid]
    for k, v in env.items():
        argv += ["-e", f"{k}={v}"]
    argv += ["--", "python", script] + ([str(n + 1) if engine == "ray" else str(n)] if engine in ("dask", "ray") else [])
    out = tmp / "local.log"
    before = cpu()
    with Nodes() as nodes:
        t0 = time.time()
        nodes.start(argv, base_env(), out)
        if not nodes.wait(HANG_GUARD):
            raise SystemExit(f"fsm-cluster local ({engine}) still running after {HANG_GUARD} s")
        end = max(nodes.exits[0], gone(nodes))
        logs = sorted((work / cid / "logs").glob("*.log"))
        if nodes.codes[0] != 0:
            raise SystemExit(f"fsm-cluster local ({engine}) exit {nodes.codes[0]}\n"
                             + "\n".join(f"----- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in [out, *logs]))
    row = {**phases(t0, end, bench_lines(*logs), engine, n, [out, *logs]), "cpu": cpu() - before}
    entered: dict[tuple[str, str], float] = {}
    firsts = []
    for log in logs:
        entered.update(transitions(log))
        firsts.append(first_line(log))
    last = lambda state: max((t for (_, s), t in entered.items() if s == state), default=None)  # noqa: E731
    for name, when in (("nodes_up", max((f for f in firsts if f), default=None)), ("all_ready", last("ready")),
                       ("all_running", last("running")), ("main_complete", entered.get(("MAIN", "complete"))),
                       ("all_stopped", last("stopped"))):
        if when is not None:
            row[name] = when - t0
    return row


# -- the run ---------------------------------------------------------------------------------------
def med(values) -> float:
    return statistics.median(values)


def show(engine: str, pairs: list[tuple[dict, dict]]) -> dict:
    raw = [a["total"] for a, _ in pairs]
    fsm = [b["total"] for _, b in pairs]
    ratios = [b / a for a, b in zip(raw, fsm)]
    ratio = med(ratios)
    verdict = "pass" if ratio <= TARGET else "over"
    print(f"{engine:<11} raw {med(raw):6.2f} s ({min(raw):.2f}–{max(raw):.2f})   fsm {med(fsm):6.2f} s "
          f"({min(fsm):.2f}–{max(fsm):.2f})   pairs {' '.join(f'{r:.2f}×' for r in ratios)}   "
          f"median {ratio:.2f}× vs {TARGET}× target: {verdict}", flush=True)
    keys = [k for k in pairs[0][1] if k != "total"]
    print(f"{'':<11} phases (median s from launch; formed = last 'BENCH init', end = last done → all exited; "
          "cpu = CPU seconds of every process waited for, Ray's killed daemons not counted):")
    for k in ("formed", "work", "end", "cpu"):
        print(f"{'':<13}{k:<14} raw {med(a[k] for a, _ in pairs):6.2f}   fsm {med(b[k] for _, b in pairs):6.2f}")
    for k in keys:
        if k not in ("formed", "work", "end", "cpu") and all(k in b for _, b in pairs):
            print(f"{'':<13}{k:<14}            fsm {med(b[k] for _, b in pairs):6.2f}")
    r3 = lambda d: {k: round(v, 3) for k, v in d.items()}  # noqa: E731
    return {"engine": engine, "raw_median_s": round(med(raw), 3), "fsm_median_s": round(med(fsm), 3),
            "raw_spread_s": [round(min(raw), 3), round(max(raw), 3)],
            "fsm_spread_s": [round(min(fsm), 3), round(max(fsm), 3)],
            "ratios": [round(r, 3) for r in ratios], "median_ratio": round(ratio, 3), "target": TARGET,
            "verdict": verdict, "pairs": [{"raw": r3(a), "fsm": r3(b)} for a, b in pairs]}


def main(argv=None) -> int:
    def more(ap):
        ap.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
        ap.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable for every fsm_cluster node (default: the production heartbeat)")
        ap.add_argument("--keep", metavar="DIR", help="keep every run's logs below DIR (default: a temporary folder)")

    args, reps, out, results = cluster_bench("engines", __doc__, argv, more)
    env = {**PRODUCTION, **dict(kv.split("=", 1) for kv in args.env)}
    results.update({"settings": env, "target": TARGET, "command": " ".join(sys.argv)})
    with tempfile.TemporaryDirectory(prefix="fsm-engines-") as tmpdir:
        root = Path(args.keep or tmpdir)
        root.mkdir(parents=True, exist_ok=True)
        for engine in args.engines:
            if engine == "horovod":
                why = horovod_missing()
                if why:
                    print(f"{'horovod':<11} skipped: `import horovod.torch` fails in {sys.executable}: {why}")
                    results["rows"].append({"engine": engine, "skipped": why})
                    continue
            script = root / f"{engine}_job.py"
            script.write_text(SCRIPTS[engine])
            pairs = []
            for rep in range(reps):
                a = raw_run(engine, Path(tempfile.mkdtemp(dir=root, prefix=f"{engine}-raw{rep}-")), str(script), args.n)
                b = fsm_run(engine, Path(tempfile.mkdtemp(dir=root, prefix=f"{engine}-fsm{rep}-")), str(script),
                            args.n, env)
                print(f"  {engine} pair {rep + 1}/{reps}: raw {a['total']:.2f} s, fsm {b['total']:.2f} s "
                      f"({b['total'] / a['total']:.2f}×); load {os.getloadavg()[0]:.1f}", flush=True)
                pairs.append((a, b))
            results["rows"].append(show(engine, pairs))
    write_results(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
