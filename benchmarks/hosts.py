"""Issue 23, item 6: the production-default figures with every node on a host of its own, beside
the same figures with every node on this one host, in one run.

Every node is a real ``fsm-cluster run`` process (tests/multihost/cluster.py's ``HostCluster``)
at fsm_cluster's production defaults (OCI__HEARTBEAT_INTERVAL=10, OCI__HEARTBEAT_TIMEOUT=60; the
control channel on, a cluster secret as the launchers give), 1 MAIN + ``-n`` WORKERs (default 2):

* **one host**: every node on this machine's loopback (OCI__SELF_IP=127.0.0.1), as the other
  benchmarks run them;
* **three hosts**: node ``i`` on host ``i``, a network namespace of its own
  (fsm_cluster.launch.hosts, as ``fsm-cluster local --hosts``: its own address, a first interface
  that reaches nothing, its own TMPDIR; the work dir shared), no OCI__SELF_IP: each node finds
  the address its peers reach. Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN) and ``ip``.

The two are run in turn within each repetition. Figures (wall clock, one clock: this process's
``time.time()``, the nodes' log stamps and the trivial entry script's end marks; medians over the
repetitions):

(a) whole life, launch → every node exited, per built-in engine: the trivial COMMAND cluster
    (code on MAIN, ``--reps``) and each installed engine's example as tests/multihost runs it
    (Dask, PyTorch, Ray, TensorFlow, Horovod when ``import horovod.torch`` works, on three hosts with
    an sshd on every host as tests/multihost/sshd.py runs them, when OpenSSH is installed;
    ``--engine-reps``);
    also MAIN's ``-> stopped`` → MAIN's exit;
(b) the trivial cluster with OCI__RUN_ON=all: the last entry script ended → every node exited
    (target ≤ 1 s), and its whole life;
(c) faults during a long job (every node running, MAIN's code started): kill -9 of a WORKER's
    bootstrap → every other node exited; a WORKER's network cut while its process lives (three
    hosts: its bridge port down; one host, which has no network to cut: SIGSTOP of its bootstrap,
    its connection staying open) → every node exited (one host: every other node), and whether the
    stop marker and every node's last line name that worker, never MAIN (``--cut-reps``, default 1:
    each takes the heartbeat timeout).

A failed life (a node's exit code, a wrong outcome or culprit) is reported in the table and its
logs are kept under results/tmp/hosts-logs/. Every namespace made is deleted at the end, also on
an error or Ctrl-C / SIGTERM.

    sudo .venv/bin/python benchmarks/hosts.py             # ~10 min on 2 cores
    sudo .venv/bin/python benchmarks/hosts.py --quick     # 1 repetition of each → results/tmp/hosts.json

Writes benchmarks/results/hosts.json (``--out``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from benchmarks.common import HANG_GUARD, RESULTS, cluster_bench, write_results
from benchmarks.formation import transitions
from fsm_cluster.launch.hosts import Hosts
from tests.multihost.cluster import (
    ENGINES,
    PRODUCTION,
    HostCluster,
    engine_missing,
    reason_of,
    this_host,
)
from tests.multihost.sshd import SshServers, sshd_missing

ONE, THREE = "1 host", "3 hosts"
PREFIX = "fsmbench"  # the namespaces: fsmbench-<pid>-<random>-<sw|h<i>>
LOGS = RESULTS / "tmp" / "hosts-logs"
VICTIM = 2  # the WORKER killed or cut off (rank)
_lives = itertools.count()


def options(ap) -> None:
    ap.add_argument("--engine-reps", type=int, default=1, help="repetitions of each engine's life (default 1)")
    ap.add_argument("--cut-reps", type=int, default=1, help="repetitions of the cut/SIGSTOP case (default 1)")
    ap.add_argument("--engines", nargs="*", default=[k for k in ENGINES], help="engines to run (default: all)")
    ap.add_argument("--no-cut", action="store_true", help="leave out the cut/SIGSTOP case")
    ap.add_argument("--keep-logs", action="store_true", help=f"keep every life's logs under {LOGS} (default: failed ones)")


# -- one life ------------------------------------------------------------------------------------
class Life:
    """One cluster on ``hosts`` (``where``: ONE or THREE), its figures, its verdict."""

    keep = False  # every life's logs kept (--keep-logs), not only a failed one's

    def __init__(self, where: str, hosts, tmp: Path, workers: int, **kw):
        self.where, self.hosts = where, hosts
        self.c = HostCluster(tmp / f"life{next(_lives)}", hosts, workers=workers, self_ip=where == ONE, **kw)
        self.problems: list[str] = []

    def start(self) -> HostCluster:
        self.t0 = time.time()
        return self.c.start()

    def exited(self, ranks=None) -> bool:
        """Until the nodes of ``ranks`` (default all) exited (True) or the hang guard (False)."""
        nodes = [n for n in self.c.nodes if ranks is None or n.rank in ranks]
        deadline = time.monotonic() + HANG_GUARD
        while any(n.exited is None for n in nodes):
            if time.monotonic() > deadline:
                self.problems.append(f"still running after {HANG_GUARD} s: {[n.node_id for n in nodes if n.exited is None]}")
                return False
            time.sleep(0.01)
        return True

    def last_exit(self, ranks=None) -> float:
        return max(n.exited for n in self.c.nodes if ranks is None or n.rank in ranks)

    def entered(self, rank: int, state: str) -> float | None:
        n = self.c.nodes[rank]
        return transitions(n.log).get((n.node_id, state))

    def completed(self) -> dict:
        """The life's figures when every node exited 0 and MAIN wrote 'complete'."""
        if not self.exited():
            return {}
        codes = [n.code for n in self.c.nodes]
        marker = self.c.stop_marker() or {}
        if codes != [0] * len(codes) or marker.get("outcome") != "complete":
            self.problems.append(f"exit codes {codes}, outcome {marker.get('outcome')}: {marker.get('reason')}")
        out = {"whole_life": self.last_exit() - self.t0}
        stopped, complete = self.entered(0, "stopped"), self.entered(0, "complete")
        if stopped is not None:
            out["main_stopped_to_exit"] = self.c.nodes[0].exited - stopped
        if complete is not None:
            out["main_complete_to_all_exited"] = self.last_exit() - complete
        return out

    def fault(self, what: str) -> dict:
        """During a long job, kill -9 or cut off (SIGSTOP on one host) node VICTIM; → the others exited."""
        c, victim = self.c, self.c.nodes[VICTIM]
        c.until_running()
        time.sleep(1.0)  # the job is under way
        others = [n.rank for n in c.nodes if n.rank != VICTIM]
        t = time.time()
        if what == "kill9":
            c.kill9(VICTIM)
        elif self.where == THREE:
            self.hosts.cut(VICTIM)
        else:
            os.kill(victim.proc.pid, signal.SIGSTOP)
        try:
            waited = others if what == "cut" and self.where == ONE else None  # a frozen node never exits
            if not self.exited(waited):
                return {}
        finally:
            if what == "cut" and self.where == THREE:
                self.hosts.heal(VICTIM)
        out = {"others_exited": self.last_exit(others) - t}
        if what == "cut" and self.where == THREE:
            out["all_exited"] = self.last_exit() - t
        marker = c.stop_marker() or {}
        cut_off = what == "cut" and self.where == THREE  # its own last line must name itself too
        said = [(n.node_id, reason_of(n.last_line())) for n in c.nodes if n.rank in others or cut_off]
        named = (marker.get("outcome") == "failed" and victim.node_id in marker.get("reason", "")
                 and all(victim.node_id in r and "MAIN: lost" not in r for _, r in said))
        out["culprit_named"] = named
        if not named:
            self.problems.append(f"culprit not named: stop marker by {marker.get('node')}: {marker.get('reason')}; "
                                 f"last lines: {said}")
        return out

    def end(self, figures: dict) -> dict:
        """Kill what is left, count the logs' tracebacks and warnings, keep the logs of a failed life."""
        self.c.close()
        if self.where == THREE:
            self.hosts.clear()
        logs = [n.log.read_text(errors="replace") for n in self.c.nodes]
        figures = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
        figures.update(tracebacks=sum(t.count("Traceback (most recent call last)") for t in logs),
                       warnings=sum(t.count(" WARNING ") for t in logs), problems=self.problems)
        if self.problems or self.keep:
            kept = LOGS / self.c.tmp.name
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(self.c.tmp, kept, ignore=shutil.ignore_patterns("wd"))
            figures["logs"] = str(kept)
        return figures


