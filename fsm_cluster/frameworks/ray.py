"""RAY: a Ray cluster started with Ray's own ``ray start``.

* MAIN publishes the head's address (``RAY_ADDRESS`` = ``<ip>:<port>``; port ``OCI__RAY_PORT``,
  default 6379, a free one on a loopback cluster) and starts ``ray start --head --block``.
* Every WORKER waits until the head accepts connections and its GCS lists the head node alive
  (Ray gives a raylet a fixed 30 s to register, which a worker starting alongside a head still
  coming up may miss on a small machine), then runs ``ray start --address <head> --block``. ``--block`` keeps ``ray start`` in the foreground, so the node watches it like any
  engine daemon, and its process group (with every Ray daemon) ends with the node: no machine-wide
  ``ray stop``, which would also stop other Ray clusters on the host.
* MAIN waits until the head's GCS lists every node alive, then runs the entry script with
  ``RAY_ADDRESS`` set (so a bare ``ray.init()`` joins the cluster).
* ``OCI__START_ARGS`` (per role) is passed to ``ray start`` as is (``--num-cpus``, resources…).
* Every node gets a ``--temp-dir`` of its own (:func:`node_temp_dir`: ``ray-<tag of cluster and
  node>`` below the system's temporary folder, TMPDIR's) unless ``OCI__START_ARGS`` names one:
  nodes that share a filesystem (one machine, ``fsm-cluster local`` with or without ``--hosts``)
  would otherwise meet in Ray's one ``/tmp/ray``, where their raylets race for the same socket and
  session names; on a host of its own the node's logs are there instead of ``/tmp/ray``.
* On a loopback cluster (several clusters may share the host) every node also gets free ports for
  the ports Ray otherwise fixes (client server, dashboard, dashboard agent); on a network, where
  each node has its own address, Ray's defaults stand.
* Spec side (:class:`RaySpecBuilder`): ``OCI__RAY_PORT`` is checked as the node reads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile

from ..errors import NodeFailure
from ._common import engine_command, free_port, is_loopback, port_setting, start_args, tcp_open
from ._engine import EngineProvider, EngineSpecBuilder
from ._ray_nodes import NO_GCS_CLIENT

log = logging.getLogger(__name__)

RAY_ADDRESS = "RAY_ADDRESS"
OCI__RAY_PORT = "OCI__RAY_PORT"
DEFAULT_RAY_PORT = 6379
# Ray's Unix sockets are <temp dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store: a path
# must fit in 107 bytes, the session part takes up to 64
TEMP_DIR_ROOM = 107 - len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")


def node_temp_dir(cluster_id: str, node_id: str, base: str | None = None) -> str:
    """The node's own Ray temp dir: ``<base>/ray-<10 hex of cluster and node>`` (``base``: the
    system's temporary folder by default — TMPDIR, a host's own under ``--hosts``); the same for
    the node's every start in the cluster, another for every other node. Below ``/tmp`` when
    ``base`` is too long for Ray's socket paths."""
    tag = hashlib.sha1(f"{cluster_id}/{node_id}".encode()).hexdigest()[:10]
    path = os.path.join(base or tempfile.gettempdir(), f"ray-{tag}")
    return path if len(path) <= TEMP_DIR_ROOM else os.path.join("/tmp", f"ray-{tag}")


def names_temp_dir(args: list[str]) -> bool:
    """Whether ``ray start`` arguments name a temp dir (``--temp-dir X`` or ``--temp-dir=X``)."""
    return any(a == "--temp-dir" or a.startswith("--temp-dir=") for a in args)


