"""What every benchmark writes with its results: the machine and its load, as JSON."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil

RESULTS = Path(__file__).parent / "results"
HANG_GUARD = 300  # s: a cluster still running then is a failure (a guard, never a measurement)


def machine(**extra) -> dict:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load_avg": os.getloadavg(), **extra}


def cluster_bench(name: str, doc: str, argv=None, more=None):
    """The command line every node-cluster benchmark shares (``-n`` WORKERs, ``--reps``, ``--quick``
    for 1 repetition written under results/tmp, ``--out``; ``more(parser)`` adds its own): returns
    (args, repetitions, output path, the results dict to fill)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2, help="WORKERs (default 2)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help=f"1 repetition, results/tmp/{name}.json")
    ap.add_argument("--out", default=None)
    if more is not None:
        more(ap)
    args = ap.parse_args(argv)
    reps = 1 if args.quick else args.reps
    out = Path(args.out or (RESULTS / ("tmp" if args.quick else "") / f"{name}.json"))
    return args, reps, out, {"benchmark": name, "workers": args.n, "reps": reps, "machine_before": machine(),
                             "rows": []}


def write_results(path: str | Path, data: dict) -> None:
    """Write ``data`` (with the load at the end of the run added) as pretty JSON; say where."""
    data.setdefault("machine", machine())["load_avg_after"] = os.getloadavg()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")


class Nodes:
    """Benchmark processes, each in its own session and carrying a token in its environment.

    ``start`` launches one (stdout and stderr to a log) and a thread that stamps its exit (wall
    time, ``time.time()``, the clock of the nodes' log lines). ``close`` — also on error, as a
    context manager — kills every process group left and then every process that still carries the
    token (a node's children lead their own groups), so nothing outlives the measurement.
    """

    TOKEN = "FSM_BENCH_TOKEN"

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.procs: list = []
        self.started: list[float] = []
        self.exits: list[float | None] = []
        self.codes: list[int | None] = []
        self._threads: list = []

    def start(self, argv: list[str], env: dict, log: str | Path) -> int:
        i = len(self.procs)
        self.exits.append(None)
        self.codes.append(None)
        self.started.append(time.time())
        with open(log, "wb") as out:
            p = subprocess.Popen(argv, env={**env, self.TOKEN: self.token}, stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)

        def wait() -> None:
            code = p.wait()
            self.exits[i] = time.time()
            self.codes[i] = code

        self._threads.append(threading.Thread(target=wait, daemon=True))
        self._threads[-1].start()
        return i

    def running(self, which=None) -> list[int]:
        return [i for i in (range(len(self.procs)) if which is None else which) if self.codes[i] is None]

    def wait(self, timeout: float, which=None) -> bool:
        """Until every process (of ``which``) exited (True) or ``timeout`` s passed (False)."""
        deadline = time.monotonic() + timeout
        while self.running(which):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        for i in range(len(self.procs)) if which is None else which:  # the exit stamp is written
            while self.exits[i] is None:
                time.sleep(0.001)
        return True

    def leftovers(self) -> list:
        """Live processes (other than this one) that carry this object's token."""
        me, out = os.getpid(), []
        for p in psutil.process_iter():
            try:
                if p.pid != me and p.environ().get(self.TOKEN) == self.token:
                    out.append(p)
            except (psutil.Error, OSError):
                continue
        return out

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
                os.killpg(p.pid, signal.SIGKILL)
        for p in self.leftovers():
            with contextlib.suppress(psutil.Error):  # gone meanwhile
                p.kill()
        for t in self._threads:
            t.join(timeout=10)

    def __enter__(self) -> Nodes:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
