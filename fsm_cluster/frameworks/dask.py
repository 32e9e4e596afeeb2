"""DASK: a Dask distributed cluster, started with Dask's own ``dask scheduler`` / ``dask worker`` CLI.

* MAIN publishes the scheduler's address (``DASK_SCHEDULER_ADDRESS``, plus ADS' ``SCHEDULER_IP``)
  in its configuration, starts ``dask scheduler`` on it, waits — through a real
  ``distributed.Client`` — until every WORKER node has a worker in the scheduler, then runs the
  entry script with ``DASK_SCHEDULER_ADDRESS`` set (so a bare ``Client()`` connects).
* Every WORKER starts ``dask worker <scheduler>`` named after its node id.
* ``OCI__START_ARGS`` (per role in the job runs) is passed through to the CLI as is: ports,
  ``--nthreads``, ``--memory-limit``, ``--nworkers``…
* TLS when certificates are configured (OCI__CERTIFICATE_OCID + OCI__CERTIFICATE_AUTHORITY_OCID,
  or all three ``OCI__*_DOWNLOAD_LOCATION`` files): a ``tls://`` address, ``--tls-*`` options and a
  ``distributed.Security`` for the Client; the entry script gets Dask's TLS config variables.
* Teardown in Dask's own order, so a normal end prints no ``CommClosedError``: the scheduler is
  started with a preload (:mod:`._dask_teardown`) that, when MAIN's teardown stops it (after the
  stop marker), first waits until every worker left (their nodes end them; those still there
  after a second are asked to close by the scheduler); a WORKER ends its ``dask
  worker`` with SIGTERM to the worker CLI alone, whose nanny closes the worker process (signalled
  as a group, the worker process died under its nanny), then the node's teardown ends what is left.
* Spec side (:class:`DaskSpecBuilder`): the ports are checked as the node reads them.

Variables (an oracle-ads name in brackets is read as an alias: oracle-ads' Dask spec builder and
image set it; the fsm name wins when both are set):

* ``OCI__DASK_SCHEDULER_PORT`` (default 8786; a free port on a loopback cluster),
  ``OCI__DASK_DASHBOARD_PORT`` (default 8787; a free port on a loopback cluster);
* ``OCI__DASK_WORKER_PORT`` [``OCI__WORKER_PORT``]: the worker's ``--worker-port``, a port or a
  range ``low:high`` (unset: Dask picks one);
* ``OCI__DASK_NANNY_PORT`` [``OCI__NANNY_PORT``]: the worker's ``--nanny-port``, a port or a range;
* ``OCI__DASK_DEATH_TIMEOUT`` [``OCI__WORKER_TIMEOUT``]: the worker's ``--death-timeout`` (seconds,
  or ``45s`` / ``10m``…; how long a worker waits for an unreachable scheduler before it closes).

Options in ``OCI__START_ARGS`` come after these on the command line, so they win.

:meth:`DaskProvider.check_cluster_status` is oracle-ads' on-demand status (a ``ClusterStatus``
namedtuple with ``worker_count``, read from the scheduler through a Client it closes); fsm_cluster
itself never calls it — its periodic check is :meth:`~fsm_cluster.provider.ClusterProvider.check_engine`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import namedtuple

from ..env import (
    OCI__CA_DOWNLOAD_LOCATION,
    OCI__CERTIFICATE_AUTHORITY_OCID,
    OCI__CERTIFICATE_DOWNLOAD_LOCATION,
    OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION,
    OCI__CERTIFICATE_OCID,
)
from ..errors import NodeFailure
from ._common import (
    engine_command,
    is_loopback,
    port_setting,
    setting,
    start_args,
    validate_port_range,
    validate_seconds,
)
from ._engine import EngineProvider, EngineSpecBuilder

log = logging.getLogger(__name__)

TEARDOWN_PRELOAD = "fsm_cluster.frameworks._dask_teardown"  # the scheduler's workers-leave-first plugin

DASK_SCHEDULER_ADDRESS = "DASK_SCHEDULER_ADDRESS"
SCHEDULER_IP = "SCHEDULER_IP"  # ADS name
OCI__DASK_SCHEDULER_PORT = "OCI__DASK_SCHEDULER_PORT"
OCI__DASK_DASHBOARD_PORT = "OCI__DASK_DASHBOARD_PORT"
OCI__DASK_WORKER_PORT = "OCI__DASK_WORKER_PORT"
OCI__DASK_NANNY_PORT = "OCI__DASK_NANNY_PORT"
OCI__DASK_DEATH_TIMEOUT = "OCI__DASK_DEATH_TIMEOUT"
# fsm name → the oracle-ads name read as its alias (see the module doc)
ALIASES = {OCI__DASK_WORKER_PORT: "OCI__WORKER_PORT", OCI__DASK_NANNY_PORT: "OCI__NANNY_PORT",
           OCI__DASK_DEATH_TIMEOUT: "OCI__WORKER_TIMEOUT"}
DEFAULT_SCHEDULER_PORT = 8786
DEFAULT_DASHBOARD_PORT = 8787
# Dask's own configuration variables for a Client in the entry script (dask.config from env).
TLS_ENV = {
    OCI__CA_DOWNLOAD_LOCATION: "DASK_DISTRIBUTED__COMM__TLS__CA_FILE",
    OCI__CERTIFICATE_DOWNLOAD_LOCATION: "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT",
    OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION: "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY",
}


def tls_files(environ) -> dict[str, str] | None:
    """``{OCI__*_DOWNLOAD_LOCATION: path}`` when TLS is configured, else None. Configured means
    the certificate OCIDs are set (the node downloads them) or all three locations are set."""
    from ..runtime.certs import certificate_locations

    by_ocid = bool(environ.get(OCI__CERTIFICATE_OCID) and environ.get(OCI__CERTIFICATE_AUTHORITY_OCID))
    by_files = all(environ.get(k) for k in TLS_ENV)
    if not (by_ocid or by_files):
        return None
    return certificate_locations(dict(environ))


def dask_cli() -> list[str]:
    return engine_command("dask", "dask", "dask")


def teardown_preload(cli: list[str]) -> list[str]:
    """``--preload`` of :mod:`._dask_teardown`: by module name for a ``dask`` of this Python
    environment (it imports fsm_cluster), else by file path (Dask copies the file and imports it)."""
    from ..runtime.process import scripts_dirs

    ours = cli[:2] == [sys.executable, "-m"] or os.path.dirname(cli[0]) in scripts_dirs()
    return ["--preload", TEARDOWN_PRELOAD if ours else os.path.join(os.path.dirname(__file__), "_dask_teardown.py")]


STUCK_CLOSE = 1.0  # s: a dask worker that closes takes ~0.15 s; one still closing after this is stuck


def leave(child, wait: float, stuck: float = STUCK_CLOSE) -> None:
    """SIGTERM to the command ``child`` runs (under the node's guard process, its child), not to
    its process group; wait up to ``wait`` s for it to end.

    Dask's nanny closes its worker process and waits for it. That close can hang: the nanny's
    request and the end of the worker's scheduler connection, in the same millisecond, start two
    closes in the worker process, one waiting on the other for good (the worker's log: "Nanny
    asking worker to close", then "Stopping worker … worker-handle-scheduler-connection-broken",
    then nothing; 1 life in 6 here, 3 of 5 under load), and the nanny with it, until the node's
    grace ran out (5 s). So when the nanny is still there after ``stuck`` s, the processes under it
    get SIGTERM too (the worker process ends; the nanny, its wait over, ends itself; its resource
    tracker ignores the signal and follows the nanny)."""
    import contextlib
    import signal
    import time

    import psutil

    from ..runtime.process import GUARDED

    try:
        top = psutil.Process(child.pid)
        procs = top.children() if GUARDED else [top]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        end = time.monotonic() + wait
        _, alive = psutil.wait_procs(procs, timeout=min(wait, stuck))
        if alive:
            below = [c for p in alive for c in _children(p)]
            log.info("dask worker still closing after %.1f s: ending the %d process(es) under its nanny",
                     stuck, len(below))
            for c in below:
                with contextlib.suppress(psutil.Error):  # (gone meanwhile)
                    c.send_signal(signal.SIGTERM)
            psutil.wait_procs(alive, timeout=max(0.0, end - time.monotonic()))
    except psutil.Error:
        pass


def _children(p) -> list:
    import psutil

    try:
        return p.children()
    except psutil.Error:
        return []


def worker_options(environ) -> list[str]:
    """``--worker-port`` / ``--nanny-port`` / ``--death-timeout`` from their variables (or the
    oracle-ads aliases); a bad value is a RuleError naming the variable that set it."""
    out = []
    for name, flag in ((OCI__DASK_WORKER_PORT, "--worker-port"), (OCI__DASK_NANNY_PORT, "--nanny-port")):
        ports = validate_port_range(*setting(environ, name, ALIASES))
        if ports is not None:
            out += [flag, ports]
    timeout = validate_seconds(*setting(environ, OCI__DASK_DEATH_TIMEOUT, ALIASES))
    if timeout is not None:
        out += ["--death-timeout", f"{timeout:f}".rstrip("0").rstrip(".")]  # seconds, never 1e+06
    return out


ClusterStatus = namedtuple("ClusterStatus", ["worker_count"])


class DaskProvider(EngineProvider):
    """Dask scheduler on MAIN, one ``dask worker`` per WORKER node."""
    KIND = "DASK"
    ELASTIC = True  # a lost worker: the engine reschedules on the others; the replacement joins
    EXPORTS = (DASK_SCHEDULER_ADDRESS, SCHEDULER_IP, OCI__DASK_SCHEDULER_PORT)

    scheduler = None
    worker = None

    # -- configuration ---------------------------------------------------------------------------
    def configuration(self, conf: dict | None = None) -> dict:
        conf = dict(conf or {})
        if self.mode == "MAIN":
            port = port_setting(self.settings.variables, OCI__DASK_SCHEDULER_PORT, DEFAULT_SCHEDULER_PORT, self.ip)
            proto = "tls" if tls_files(self.settings.variables) else "tcp"
            conf[DASK_SCHEDULER_ADDRESS] = f"{proto}://{self.ip}:{port}"
            conf[SCHEDULER_IP] = self.ip
            conf[OCI__DASK_SCHEDULER_PORT] = str(port)
        return conf

    @property
    def scheduler_address(self) -> str:
        addr = self.exported.get(DASK_SCHEDULER_ADDRESS)
        if not addr:
            raise NodeFailure(f"{DASK_SCHEDULER_ADDRESS} missing from MAIN's configuration")
        return addr

    def _tls_args(self) -> list[str]:
        files = tls_files(self.settings.variables)
        if not files:
            return []
        missing = [f"{k}={v}" for k, v in files.items() if not os.path.isfile(v)]
        if missing:
            raise NodeFailure("Dask TLS: certificate file(s) not found: " + ", ".join(missing))
        return ["--tls-ca-file", files[OCI__CA_DOWNLOAD_LOCATION],
                "--tls-cert", files[OCI__CERTIFICATE_DOWNLOAD_LOCATION],
                "--tls-key", files[OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION]]

    def security(self):
        """A ``distributed.Security`` for TLS clusters, else None."""
        files = tls_files(self.settings.variables)
        if not files:
            return None
        from distributed import Security

        return Security(tls_ca_file=files[OCI__CA_DOWNLOAD_LOCATION],
                        tls_client_cert=files[OCI__CERTIFICATE_DOWNLOAD_LOCATION],
                        tls_client_key=files[OCI__CERTIFICATE_KEY_DOWNLOAD_LOCATION],
                        require_encryption=True)

    # -- engine ----------------------------------------------------------------------------------
    def start_main(self) -> None:
        addr = self.scheduler_address
        port = addr.rsplit(":", 1)[1]
        dash = port_setting(self.settings.variables, OCI__DASK_DASHBOARD_PORT, DEFAULT_DASHBOARD_PORT, self.ip)
        cli = dask_cli()
        cmd = cli + ["scheduler", "--host", self.ip, "--port", port, "--protocol", addr.split("://", 1)[0],
                     "--dashboard-address", f"{self.ip}:{dash}"] + teardown_preload(cli)
        cmd += self._tls_args() + start_args(self.settings.variables)
        # the workers get at most 60 % of the teardown grace to leave before the scheduler closes
        wait = min(3.0, 0.6 * self.settings.teardown_grace)
        self.scheduler = self.spawn("dask scheduler", cmd, env={**self.child_env(), "FSM_DASK_CLOSE_WAIT": f"{wait:g}"})

    def start_worker(self) -> None:
        cli = dask_cli()
        cmd = cli + ["worker", self.scheduler_address, "--host", self.ip, "--name", self.node_id] + teardown_preload(cli)
        if is_loopback(self.ip):  # the worker dashboard otherwise listens on every interface
            cmd += ["--dashboard-address", f"{self.ip}:0"]
        cmd += worker_options(self.settings.variables) + self._tls_args() + start_args(self.settings.variables)
        self.worker = self.spawn("dask worker", cmd)

    def stop(self) -> None:
        """A WORKER whose cluster ends (the stop marker is there) lets its ``dask worker`` close the
        way Dask closes one (:func:`leave`, within the teardown grace) before the node ends what is
        left; MAIN's scheduler closes its workers first itself (:mod:`._dask_teardown`)."""
        if (self.mode != "MAIN" and self.worker is not None and self.worker.poll() is None
                and self.stop_marker is not None):
            leave(self.worker, self.settings.teardown_grace)
        super().stop()

    def expected_workers(self) -> list[str]:
        return [r.node for r in self.roster if r.mode == "WORKER"]

    def joined_nodes(self, client) -> set[str]:
        """Node ids with at least one worker in the scheduler (``--nworkers k`` names them
        ``<node>-0`` … ``<node>-<k-1>``)."""
        want = set(self.expected_workers())
        names = {str(w.get("name")) for w in client.scheduler_info(n_workers=-1)["workers"].values()}
        return {n for n in want if n in names or any(x.startswith(n + "-") for x in names)}

    def check_cluster_status(self) -> ClusterStatus:
        """oracle-ads' on-demand status: ``ClusterStatus(worker_count=…)``, the WORKER nodes with a
        worker in the scheduler, asked through a Client that is closed before this returns. Not
        called by fsm_cluster (the periodic check is :meth:`check_engine`)."""
        from distributed import Client

        with Client(self.scheduler_address, security=self.security(), timeout="10s",
                    set_as_default=False) as client:
            return ClusterStatus(worker_count=len(self.joined_nodes(client)))

    def engine_ready(self) -> None:
        """Block (ticking heartbeats) until every WORKER node joined the scheduler."""
        from distributed import Client

        want = set(self.expected_workers())
        client = None

        def connected():
            nonlocal client
            self.check_engine()
            try:
                client = Client(self.scheduler_address, security=self.security(), timeout="2s",
                                set_as_default=False)
            except OSError:
                return False
            return True

        self.wait_until(connected, self.time_out, f"the Dask scheduler at {self.scheduler_address}")
        try:
            def all_joined():
                self.check_engine()
                joined = self.joined_nodes(client)
                log.debug("dask workers joined: %d/%d", len(joined), len(want))
                return joined >= want

            self.wait_until(all_joined, self.time_out, f"{len(want)} Dask worker node(s) to join")
            log.info("%s: all %d Dask worker node(s) joined %s", self.node_id, len(want),
                     self.scheduler_address)
        finally:
            client.close()

    def entry_env(self) -> dict[str, str]:
        env = super().entry_env()
        env[DASK_SCHEDULER_ADDRESS] = self.scheduler_address
        files = tls_files(self.settings.variables)
        if files:
            for oci_name, dask_name in TLS_ENV.items():
                env[dask_name] = files[oci_name]
            env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
        return env


class DaskSpecBuilder(EngineSpecBuilder):
    PROVIDER = DaskProvider
    PORTS = (OCI__DASK_SCHEDULER_PORT, OCI__DASK_DASHBOARD_PORT)

    def check(self, env: dict[str, str]) -> None:
        super().check(env)
        worker_options(env)
