"""The control channel (issue 14): what it costs to import and how fast it tells.

* import: ``python -X importtime -c 'import fsm_cluster.wire.channel'`` alone, and what it adds after
  the node bootstrap's imports (``benchmarks/imports.py``'s "node bootstrap"), median of ``--reps``;
* connect: connect + authenticate + register, from ``connect()`` in this process to MAIN's
  ``on_register`` in a ``serve`` process (sequential, ``--connects`` times): latency and connections
  per second; the ping round trip;
* concurrent: ``--concurrent`` clients (threads here) connect at once → MAIN's last ``on_register``;
* roster push: MAIN (a ``serve`` process) broadcasts a roster of N+1 entries to N clients spread
  over client processes: broadcast → last client's ``on_roster`` (and the median client);
* kill -9: a WORKER process SIGKILLed → MAIN's ``on_lost``; MAIN SIGKILLed → a WORKER's
  ``on_lost``, at the production ping settings (interval 10 s, timeout 60 s: the connection tells,
  not the pings).

Every time is ``time.monotonic()`` stamped in the process where the event happens (one clock per
machine). Writes benchmarks/results/channel.json.

    python benchmarks/channel_bench.py                 # N = 8 and 100
    python benchmarks/channel_bench.py --quick         # a smoke run
"""

from __future__ import annotations

import argparse
import secrets
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.channel_peers import Peer  # noqa: E402
from benchmarks.common import RESULTS, machine, write_results  # noqa: E402
from benchmarks.imports import TARGETS, importtime  # noqa: E402

from fsm_cluster.wire.channel import ChannelClient, Register

PRODUCTION = ["--ping-interval", "10", "--timeout", "60"]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def channel_import(reps: int) -> dict:
    alone, added = [], []
    for _ in range(reps):
        rows = importtime("import fsm_cluster.wire.channel")
        alone.append(next(c for n, _, c, _ in rows if n == "fsm_cluster.wire.channel") / 1e6)
        rows = importtime(TARGETS["node bootstrap"] + "; import fsm_cluster.wire.channel")
        added.append(next(c for n, _, c, _ in rows if n == "fsm_cluster.wire.channel") / 1e6)
    return {"alone_ms": ms(statistics.median(alone)), "after_bootstrap_ms": ms(statistics.median(added))}


def connects(secret: bytes, n: int) -> dict:
    with Peer("serve", "--timeout", "60", secret=secret) as main:
        where = main.wait("listening")
        latencies, rtts = [], []
        start = time.monotonic()
        for i in range(n):
            hello = Register(node=f"WORKER_c{i}", mode="WORKER", run_id=f"c{i}", ip="127.0.0.1")
            client = ChannelClient(where["host"], where["port"], secret, hello, ping_interval=10, timeout=60)
            t0 = time.monotonic()
            client.connect()
            latencies.append(main.wait("register")["t"] - t0)
            deadline = time.monotonic() + 5
            while client.rtt is None and time.monotonic() < deadline:  # the first ping goes at once
                time.sleep(0.0005)
            if client.rtt is not None:
                rtts.append(client.rtt)
            client.close()
        took = time.monotonic() - start
    return {"n": n, "latency_median_ms": ms(statistics.median(latencies)),
            "latency_p90_ms": ms(sorted(latencies)[int(0.9 * (n - 1))]),
            "ping_rtt_median_ms": ms(statistics.median(rtts)) if rtts else None,
            "sequential_per_s": round(n / took, 1)}


def concurrent(secret: bytes, n: int) -> dict:
    """``n`` clients (threads of this process) connect at once: → MAIN's last ``on_register``."""
    with Peer("serve", "--timeout", "60", secret=secret) as main:
        where = main.wait("listening")
        clients = [ChannelClient(where["host"], where["port"], secret,
                                 Register(node=f"WORKER_k{i}", mode="WORKER", run_id=f"k{i}", ip="127.0.0.1"),
                                 ping_interval=10, timeout=60, connect_timeout=30) for i in range(n)]
        barrier = threading.Barrier(n + 1)
        threads = [threading.Thread(target=lambda c=c: (barrier.wait(), c.connect())) for c in clients]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.monotonic()
        last = max(main.wait("register", timeout=120)["t"] for _ in range(n))
        for t in threads:
            t.join()
        for c in clients:
            c.close()
    return {"n": n, "all_registered_ms": ms(last - start), "per_s": round(n / (last - start), 1)}


