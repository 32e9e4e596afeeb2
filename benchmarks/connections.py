"""Issue 26, item 5: a real MAIN node with 1,000 authenticated channel clients on loopback.

MAIN is a real ``fsm-cluster run`` process (COMMAND engine, production defaults
OCI__HEARTBEAT_INTERVAL=10 / OCI__HEARTBEAT_TIMEOUT=60, OCI__WORKER_COUNT=N-1 … so that its roster
has ``-n`` nodes in all, a cluster secret). Its WORKERs are ``python -m fsm_cluster.wire.channel connect``
processes (``--processes`` of them, channel_peers.Peer), each holding its share of real
ChannelClients (HMAC handshake, register, pings every 10 s); this process writes each WORKER's
registration (``WORKER_<x>_config.json``, signed) as the node would. The last WORKER registers last
and joins last: its join wakes MAIN's registration wait (formation on events), MAIN writes its
configuration and pushes the roster to every client. Then MAIN's code (``sleep --hold``) ends and
MAIN's outcome goes to every client too, and MAIN says bye to all.

Measured (``time.monotonic()`` in the process where each thing happens, the nodes' log stamps
converted; one clock per machine):

* the roster push: MAIN's ``writing MAIN_config.json`` → each client's frame arrived (``rx``:
  authenticated, before it is parsed) and parsed (its ``on_roster``), the last and the median —
  target: the last arrival within 1 s. Every client parses its own copy (a 1,001-entry roster,
  ~94 KB), here N of them on the machine's few cores, on a real cluster each on its own host;
* the outcome: MAIN's ``wrote stop marker`` → each client's ``on_outcome``;
* MAIN's memory (RSS, psutil) and open descriptors before any client, with every client, and
  after the push: per connection; its soft limit of open files (``/proc/<pid>/limits``), MAIN
  being started under ``--soft-limit`` (1024, the common default; prlimit).

    python benchmarks/connections.py                    # 1,000 nodes, 4 client processes
    python benchmarks/connections.py -n 200 --processes 2

Writes benchmarks/results/connections.json (``--out``).
"""

from __future__ import annotations

import argparse
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import formation  # noqa: E402
from benchmarks.channel_bench import PRODUCTION as CLIENT_PRODUCTION  # noqa: E402
from benchmarks.channel_peers import Peer  # noqa: E402
from benchmarks.common import RESULTS, Nodes, machine, write_results  # noqa: E402
from benchmarks.production import PRODUCTION  # noqa: E402

from fsm_cluster.wire.control import CHANNEL_KEY
from fsm_cluster.wire.models import NodeConfig
from fsm_cluster.wire.workdir import WorkDir

CLUSTER = "bench"  # JOB_OCID of formation.node_env: the cluster dir under the work dir
OFFSET = time.time() - time.monotonic()  # wall → monotonic (one machine)


def logged(log: Path, text: str) -> float | None:
    """time.monotonic() of MAIN's first log line holding ``text`` (None: not yet)."""
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if text in line:
            m = formation.STAMP.match(line)
            if m:
                return formation.stamp(m.group(1)) - OFFSET
    return None


