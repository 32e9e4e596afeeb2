"""RAY: a Ray cluster started with Ray's own ``ray start``.

* MAIN publishes the head's address (``RAY_ADDRESS`` = ``<ip>:<port>``; port ``OCI__RAY_PORT``,
  default 6379, a free one on a loopback cluster) and starts ``ray start --head --block``.
* Every WORKER waits until the head accepts connections and its GCS lists the head node alive
  (Ray gives a raylet a fixed 30 s to register, which a worker starting alongside a head still
  coming up may miss on a small machine), then runs ``ray start --address <head> --block``. ``--block`` keeps ``ray start`` in the foreground, so the node watches it like any
  engine daemon, and its process group (with every Ray daemon) ends with the node: no machine-wide
  ``ray stop``, which would also stop other Ray clusters on the host.
* MAIN waits until ``ray.nodes()`` lists every node alive, then runs the entry script with
  ``RAY_ADDRESS`` set (so a bare ``ray.init()`` joins the cluster).
* ``OCI__START_ARGS`` (per role) is passed to ``ray start`` as is (``--num-cpus``, resources…).
* On a loopback cluster (several clusters may share the host) every node also gets its own
  ``--temp-dir`` and free ports for the ports Ray otherwise fixes (client server, dashboard,
  dashboard agent); on a network Ray's defaults stand.
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

    def _local_isolation(self, head: bool) -> list[str]:
        """A private temp dir and free ports when the node is on a loopback address."""
        if not is_loopback(self.ip):
            return []
        # short: Ray puts Unix sockets below it (108-byte path limit)
        tag = hashlib.sha1(f"{self.settings.cluster_id}/{self.node_id}".encode()).hexdigest()[:10]
        tmp = os.path.join(tempfile.gettempdir(), f"ray-{tag}")
        args = ["--temp-dir", tmp, "--dashboard-agent-listen-port", str(free_port(self.ip)),
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
        cmd = self._ray("--head", "--port", port) + self._local_isolation(head=True) + start_args(self.settings.variables)
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
        cmd = self._ray("--address", self.head_address) + self._local_isolation(head=False) + \
            start_args(self.settings.variables)
        self.spawn("ray worker", cmd, grace=0)

    def engine_ready(self) -> None:
        """Block (ticking heartbeats) until every node of the roster is alive in ``ray.nodes()``,
        asked by a child process (:mod:`._ray_nodes`): the node never becomes a Ray driver."""
        want = len(self.roster)
        rc = self._ask_ray([self.head_address, str(want)], f"{want} Ray node(s) to be alive")
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
