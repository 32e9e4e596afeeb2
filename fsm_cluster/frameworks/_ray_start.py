"""``python -m fsm_cluster.frameworks._ray_start [options] -- start <ray start arguments>``: Ray's own
``ray start`` (its command line, run in this process) with the node's waits on Ray done in the same
process, so a node imports Ray once. Before, a WORKER ran a probe process (:mod:`._ray_nodes`) that
imported Ray (~0.4 s of CPU, more on a busy machine) to wait for the head, then ``ray start``
imported it again; MAIN ran one more to see every node alive.

* ``--after <address> <timeout>`` (a WORKER): import Ray while the head comes up, then wait until the
  head at ``address`` accepts connections and its GCS lists a node alive (the head's raylet) before
  ``ray start --address`` (see :mod:`.ray`: a raylet started while the head is still coming up may
  miss Ray's fixed 30 s to register). Not alive within ``timeout`` s: exit :data:`NOT_ALIVE`, saying
  so. A Ray without a GCS client we know starts without waiting, saying so.
* ``--report <address> <n> <file>`` (MAIN): beside ``ray start --head``, a thread asks the head's GCS
  until ``n`` nodes are alive, then writes ``n`` to ``file`` (``no-gcs`` when it cannot ask); MAIN
  starts the entry script once the file says so (:meth:`.ray.RayProvider.engine_ready`).
* ``--own-ports``: the ports Ray would fix on every node of a host (the dashboard agent's 52365) or
  that nodes sharing a host must not share: a Ray whose components bind a port of their own and
  record it (``wait_for_persisted_port``) gets 0 for each, so no port is picked before Ray binds it
  (a port picked free and released could be taken meanwhile by another process: Ray's component
  then fails and ``ray start`` with it); an older Ray gets free ports picked here, just before.

Messages go to stderr: the node's log, never the user's output. Only the standard library and Ray.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

POLL = 0.1  # s between two questions to the GCS (a local RPC)
NOT_ALIVE = 2  # exit code: the head was not alive in time
AGENT_PORTS = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
               "--metrics-export-port")


def say(message: str) -> None:
    print(f"fsm_cluster ray start: {message}", file=sys.stderr, flush=True)


def tcp_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def own_ports(host: str) -> list[str]:
    """The agent ports: 0 (Ray's components bind their own) where Ray records the ports its
    components bound, else free ports on ``host``."""
    import ray._raylet

    self_bind = hasattr(ray._raylet, "wait_for_persisted_port")
    out = []
    for option in AGENT_PORTS:
        out += [option, "0" if self_bind else str(free_port(host))]
    return out


def gcs_counter(address: str, deadline: float):
    """A function counting the nodes alive in the GCS at ``address`` once it accepts connections
    (None: this Ray has no GCS client we know; False: not open by ``deadline``)."""
    from ._ray_nodes import alive_in_gcs

    while not tcp_open(address):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return alive_in_gcs(address)


def wait_for_head(address: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    count = gcs_counter(address, deadline)
    if count is None:
        say("this Ray has no GCS client to ask: starting without waiting for the head")
        return True
    while count is False or count() < 1:
        if time.monotonic() > deadline:
            say(f"the Ray head at {address} was not alive within {timeout:.0f} s")
            return False
        time.sleep(POLL)
    return True


def report_alive(address: str, want: int, path: str) -> None:
    """Write ``want`` (or ``no-gcs``) to ``path`` once ``want`` nodes are alive in the GCS."""
    count = gcs_counter(address, float("inf"))
    if count is not None:
        while count() < want:
            time.sleep(POLL)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("no-gcs" if count is None else str(want))
    os.replace(tmp, path)


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    if "--" not in argv:
        raise SystemExit("usage: _ray_start [--after ADDRESS TIMEOUT] [--report ADDRESS N FILE] [--own-ports HOST] "
                         "-- start ...")
    cut = argv.index("--")
    opts, ray_args, i = {}, argv[cut + 1:], 0
    mine = argv[:cut]
    while i < len(mine):
        n = {"--after": 2, "--report": 3, "--own-ports": 1}.get(mine[i])
        if n is None:
            raise SystemExit(f"_ray_start: unknown option {mine[i]}")
        opts[mine[i]] = mine[i + 1:i + 1 + n]
        i += 1 + n
    return opts, ray_args


def main(argv: list[str]) -> int:
    opts, ray_args = parse(argv)
    from ray.scripts.scripts import cli  # what `ray start` imports anyway: while the head comes up

    if "--own-ports" in opts:
        ray_args += own_ports(opts["--own-ports"][0])
    if "--after" in opts:
        address, timeout = opts["--after"]
        if not wait_for_head(address, float(timeout)):
            return NOT_ALIVE
    if "--report" in opts:
        address, want, path = opts["--report"]
        threading.Thread(target=report_alive, args=(address, int(want), path), name="fsm-ray-alive",
                         daemon=True).start()
    sys.argv = ["ray", *ray_args]  # as the `ray` console script would see them
    return cli.main(args=ray_args, prog_name="ray")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