def roster_push(secret: bytes, n: int, processes: int, reps: int) -> dict:
    with Peer("serve", "--timeout", "60", secret=secret) as main:
        where = main.wait("listening")
        processes = min(n, processes)
        groups = [n // processes + (1 if g < n % processes else 0) for g in range(processes)]
        clients = [Peer("connect", where["host"], str(where["port"]), "--node", f"WORKER_g{g}", "--count", str(k),
                        *PRODUCTION, secret=secret) for g, k in enumerate(groups)]
        try:
            for _ in range(n):
                main.wait("register", timeout=120)
            entries = [{"node": "MAIN", "mode": "MAIN", "run_id": "main", "rank": 0, "ip": "10.0.0.1"}] + [
                {"node": f"WORKER_{i}", "mode": "WORKER", "run_id": str(i), "rank": i + 1, "ip": f"10.0.{i // 250}.{i % 250}"}
                for i in range(n)]
            last, median = [], []
            for rep in range(reps):
                main.send({"type": "roster", "life": f"r{rep}", "entries": entries})
                sent = main.wait("sent")["at"]
                arrivals = [c.wait("roster")["t"] - sent for c, k in zip(clients, groups) for _ in range(k)]
                last.append(max(arrivals))
                median.append(statistics.median(arrivals))
        finally:
            for c in clients:
                c.stop()
    return {"n": n, "client_processes": len(groups), "last_median_ms": ms(statistics.median(last)),
            "last_max_ms": ms(max(last)), "median_client_ms": ms(statistics.median(median)), "reps": reps}


def kill_detection(secret: bytes, reps: int) -> dict:
    worker_killed, main_killed = [], []

    def kill_once(main: Peer, where: dict, node: str, kill_main: bool) -> float:
        """A WORKER joins ``main``; one of the two is SIGKILLed: → the other's ``on_lost`` (s)."""
        with Peer("connect", where["host"], str(where["port"]), "--node", node, *PRODUCTION, secret=secret) as worker:
            worker.wait("connected")
            main.wait("register")
            victim, witness = (main, worker) if kill_main else (worker, main)
            killed = victim.signal(signal.SIGKILL)
            return witness.wait("lost")["t"] - killed

    for _ in range(reps):
        with Peer("serve", *PRODUCTION[2:], secret=secret) as main:
            where = main.wait("listening")
            worker_killed.append(kill_once(main, where, "WORKER_v", kill_main=False))
            main_killed.append(kill_once(main, where, "WORKER_w", kill_main=True))
    return {"reps": reps, "worker_sigkill_to_main_on_lost_median_ms": ms(statistics.median(worker_killed)),
            "worker_sigkill_max_ms": ms(max(worker_killed)),
            "main_sigkill_to_worker_on_lost_median_ms": ms(statistics.median(main_killed)),
            "main_sigkill_max_ms": ms(max(main_killed))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    ap.add_argument("-n", type=int, nargs="+", default=[8, 100], help="clients for the roster push")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--connects", type=int, default=200)
    ap.add_argument("--processes", type=int, default=10, help="client processes at most (roster push)")
    ap.add_argument("--concurrent", type=int, default=200, help="clients connecting at once")
    ap.add_argument("--out", default=str(RESULTS / "channel.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.reps, args.connects, args.concurrent = [8], 2, 20, 20
        args.out = str(RESULTS / "tmp" / "channel.json")
    secret = secrets.token_hex(32).encode()
    out: dict = {"benchmark": "channel", "machine": machine()}

    out["import"] = channel_import(max(3, args.reps))
    print(f"import fsm_cluster.wire.channel: {out['import']['alone_ms']} ms alone, "
          f"{out['import']['after_bootstrap_ms']} ms added after the node bootstrap's imports")
    out["connect"] = connects(secret, args.connects)
    c = out["connect"]
    print(f"connect+auth+register → MAIN's on_register: median {c['latency_median_ms']} ms, p90 "
          f"{c['latency_p90_ms']} ms; {c['sequential_per_s']} connections/s sequential "
          f"(with bye); ping round trip {c['ping_rtt_median_ms']} ms")
    out["concurrent"] = concurrent(secret, args.concurrent)
    print(f"{args.concurrent} clients connecting at once (threads of one process) → all registered: "
          f"{out['concurrent']['all_registered_ms']} ms ({out['concurrent']['per_s']}/s)")
    out["roster"] = []
    for n in args.n:
        r = roster_push(secret, n, args.processes, args.reps)
        out["roster"].append(r)
        print(f"roster push to {n} clients ({r['client_processes']} processes): last client after "
              f"{r['last_median_ms']} ms (median of {r['reps']}, worst {r['last_max_ms']} ms), median client "
              f"{r['median_client_ms']} ms")
    out["kill"] = kill_detection(secret, args.reps)
    k = out["kill"]
    print(f"kill -9 of a WORKER → MAIN's on_lost: median {k['worker_sigkill_to_main_on_lost_median_ms']} ms "
          f"(worst {k['worker_sigkill_max_ms']}); of MAIN → a WORKER's on_lost: median "
          f"{k['main_sigkill_to_worker_on_lost_median_ms']} ms (worst {k['main_sigkill_max_ms']}); "
          f"ping interval 10 s, timeout 60 s")
    write_results(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
