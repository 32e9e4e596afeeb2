"""Horovod's host discovery script: print ``<host>:<slots>`` for every live node of the cluster.

``horovodrun --host-discovery-script`` runs this every second (as a small shell wrapper MAIN
writes). It reads the work dir named by the node environment it inherits (OCI__WORK_DIR,
OCI__CLUSTER_ID) with one listing per call, for the nodes of a roster file MAIN's node keeps
(OCI__HOROVOD_DISCOVERY_ROSTER: the roster it verified, without a lost WORKER, with its replacement
once taken in; without that variable, MAIN's configuration in the work dir):

* a node is live while its state file keeps changing (its heartbeat): a node whose state file has
  not changed for OCI__HOROVOD_DISCOVERY_STALE seconds (default: half OCI__HEARTBEAT_TIMEOUT) drops
  out — Horovod then re-forms without it (elastic) — and so does one that wrote ``<node>_done``;
* "changing" is judged on this machine's monotonic clock, remembered between calls in a small
  JSON cache file (OCI__HOROVOD_DISCOVERY_CACHE), never by comparing clocks of two machines;
* nodes on one address (a loopback cluster) add up their slots: ``127.0.0.1:3``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Mapping

OCI__HOROVOD_DISCOVERY_CACHE = "OCI__HOROVOD_DISCOVERY_CACHE"
OCI__HOROVOD_DISCOVERY_ROSTER = "OCI__HOROVOD_DISCOVERY_ROSTER"
OCI__HOROVOD_DISCOVERY_STALE = "OCI__HOROVOD_DISCOVERY_STALE"
OCI__HOROVOD_SLOTS = "OCI__HOROVOD_SLOTS"


def live_hosts(listing: Mapping[str, object], roster: list[dict], slots: int, stale: float,
               cache: dict, now: float) -> list[str]:
    """``host:slots`` lines, in rank order of first appearance. ``cache`` (a
    :class:`~fsm_cluster.wire.peerwatch.PeerWatch` as JSON: {state file: [fingerprint, changed at]}) is
    updated in place."""
    from ..wire.peerwatch import PeerWatch

    watch = PeerWatch.from_json(cache)
    counts: dict[str, int] = {}
    for entry in roster:
        node = entry["node"]
        state = f"{node}_state.json"
        if state not in listing or f"{node}_done" in listing:
            continue
        watch.note(state, json.loads(json.dumps(listing[state], default=str)), now)  # JSON-comparable
        if watch.quiet_for(state, now) > stale:
            continue
        counts[entry["ip"]] = counts.get(entry["ip"], 0) + slots
    cache.clear()
    cache.update(watch.to_json())
    return [f"{host}:{n}" for host, n in counts.items()]


def read_json(path: str | None) -> dict:
    """A small JSON file's object; {} when there is none (or it cannot be read)."""
    if not path or not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def write_json(path: str, value: dict) -> None:
    """Replace ``path`` at once (a reader never sees half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def main(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    from ..wire.models import NodeConfig
    from ..wire.workdir import WorkDir, config_name

    try:
        work_dir, cluster = env["OCI__WORK_DIR"], env["OCI__CLUSTER_ID"]
        slots = int(env.get(OCI__HOROVOD_SLOTS) or 1)
        stale = float(env.get(OCI__HOROVOD_DISCOVERY_STALE) or
                      float(env.get("OCI__HEARTBEAT_TIMEOUT") or 60) / 2)
    except (KeyError, ValueError) as e:
        print(f"horovod discovery: bad environment ({e})", file=sys.stderr)
        return 2
    cache_path = env.get(OCI__HOROVOD_DISCOVERY_CACHE)
    seen = read_json(cache_path).get("seen", {})
    wd = WorkDir(work_dir, cluster)
    roster = read_json(env.get(OCI__HOROVOD_DISCOVERY_ROSTER)).get("roster")
    if roster is None:
        main_cfg = wd.read(config_name("MAIN"), NodeConfig)
        if main_cfg is None:
            return 0  # no cluster yet: no hosts
        roster = [{"node": r.node, "ip": r.ip} for r in main_cfg.roster]
    lines = live_hosts(wd.listing(), roster, slots, stale, seen, time.monotonic())
    if cache_path:
        write_json(cache_path, {"seen": seen})
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
