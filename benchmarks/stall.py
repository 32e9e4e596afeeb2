"""The stall watchdog (issue 16): from the moment the last node's code went quiet to the cluster's
failure with every node's stacks, against the bound "stall timeout + one heartbeat interval".

Real `fsm-cluster run` processes (COMMAND engine, OCI__RUN_ON=all): every node's entry script
stamps the moment it prints its last line, then deadlocks two threads on two locks. Measured from
the latest stamp: MAIN's "collecting stacks" line (detection), every node's exit (the failure is
decided once every stacks file is written). At the local launcher's defaults (heartbeat 0.2 s,
OCI__STALL_TIMEOUT 3) and at the production defaults (10 s / 60 s, OCI__STALL_TIMEOUT 30), with
the control channel and without it (workers then report in their state files).

    python benchmarks/stall.py                # 1 + 2 nodes, 3 repetitions
    python benchmarks/stall.py --quick        # 1 repetition, results/tmp/stall.json
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import formation  # noqa: E402
from benchmarks.common import Nodes, cluster_bench, machine, write_results  # noqa: E402
from fsm_cluster.launch.local import LOCAL_DEFAULTS

SETTINGS = {
    "local": ({**LOCAL_DEFAULTS, "OCI__STALL_TIMEOUT": "3"}, 3.0, float(LOCAL_DEFAULTS["OCI__HEARTBEAT_INTERVAL"])),
    "production": ({"OCI__HEARTBEAT_INTERVAL": "10", "OCI__HEARTBEAT_TIMEOUT": "60", "OCI__STALL_TIMEOUT": "30"},
                   30.0, 10.0),
}
DEADLOCK = Path(__file__).resolve().parents[1] / "examples" / "stall" / "deadlock.py"  # stamps, then hangs


def collecting_at(log: Path) -> float | None:
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if "collecting stacks" in line:
            return formation.stamp(line[:23])
    return None


def one_run(n: int, tmp: Path, overrides: dict, control: str) -> dict:
    stamps = Path(tempfile.mkdtemp(dir=tmp))
    cmds = formation.cluster_cmds(n, str(DEADLOCK), tmp, {**overrides, "OCI__RUN_ON": "all", "OCI__CONTROL": control,
                                                       "OCI__ENTRY_SCRIPT_ARGS": str(stamps)}, base={})
    guard = float(overrides["OCI__STALL_TIMEOUT"]) * 3 + 120
    with Nodes() as nodes:
        for argv, env, log in cmds:
            nodes.start(argv, env, log)
        deadline = time.monotonic() + guard
        while nodes.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        if nodes.running():
            raise SystemExit("the stalled cluster did not end:\n" + "\n".join(c[2].read_text()[-1500:] for c in cmds))
        quiet = max(float(p.read_text()) for p in stamps.iterdir())
        seen = collecting_at(cmds[0][2])
        if seen is None or len(list(stamps.iterdir())) != n + 1:
            raise SystemExit("no stall detected:\n" + cmds[0][2].read_text()[-3000:])
        return {"detected": seen - quiet, "exited": max(nodes.exits) - quiet, "codes": nodes.codes}


def main(argv=None) -> int:
    args, reps, out, results = cluster_bench(
        "stall", __doc__, argv, lambda ap: ap.add_argument("--only", choices=sorted(SETTINGS), default=None))
    print(f"{'setting':<11} {'channel':<8} {'what':<38} {'bound':>7} {'median':>8}  all")
    ok = True
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, (overrides, timeout, interval) in SETTINGS.items():
            if args.only and name != args.only:
                continue
            for control in ("on", "off"):
                runs = [one_run(args.n, tmp, overrides, control) for _ in range(reps)]
                for what, key in (("last output → stall detected", "detected"),
                                  ("last output → every node exited", "exited")):
                    values = [r[key] for r in runs]
                    bound = timeout + interval
                    row = {"setting": name, "channel": control, "what": what, "median_s": round(statistics.median(values), 3),
                           "all_s": [round(v, 3) for v in values], "bound_s": bound if key == "detected" else None,
                           "exit_codes": [r["codes"] for r in runs]}
                    if key == "detected":
                        ok = ok and max(values) <= bound
                    results["rows"].append(row)
                    shown = f"{bound:>6.1f}s" if key == "detected" else f"{'':>7}"
                    print(f"{name:<11} {control:<8} {what:<38} {shown} {row['median_s']:>7.3f}s  {row['all_s']}",
                          flush=True)
    results["machine_after"] = machine()
    results["within_bound"] = ok
    write_results(out, results)
    print("every detection within the stall timeout + one interval" if ok else "a detection was past its bound")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