class RayProvider(EngineProvider):
    """``ray start --head`` on MAIN, ``ray start --address`` on every WORKER."""
    KIND = "RAY"
    ELASTIC = True  # a lost worker: the engine reschedules on the others; the replacement joins
    EXPORTS = (RAY_ADDRESS, OCI__RAY_PORT)

    # -- configuration ---------------------------------------------------------------------------
    def configuration(self, conf: dict | None = None) -> dict:
        conf = dict(conf or {})
        if self.mode == "MAIN":
            port = port_setting(self.settings.variables, OCI__RAY_PORT, DEFAULT_RAY_PORT, self.ip)
            conf[RAY_ADDRESS] = f"{self.ip}:{port}"
            conf[OCI__RAY_PORT] = str(port)
        return conf

    @property
    def head_address(self) -> str:
        addr = self.exported.get(RAY_ADDRESS)
        if not addr or ":" not in addr:
            raise NodeFailure(f"{RAY_ADDRESS} missing from MAIN's configuration")
        return addr

    def _isolation(self, head: bool) -> list[str]:
        """The node's own temp dir (unless the user's arguments name one), and free ports when the
        node is on a loopback address."""
        args = []
        if not names_temp_dir(start_args(self.settings.variables)):
            tmp = node_temp_dir(self.settings.cluster_id, self.node_id)
            log.info("%s: Ray's temp dir (its logs) is %s", self.node_id, tmp)
            args += ["--temp-dir", tmp]
        if not is_loopback(self.ip):
            return args
        args += ["--dashboard-agent-listen-port", str(free_port(self.ip)),
                "--dashboard-agent-grpc-port", str(free_port(self.ip)),
                "--runtime-env-agent-port", str(free_port(self.ip)),
                "--metrics-export-port", str(free_port(self.ip))]
        if head:
            args += ["--ray-client-server-port", str(free_port(self.ip)),
                     "--dashboard-host", self.ip, "--dashboard-port", str(free_port(self.ip))]
        return args

    def _ray(self, *args: str) -> list[str]:
        return [*engine_command("ray", "ray", "ray.scripts.scripts"), "start", *args,
                "--node-ip-address", self.ip, "--block", "--disable-usage-stats"]

    # -- engine ----------------------------------------------------------------------------------
    # Ray's processes are ended the way ``ray stop --force`` ends them (SIGKILL, no grace): at the end
    # of the cluster they hold nothing a graceful stop would save, and ``ray start --block`` does not
    # end on SIGTERM (the node's teardown waited its whole grace for it, then killed it anyway).
    def start_main(self) -> None:
        port = self.head_address.rsplit(":", 1)[1]
        cmd = self._ray("--head", "--port", port) + self._isolation(head=True) + start_args(self.settings.variables)
        self.spawn("ray head", cmd, grace=0)

    def start_worker(self) -> None:
        """``ray start --address <head>`` once the head's raylet is alive in its GCS, not just once
        the GCS port is open: a raylet that starts while the head is still coming up (a small,
        busy machine) may miss Ray's fixed 30 s limit to register ("The current node timed out
        during startup")."""
        host, port = self.head_address.rsplit(":", 1)
        self.wait_until(lambda: tcp_open(host, int(port)), self.time_out, f"the Ray head at {self.head_address}")
        rc = self._ask_ray(["--gcs", self.head_address, "1"], f"the Ray head at {self.head_address} to be alive")
        if rc == NO_GCS_CLIENT:
            log.info("%s: this Ray has no GCS client to ask: starting without waiting for the head", self.node_id)
        cmd = self._ray("--address", self.head_address) + self._isolation(head=False) + \
            start_args(self.settings.variables)
        self.spawn("ray worker", cmd, grace=0)

    def engine_ready(self) -> None:
        """Block (ticking heartbeats) until every node of the roster is alive in the head's GCS,
        asked by a child process (:mod:`._ray_nodes`) through Ray's GCS client, as a WORKER asks
        before its ``ray start``; as a Ray driver (``ray.nodes()``) only when this Ray has no such
        client. Connecting a driver cost seconds of CPU on a small machine before the entry
        script's own ``ray.init`` connected one again; the node never becomes a driver itself."""
        want = len(self.roster)
        what = f"{want} Ray node(s) to be alive"
        rc = self._ask_ray(["--gcs", self.head_address, str(want)], what)
        if rc == NO_GCS_CLIENT:
            rc = self._ask_ray([self.head_address, str(want)], what)
        if rc != 0:
            raise NodeFailure(f"asking Ray for its nodes failed (exit code {rc})")
        log.info("%s: all %d Ray nodes alive at %s", self.node_id, want, self.head_address)

    def _ask_ray(self, args: list[str], what: str) -> int:
        """Run :mod:`._ray_nodes` with ``args`` and wait (ticking; OCI__TIMEOUT) for its exit code."""
        probe = self.children.spawn("ray nodes probe", [sys.executable, "-m", "fsm_cluster.frameworks._ray_nodes",
                                                        *args], env=self.child_env(), essential=False)

        def ended():
            self.check_engine()
            return probe.poll() is not None

        try:
            self.wait_until(ended, self.time_out, what)
        finally:
            if probe.poll() is None:
                probe.popen.kill()
        return probe.poll()

    def entry_env(self) -> dict[str, str]:
        env = super().entry_env()
        env[RAY_ADDRESS] = self.head_address
        return env


class RaySpecBuilder(EngineSpecBuilder):
    PROVIDER = RayProvider
    PORTS = (OCI__RAY_PORT,)