# -- the cases -----------------------------------------------------------------------------------
def trivial(where, hosts, tmp, n, **env) -> dict:
    life = Life(where, hosts, tmp, n, env={"RUN_FOR": 0, **env})
    life.start()
    out = life.completed()
    ranks = range(n + 1) if env.get("OCI__RUN_ON") == "all" else [0]
    ended = [life.c.code_ended(r) for r in ranks]
    if out and None not in ended:
        out["code_ended_to_all_exited"] = life.last_exit() - max(ended)
    return life.end(out)


def engine(where, hosts, tmp, n, cluster_type) -> dict:
    if cluster_type == "HOROVOD" and where == THREE:
        return horovod_three_hosts(hosts, tmp, n)
    life = Life(where, hosts, tmp, n, cluster_type=cluster_type)
    life.c.example(life.c.tmp / "out")
    life.start()
    return life.end(life.completed())


def horovod_three_hosts(hosts, tmp, n) -> dict:
    """Horovod's example on three hosts: horovodrun on MAIN reaches the other hosts' ranks over SSH,
    an sshd on every host (tests/multihost/sshd.py, as in the test), the nodes on its hosts (each
    with a hostname of its own). The sshds' start is not part of the life."""
    servers = SshServers(hosts, tmp / f"sshd{next(_lives)}")
    life = Life(THREE, hosts, tmp, n, cluster_type="HOROVOD", env=servers.env())
    life.c.hosts = servers.hosts
    try:
        servers.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        life.problems.append(f"the hosts' sshds did not start: {e}")
        return life.end({})
    try:
        life.c.example(life.c.tmp / "out")
        life.start()
        return life.end(life.completed())
    finally:
        servers.close()