def until(what: str, check, guard: float, nodes: Nodes, log: Path):
    deadline = time.monotonic() + guard
    while not (found := check()):
        if time.monotonic() > deadline or nodes.running() != [0]:
            raise SystemExit(f"{what}: not reached (MAIN {'exited ' + str(nodes.codes[0]) if nodes.codes[0] is not None else 'running'})"
                             f":\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    return found


def usage(pid: int) -> dict:
    p = psutil.Process(pid)
    soft = next((int(line.split()[3]) for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                 if line.startswith("Max open files")), None)
    return {"rss_mib": round(p.memory_info().rss / 2**20, 2), "fds": p.num_fds(), "soft_nofile": soft}


def register(wd: WorkDir, node: str) -> None:
    """A WORKER's registration, as the node writes it (it will join the channel)."""
    wd.write(f"{node}_config.json", NodeConfig(node=node, mode="WORKER", run_id=node.split("_", 1)[1], ip="127.0.0.1",
                                               host="bench", extra={CHANNEL_KEY: True}))


def ms(s: float) -> float:
    return round(s * 1000, 1)


def spread(times: list[float], since: float) -> dict:
    d = [t - since for t in times]
    return {"last_ms": ms(max(d)), "median_ms": ms(statistics.median(d)), "first_ms": ms(min(d))}


def under_soft_limit(argv: list[str], soft: int) -> list[str]:
    """``argv`` started with a soft limit of open files of ``soft`` (prlimit; 0 or none: as is)."""
    import resource
    import shutil

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if not soft or shutil.which("prlimit") is None:
        return argv
    return ["prlimit", f"--nofile={soft}:{'unlimited' if hard == resource.RLIM_INFINITY else hard}", "--", *argv]


def run(n: int, processes: int, hold: float, tmp: Path, soft: int = 0) -> dict:
    secret = secrets.token_hex(32)
    work = tempfile.mkdtemp(dir=tmp)
    wd = WorkDir(work, CLUSTER, secret=secret)
    entry = tmp / "hold.sh"
    entry.write_text(f"#!/bin/sh\nsleep {hold}\n")
    entry.chmod(0o755)
    clients = n - 1
    groups = [clients // processes + (1 if g < clients % processes else 0) for g in range(processes)]
    groups[-1] -= 1  # the last WORKER joins on its own, last
    names = [f"WORKER_g{g}-{i}" if k > 1 else f"WORKER_g{g}" for g, k in enumerate(groups) for i in range(k)]
    for node in names:
        register(wd, node)
    env = formation.node_env(work, "MAIN", 0, clients, str(entry), base={},
                             overrides={**PRODUCTION, "OCI__CLUSTER_SECRET": secret, "OCI__TIMEOUT": "600"})
    log = Path(work) / "main.log"
    peers: list[Peer] = []
    out: dict = {"nodes": n, "client_processes": processes + 1}
    with Nodes() as nodes:
        nodes.start(under_soft_limit([sys.executable, "-m", "fsm_cluster", "run"], soft), env, log)
        try:
            main = until("MAIN's channel", lambda: (st := wd.read_state("MAIN")) and st.control, 60, nodes, log)
            host, port = main.rsplit(":", 1)
            time.sleep(0.5)
            out["main_before"] = usage(nodes.procs[0].pid)
            t0 = time.monotonic()
            for g, k in enumerate(groups):
                peers.append(Peer("connect", host, port, "--node", f"WORKER_g{g}", "--count", str(k),
                                  *CLIENT_PRODUCTION, secret=secret.encode()))
            for p, k in zip(peers, groups):
                for _ in range(k):
                    p.wait("connected", timeout=300)
            until("every client joined", lambda: logged(log, f"({sum(groups)} joined)"), 120, nodes, log)
            out["connect_all_s"] = round(time.monotonic() - t0, 2)
            time.sleep(0.5)
            out["main_connected"] = usage(nodes.procs[0].pid)
            last = "WORKER_last"
            register(wd, last)
            peers.append(Peer("connect", host, port, "--node", last, *CLIENT_PRODUCTION, secret=secret.encode()))
            rosters = [p.wait("roster", timeout=120) for p, k in zip(peers, groups + [1]) for _ in range(k)]
            pushed = logged(log, "writing MAIN_config.json")
            joined = logged(log, f"{last} joined")
            out["main_pushed"] = usage(nodes.procs[0].pid)
            out["roster_entries"] = rosters[0]["entries"]
            out["last_join_to_push_ms"] = ms(pushed - joined)
            out["roster_arrived"] = spread([r["rx"] for r in rosters], pushed)
            out["roster_parsed"] = spread([r["t"] for r in rosters], pushed)
            outcomes = [p.wait("outcome", timeout=hold + 120) for p, k in zip(peers, groups + [1]) for _ in range(k)]
            marked = logged(log, "wrote stop marker")
            out["outcome_arrived"] = spread([o["rx"] for o in outcomes], marked)
            out["outcome_parsed"] = spread([o["t"] for o in outcomes], marked)
            if not nodes.wait(120, which=[0]) or nodes.codes[0] != 0:
                raise SystemExit(f"MAIN did not complete: {nodes.codes[0]}\n{log.read_text()[-3000:]}")
        finally:
            for p in peers:
                p.stop()
    b, c = out["main_before"], out["main_connected"]
    out["per_connection"] = {"rss_kib": round((c["rss_mib"] - b["rss_mib"]) * 1024 / sum(groups), 1),
                             "fds": round((c["fds"] - b["fds"]) / sum(groups), 3)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="nodes in all: MAIN + n-1 WORKERs (default 1000)")
    ap.add_argument("--processes", type=int, default=4, help="client processes (default 4; +1 for the last WORKER)")
    ap.add_argument("--hold", type=float, default=3.0, help="s MAIN's code runs (default 3)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--soft-limit", type=int, default=1024,
                    help="MAIN starts with this soft limit of open files (prlimit; default 1024, the common "
                         "default; 0: this process's)")
    ap.add_argument("--bound", type=float, default=1.0, help="s: the roster reaches every client within (default 1)")
    ap.add_argument("--out", default=str(RESULTS / "connections.json"))
    args = ap.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for _ in range(args.reps):
            r = run(args.n, args.processes, args.hold, Path(tmpdir), args.soft_limit)
            runs.append(r)
            ra, rp, oa = r["roster_arrived"], r["roster_parsed"], r["outcome_arrived"]
            print(f"{args.n} nodes ({r['client_processes']} client processes; all joined in {r['connect_all_s']} s): "
                  f"last join → roster push {r['last_join_to_push_ms']} ms; push ({r['roster_entries']} entries) → "
                  f"arrived at the last client {ra['last_ms']} ms (median {ra['median_ms']}), parsed by the last "
                  f"{rp['last_ms']} ms (median {rp['median_ms']}); stop marker → outcome arrived at the last "
                  f"{oa['last_ms']} ms (median {oa['median_ms']})", flush=True)
            print(f"  MAIN: RSS {r['main_before']['rss_mib']} → {r['main_connected']['rss_mib']} MiB with every "
                  f"client → {r['main_pushed']['rss_mib']} after the push; fds {r['main_before']['fds']} → "
                  f"{r['main_connected']['fds']}; per connection {r['per_connection']['rss_kib']} KiB, "
                  f"{r['per_connection']['fds']} fd; soft limit of open files {args.soft_limit or '(inherited)'} at the start, "
                  f"{r['main_connected']['soft_nofile']} once serving")
    worst = max(r["roster_arrived"]["last_ms"] for r in runs) / 1000
    print(f"roster push reaches all {args.n - 1} clients within {args.bound:g} s: "
          f"{'PASS' if worst <= args.bound else 'FAIL'} (worst {worst:.3f} s)")
    write_results(args.out, {"benchmark": "connections", "settings": PRODUCTION, "nodes": args.n, "runs": runs,
                             "bound_s": args.bound, "machine": machine()})
    return 0 if worst <= args.bound else 1


if __name__ == "__main__":
    sys.exit(main())
