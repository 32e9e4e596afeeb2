"""RAY: a Ray cluster started with Ray's own ``ray start``.

* MAIN publishes the head's address (``RAY_ADDRESS`` = ``<ip>:<port>``; port ``OCI__RAY_PORT``,
  default 6379, a free one on a loopback cluster) and starts ``ray start --head --block``.
* Every WORKER runs ``ray start --address <head> --block`` once the head accepts connections and its
  GCS lists the head node alive (Ray gives a raylet a fixed 30 s to register, which a worker starting
  alongside a head still coming up may miss on a small machine). ``--block`` keeps ``ray start`` in
  the foreground, so the node watches it like any engine daemon, and its process group (with every
  Ray daemon) ends with the node: no machine-wide ``ray stop``, which would also stop other Ray
  clusters on the host.
* MAIN runs the entry script, with ``RAY_ADDRESS`` set (so a bare ``ray.init()`` joins the
  cluster), once the head's GCS lists every node of the roster alive.
* Every node runs ``ray start`` through :mod:`._ray_start`, Ray's own command line in a process
  that also does the node's waits on Ray (a WORKER's wait for the head, MAIN's count of the nodes
  alive, asked of the GCS beside the head), so a node imports Ray once: no probe process of its own.
* ``OCI__START_ARGS`` (per role) is passed to ``ray start`` as is (``--num-cpus``, resources…).
* Every node gets a ``--temp-dir`` of its own (:func:`node_temp_dir`: ``ray-<tag of cluster and
  node>`` below the system's temporary folder, TMPDIR's) unless ``OCI__START_ARGS`` names one:
  nodes that share a filesystem (one machine, ``fsm-cluster local`` with or without ``--hosts``)
  would otherwise meet in Ray's one ``/tmp/ray``, where their raylets race for the same socket and
  session names; on a host of its own the node's logs are there instead of ``/tmp/ray``.
* On a loopback cluster (several clusters may share the host) no node takes a port Ray otherwise
  fixes: the agents' ports are bound by Ray's components themselves (0) where Ray records what they
  bound, else free ones (:mod:`._ray_start` ``--own-ports``); the head's client server and dashboard
  get free ports. On a network, where each node has its own address, Ray's defaults stand.
* Spec side (:class:`RaySpecBuilder`): ``OCI__RAY_PORT`` is checked as the node reads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile

from ..clock import Backoff
from ..errors import NodeFailure
from ._common import engine_command, free_port, is_loopback, module_available, port_setting, start_args
from ._engine import EngineProvider, EngineSpecBuilder
from ._ray_nodes import NO_GCS_CLIENT

log = logging.getLogger(__name__)

RAY_ADDRESS = "RAY_ADDRESS"
RAY_START = "fsm_cluster.frameworks._ray_start"
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

    def _isolation(self, head: bool) -> tuple[list[str], list[str]]:
        """``(options of _ray_start, arguments of ray start)``: the node's own temp dir (unless the
        user's arguments name one), and, on a loopback address, ports no other node takes."""
        args = []
        if not names_temp_dir(start_args(self.settings.variables)):
            tmp = node_temp_dir(self.settings.cluster_id, self.node_id)
            log.info("%s: Ray's temp dir (its logs) is %s", self.node_id, tmp)
            args += ["--temp-dir", tmp]
        if not is_loopback(self.ip):
            return [], args
        if head:
            args += ["--ray-client-server-port", str(free_port(self.ip)),
                     "--dashboard-host", self.ip, "--dashboard-port", str(free_port(self.ip))]
        return ["--own-ports", self.ip], args

    def _ray(self, *args: str, node: list[str] = ()) -> list[str]:
        """``ray start <args>`` run by :mod:`._ray_start` with ``node``'s options, in this node's
        Python (which must import Ray: it runs Ray's command line)."""
        if not module_available("ray.scripts.scripts"):
            engine_command("ray", "ray", "ray.scripts.scripts")  # Ray nowhere: the message names the extra
            raise NodeFailure(f"ray is not installed for {sys.executable}, which runs `ray start` for the node: "
                              "pip install 'fsm_cluster[ray]'")
        return [sys.executable, "-m", RAY_START, *node, "--", "start", *args,
                "--node-ip-address", self.ip, "--block", "--disable-usage-stats"]

    # -- engine ----------------------------------------------------------------------------------
    # Ray's processes are ended the way ``ray stop --force`` ends them (SIGKILL, no grace): at the end
    # of the cluster they hold nothing a graceful stop would save, and ``ray start --block`` does not
    # end on SIGTERM (the node's teardown waited its whole grace for it, then killed it anyway).
    _alive_dir: str | None = None  # MAIN: where _ray_start reports every node alive (the first time)

    def start_main(self) -> None:
        """``ray start --head``, with a thread beside it that writes :meth:`alive_file` once the
        roster's nodes are alive in the GCS."""
        port = self.head_address.rsplit(":", 1)[1]
        self._forget_alive()
        self._alive_dir = tempfile.mkdtemp(prefix="fsm-ray-")
        report = ["--report", self.head_address, str(self.world_size), self.alive_file]
        own, iso = self._isolation(head=True)
        cmd = self._ray("--head", "--port", port, node=report + own) + iso + start_args(self.settings.variables)
        self.spawn("ray head", cmd, grace=0)

    @property
    def alive_file(self) -> str:
        return os.path.join(self._alive_dir, "nodes-alive")

    def _forget_alive(self) -> None:
        if self._alive_dir:
            shutil.rmtree(self._alive_dir, ignore_errors=True)
            self._alive_dir = None

    def start_worker(self) -> None:
        """``ray start --address <head>`` once the head's raylet is alive in its GCS, not just once
        the GCS port is open: a raylet that starts while the head is still coming up (a small,
        busy machine) may miss Ray's fixed 30 s limit to register ("The current node timed out
        during startup"). :mod:`._ray_start` waits (OCI__TIMEOUT) in the process that then runs
        ``ray start``, having imported Ray meanwhile; the node watches it from the start."""
        after = ["--after", self.head_address, f"{self.time_out:g}"]
        own, iso = self._isolation(head=False)
        cmd = self._ray("--address", self.head_address, node=after + own) + iso + start_args(self.settings.variables)
        self.spawn("ray worker", cmd, grace=0)

    def engine_ready(self) -> None:
        """Block (ticking heartbeats) until every node of the roster is alive in the head's GCS.
        The first time, the head's own process says so (:meth:`alive_file`, written by
        :mod:`._ray_start` beside ``ray start --head``); later (a restart), or when it could not
        ask, a child process (:mod:`._ray_nodes`) asks through Ray's GCS client, or as a Ray driver
        (``ray.nodes()``) when this Ray has no such client. The node never becomes a driver itself
        (``ray.init`` blocks for seconds and would stall its heartbeat)."""
        want = len(self.roster)
        what = f"{want} Ray node(s) to be alive"
        said = self._alive_report(what) if self._alive_dir else None
        self._forget_alive()
        if said is not None and said != "no-gcs" and int(said) >= want:
            log.info("%s: all %d Ray nodes alive at %s", self.node_id, want, self.head_address)
            return
        rc = NO_GCS_CLIENT if said == "no-gcs" else self._ask_ray(["--gcs", self.head_address, str(want)], what)
        if rc == NO_GCS_CLIENT:
            rc = self._ask_ray([self.head_address, str(want)], what)
        if rc != 0:
            raise NodeFailure(f"asking Ray for its nodes failed (exit code {rc})")
        log.info("%s: all %d Ray nodes alive at %s", self.node_id, want, self.head_address)

    def _alive_report(self, what: str) -> str:
        """What the head's process wrote to :meth:`alive_file` (waiting for it; a dead head fails
        the node). A local file: looked at every 0.1 s at most."""
        def written():
            self.check_engine()
            return os.path.exists(self.alive_file)

        self.wait_until(written, self.time_out, what, Backoff(first=0.02, factor=2.0, cap=0.1))
        with open(self.alive_file, encoding="utf-8") as f:
            return f.read().strip()

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

    def stop(self) -> None:
        super().stop()
        self._forget_alive()

    def entry_env(self) -> dict[str, str]:
        env = super().entry_env()
        env[RAY_ADDRESS] = self.head_address
        return env


class RaySpecBuilder(EngineSpecBuilder):
    PROVIDER = RayProvider
    PORTS = (OCI__RAY_PORT,)
