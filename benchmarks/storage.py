"""Storage cost: requests per node per phase, as real node processes, on file:// and on S3.

Each node is the real ``fsm-cluster run`` bootstrap with its filesystem wrapped in a counting
proxy (``count_node.CountingCommandProvider``): every fsspec call is recorded with the phase of
the node's life (formation = init … ready, steady = running/complete, teardown = after). On S3 the
work dir lives on moto's S3 server on loopback, started in this process behind a WSGI middleware
that also counts the HTTP requests themselves, per node (each node signs with its own access key)
and per phase (by the node's own transition times) — the unit a cloud provider bills.

Steady state: every node's entry script sleeps ``--steady`` seconds with heartbeats on (the local
launcher's defaults: OCI__HEARTBEAT_INTERVAL=0.2; ``-e NAME=VALUE`` overrides a node variable, e.g.
the production interval, or ``OCI__CONTROL=off``: the control channel is on by default in every
node process); requests per heartbeat interval are counted in a window of whole intervals inside
each node's steady phase (it starts half an interval after the node runs), so the steady phase
must last a few intervals. Also measured: how many HTTP requests one listing of a cluster dir costs as
the dir grows (S3 lists 1,000 keys per page).

    python benchmarks/storage.py                      # file and s3, N = 1 4 16 WORKERs
    python benchmarks/storage.py --backend file -n 4
    python benchmarks/storage.py --backend file -n 8 --steady 45 -e OCI__HEARTBEAT_INTERVAL=10 \
        -e OCI__HEARTBEAT_TIMEOUT=60        # production interval, channel on (3 intervals counted)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from benchmarks.common import HANG_GUARD, RESULTS, Nodes, machine, write_results  # noqa: E402
from benchmarks.counting import phase_of, spread  # noqa: E402
from fsm_cluster.launch.local import LOCAL_DEFAULTS

CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


class CountingS3Server:
    """moto's S3 server on 127.0.0.1 (in this process), logging every HTTP request:
    (wall time, access key, method, path, query)."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.requests: list[tuple[float, str, str, str, str]] = []
        server = self

        class Server(ThreadedMotoServer):
            def _server_entry(self) -> None:
                from moto.server import DomainDispatcherApplication, create_backend_app
                from werkzeug.serving import make_server

                app = DomainDispatcherApplication(create_backend_app)

                def counted(environ, start_response):
                    m = CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
                    server.requests.append((time.time(), m.group(1) if m else "-",
                                            environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                                            environ.get("QUERY_STRING", "")))
                    return app(environ, start_response)

                self._server = make_server(self._ip_address, self._port, counted, True)
                self._server_ready_event.set()
                self._server.serve_forever()

        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self._server = Server("127.0.0.1", 0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_SECRET_ACCESS_KEY": "bench-secret",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def make_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                     aws_access_key_id="admin", aws_secret_access_key="x").create_bucket(Bucket=name)

    def stop(self) -> None:
        self._server.stop()


def node_env(work_dir: str, mode: str, rank: int, workers: int, entry: str, count_dir: str,
             extra: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCI__", "JOB_", "AWS_"))}
    env.update(LOCAL_DEFAULTS)
    env.update(extra)
    env.update({"OCI__MODE": mode, "OCI__WORK_DIR": work_dir, "JOB_OCID": f"bench-{uuid.uuid4().hex[:6]}",
                "JOB_RUN_OCID": "main" if mode == "MAIN" else f"w{rank}", "RANK": str(rank),
                "OCI__WORKER_COUNT": str(workers), "OCI__SELF_IP": "127.0.0.1",
                "OCI__ENTRY_SCRIPT": entry, "BENCH_COUNT_DIR": count_dir,
                "OCI__CLUSTER_TYPE": "benchmarks.count_node:CountingCommandProvider",
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    if "AWS_ENDPOINT_URL" in extra:
        env["AWS_ACCESS_KEY_ID"] = f"node-{rank}"  # the server tells the nodes apart by key
    return env


def run_cluster(n: int, work_dir: str, entry: str, extra: dict, tmp: Path) -> list[dict]:
    """1 MAIN + n WORKERs; returns each node's record (calls, entered) from count_node."""
    count_dir = tempfile.mkdtemp(dir=tmp)
    cluster = f"bench-{uuid.uuid4().hex[:6]}"
    with Nodes() as nodes:
        for i in range(n + 1):
            env = node_env(work_dir, "MAIN" if i == 0 else "WORKER", i, n, entry, count_dir, extra)
            env["JOB_OCID"] = cluster
            nodes.start([sys.executable, "-m", "fsm_cluster", "run"], env, tmp / f"{cluster}-{i}.log")
        if not nodes.wait(HANG_GUARD):
            raise SystemExit(f"N={n}: cluster still running after {HANG_GUARD} s")
        codes = nodes.codes
    if any(codes):
        raise SystemExit(f"N={n}: cluster failed {codes}:\n" + (tmp / f"{cluster}-0.log").read_text()[-3000:])
    return [json.loads(p.read_text()) for p in sorted(Path(count_dir).glob("*.json"))]


def steady_window(node: dict, interval: float) -> tuple[float, float]:
    """Whole heartbeat intervals inside the node's steady phase (running → leaving it)."""
    e = node["entered"]
    start = e["running"] + interval / 2
    end = min(t for s, t in e.items() if s in ("tearable", "failed", "stopped"))
    k = max(0, int((end - start) // interval) - 1)
    return start, start + k * interval


def phase_at(node: dict, t: float) -> str:
    state = "init"
    for s, ts in sorted(node["entered"].items(), key=lambda kv: kv[1]):
        if ts <= t:
            state = s
    return phase_of(state)


def summarize(nodes: list[dict], server_requests: list | None) -> dict:
    interval = nodes[0]["interval"]
    http_by_key: dict[str, list[float]] = {}
    for t, key, *_ in server_requests or []:
        http_by_key.setdefault(key, []).append(t)
    per_node = []
    for node in nodes:
        calls = node["calls"]
        w0, w1 = steady_window(node, interval)
        k = round((w1 - w0) / interval)
        row = {"node": node["node"], "mode": node["mode"],
               "fsspec": {ph: dict(Counter(c["kind"] for c in calls if c["phase"] == ph))
                          for ph in ("formation", "steady", "teardown")},
               "steady_intervals": k,
               "steady_per_interval": round(sum(1 for c in calls if w0 <= c["t"] < w1) / k, 3) if k else None}
        if server_requests is not None:
            times = http_by_key.get(node["access_key"], [])
            row["http"] = dict(Counter(phase_at(node, t) for t in times))
            row["http_steady_per_interval"] = round(sum(1 for t in times if w0 <= t < w1) / k, 3) if k else None
        per_node.append(row)

    def totals(rows, phase, key="fsspec"):
        return [sum(r[key].get(phase, {}).values()) if key == "fsspec" else r[key].get(phase, 0) for r in rows]

    main = [r for r in per_node if r["mode"] == "MAIN"]
    workers = [r for r in per_node if r["mode"] != "MAIN"]
    out = {"interval_s": interval}
    for key in (("fsspec", "http") if server_requests is not None else ("fsspec",)):
        out[key] = {
            ph: {"workers": spread(totals(workers, ph, key)), "main": totals(main, ph, key)[0]}
            for ph in ("formation", "steady", "teardown")
        }
        rate = "steady_per_interval" if key == "fsspec" else "http_steady_per_interval"
        out[key]["steady_per_interval"] = {
            "workers": spread(r[rate] for r in workers if r[rate] is not None),
            "main": main[0][rate]}
    out["main_fsspec_by_phase"] = main[0]["fsspec"]
    out["worker_fsspec_by_phase_example"] = workers[0]["fsspec"] if workers else None
    out["nodes"] = per_node
    return out


def listing_pages(server: CountingS3Server, bucket: str, sizes=(100, 999, 1000, 2500, 5000)) -> list[dict]:
    """HTTP requests of one ``WorkDir.listing()`` of a cluster dir holding ``size`` files."""
    import s3fs

    from fsm_cluster.wire.workdir import WorkDir

    fs = s3fs.S3FileSystem(key="lister", secret="x", client_kwargs={"endpoint_url": server.endpoint,
                                                                       "region_name": "us-east-1"})
    rows = []
    for size in sizes:
        cluster = f"pages-{size}"
        fs.pipe({f"{bucket}/{cluster}/WORKER_w{i}_state.json": b"{}" for i in range(size)})
        wd = WorkDir(f"s3://{bucket}", cluster, fs=fs)
        before = len(server.requests)
        got = wd.listing()
        rows.append({"files": size, "listed": len(got), "http_requests": len(server.requests) - before})
    return rows


FIGURES = {
    "worker_formation_max": ("fsspec", "formation", "workers", "max"),
    "main_formation": ("fsspec", "formation", "main"),
    "worker_steady_per_interval_max": ("fsspec", "steady_per_interval", "workers", "max"),
    "main_steady_per_interval": ("fsspec", "steady_per_interval", "main"),
    "worker_teardown_max": ("fsspec", "teardown", "workers", "max"),
    "main_teardown": ("fsspec", "teardown", "main"),
    "http_worker_formation_max": ("http", "formation", "workers", "max"),
    "http_worker_steady_per_interval_max": ("http", "steady_per_interval", "workers", "max"),
    "http_main_steady_per_interval": ("http", "steady_per_interval", "main"),
}


def medians(rows: list[dict]) -> list[dict]:
    """Per backend and N: the median over repetitions of each figure of the table."""
    out = []
    for key in dict.fromkeys((r["backend"], r["workers"]) for r in rows):
        reps = [r for r in rows if (r["backend"], r["workers"]) == key]
        m = {"backend": key[0], "workers": key[1], "reps": len(reps)}
        for name, path in FIGURES.items():
            values = []
            for r in reps:
                v = r
                for p in path:
                    v = v.get(p) if isinstance(v, dict) else None
                if v is not None:
                    values.append(v)
            if values:
                m[name] = statistics.median(values)
        out.append(m)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", nargs="+", choices=["file", "s3"], default=["file", "s3"])
    ap.add_argument("-n", type=int, nargs="+", default=[1, 4, 16], help="WORKER counts")
    ap.add_argument("--steady", type=float, default=6.0, help="seconds MAIN's entry script runs")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                    help="override a node variable (e.g. OCI__HEARTBEAT_INTERVAL=10, OCI__CONTROL=off)")
    ap.add_argument("--out", default=str(RESULTS / "storage.json"))
    args = ap.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in args.env)
    results = {"benchmark": "storage", "settings": {**LOCAL_DEFAULTS, **overrides}, "steady_s": args.steady,
               "rows": [],
               "machine": machine(load_avg_before=os.getloadavg())}
    print(f"{'backend':>7} {'N':>3} {'wrk form':>8} {'MAIN form':>9} {'wrk/intv':>8} {'MAIN/intv':>9} "
          f"{'wrk tear':>8} {'MAIN tear':>9} {'http wrk form':>13} {'http MAIN/intv':>14}")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        entry = tmp / "steady.sh"
        entry.write_text(f"#!/bin/sh\nsleep {args.steady}\n")
        entry.chmod(0o755)
        server = None
        for backend in args.backend:
            if backend == "s3":
                server = CountingS3Server()
                bucket = f"bench-{uuid.uuid4().hex[:8]}"
                server.make_bucket(bucket)
                work_dir, extra = f"s3://{bucket}/wd", {**overrides, **server.env}
            else:
                work_dir, extra = str(tmp / "wd"), overrides
            for n in args.n:
                for rep in range(args.reps):
                    mark = len(server.requests) if server and backend == "s3" else 0
                    nodes = run_cluster(n, work_dir, str(entry), extra, tmp)
                    reqs = server.requests[mark:] if backend == "s3" else None
                    s = summarize(nodes, reqs)
                    results["rows"].append({"backend": backend, "workers": n, "rep": rep, **s})
                    f, http = s["fsspec"], s.get("http")
                    print(f"{backend:>7} {n:>3} {f['formation']['workers']['max']:>8} {f['formation']['main']:>9} "
                          f"{f['steady_per_interval']['workers']['max']:>8.2f} "
                          f"{f['steady_per_interval']['main']:>9.2f} {f['teardown']['workers']['max']:>8} "
                          f"{f['teardown']['main']:>9} "
                          f"{http['formation']['workers']['max'] if http else '-':>13} "
                          f"{http['steady_per_interval']['main'] if http else '-':>14}", flush=True)
            if backend == "s3":
                results["s3_listing_pages"] = listing_pages(server, bucket)
                print("S3: HTTP requests per listing of a cluster dir:",
                      ", ".join(f"{r['files']} files → {r['http_requests']}" for r in results["s3_listing_pages"]))
                server.stop()
    results["medians"] = medians(results["rows"])
    print("medians over repetitions:")
    for m in results["medians"]:
        print("  " + ", ".join(f"{k}={v}" for k, v in m.items()))
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