def fault(where, hosts, tmp, n, what) -> dict:
    life = Life(where, hosts, tmp, n, env={"RUN_FOR": 3600})
    life.start()
    try:
        out = life.fault(what)
    except AssertionError as e:  # never all running (HostCluster.until)
        life.problems.append(str(e)[:2000])
        out = {}
    return life.end(out)


NAMES = {"DASK": "Dask", "PYTORCH": "PyTorch", "RAY": "Ray", "TENSORFLOW": "TensorFlow", "HOROVOD": "Horovod"}
CASES = [  # (key, what it measures, the figure shown, bound: issue 23's, else issue 14's)
    ("trivial", "whole life, trivial 1+N (code on MAIN)", "whole_life", None),
    *[(e.lower(), f"whole life, {NAMES[e]} 1+N", "whole_life", None) for e in ENGINES],
    ("run_on_all", "trivial 1+N, OCI__RUN_ON=all: last code ended → every node exited", "code_ended_to_all_exited", 1.0),
    ("run_on_all", "trivial 1+N, OCI__RUN_ON=all: whole life", "whole_life", None),
    ("kill9", "kill -9 of a WORKER's bootstrap → every other node exited", "others_exited", 2.0),
    ("cut", "a WORKER cut off (1 host: SIGSTOP) → every node exited (1 host: every other)", None, 70.0),
]


def run(args, reps: int, tmp: Path, hosts: Hosts, results: dict) -> None:
    both = [(ONE, this_host(args.n + 1)), (THREE, hosts)]
    got = results["cases"]

    def measure(key: str, times: int, fn, *a, layouts=None, **kw) -> None:
        for _ in range(times):
            for where, h in layouts or both:
                fig = fn(where, h, tmp, args.n, *a, **kw)
                got.setdefault(key, {}).setdefault(where, []).append(fig)
                print(f"  {key:<11} {where:<8} " + ", ".join(
                    f"{k} {v}" for k, v in fig.items() if v not in ([], None)), flush=True)

    measure("trivial", reps, trivial)
    measure("run_on_all", reps, trivial, OCI__RUN_ON="all")
    for e in args.engines:
        missing = engine_missing(e)
        if missing:
            results["skipped"][e.lower()] = missing
            print(f"  {e.lower():<11} skipped: {missing}", flush=True)
            continue
        no_ssh = sshd_missing() if e == "HOROVOD" else None  # horovodrun reaches other hosts over SSH
        if no_ssh:
            results["skipped"]["horovod_three_hosts"] = no_ssh
            print(f"  horovod     {THREE}: not run: {no_ssh}", flush=True)
        measure(e.lower(), args.engine_reps, engine, e, layouts=both[:1] if no_ssh else None)
    measure("kill9", reps, fault, "kill9")
    if not args.no_cut:
        measure("cut", args.cut_reps, fault, "cut")


# -- the table -----------------------------------------------------------------------------------
def median(figs: list[dict], key: str) -> float | None:
    vals = [f[key] for f in figs if f.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def cell(figs: list[dict] | None, key: str | None, case: str, where: str) -> str:
    if not figs:
        return "not run: no sshd on the hosts" if case == "horovod" else "–"
    if case == "cut":
        key = "all_exited" if where == THREE else "others_exited"
    value = median(figs, key)
    text = "failed" if value is None else f"{value:.2f} s"
    notes = []
    if case in ("cut", "kill9"):
        notes.append("culprit named" if all(f.get("culprit_named") for f in figs) else "culprit NOT named")
    elif key == "whole_life" and median(figs, "main_stopped_to_exit") is not None:
        notes.append(f"MAIN stopped → exit {median(figs, 'main_stopped_to_exit'):.2f} s")
    failed = sum(bool(f["problems"]) for f in figs)
    if failed:
        notes.append(f"{failed} of {len(figs)} failed")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def table(results: dict) -> list[str]:
    n = results["workers"]
    lines = [f"| case (1 MAIN + {n} WORKERs, heartbeat 10 s / 60 s) | bound | {ONE} | {THREE} | runs |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for case, what, key, bound in CASES:
        got = results["cases"].get(case)
        if got is None:
            if case in results["skipped"]:
                lines.append(f"| {what.replace('N', str(n))} | | not run: {results['skipped'][case]} | | |")
            continue
        runs = len(got.get(THREE, []))
        lines.append(f"| {what.replace('1+N', f'1+{n}')} | {f'≤ {bound:g} s' if bound else ''} | "
                     f"{cell(got.get(ONE), key, case, ONE)} | {cell(got.get(THREE), key, case, THREE)} | {runs} |")
    return lines


def main(argv=None) -> int:
    args, reps, out, results = cluster_bench("hosts", __doc__, argv, more=options)
    if args.quick:
        args.engine_reps = args.cut_reps = 1
    results.update(settings=PRODUCTION, cases={}, skipped={})
    Life.keep = args.keep_logs

    def terminated(signum, frame):  # the namespaces are deleted on the way out
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    print(f"1 MAIN + {args.n} WORKERs at production defaults, one host and three hosts in turn")
    with tempfile.TemporaryDirectory(prefix="fsmb-") as tmpdir, Hosts.create(args.n + 1, prefix=PREFIX) as hosts:
        run(args, reps, Path(tmpdir), hosts, results)
    lines = table(results)
    print("\n".join(lines))
    results["table"] = lines
    write_results(out, results)
    failed = [k for k, by in results["cases"].items() for figs in by.values() for f in figs if f["problems"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
