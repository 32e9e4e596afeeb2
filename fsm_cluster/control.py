"""The node's side of the control channel (:mod:`fsm_cluster.channel`): how its events reach the
node's life.

MAIN serves the channel from the moment it begins its life and publishes the address in its
configuration (``extra["control"]``); a WORKER/PS connects once it accepted that configuration.
Over it, what today takes a heartbeat interval (or a timeout) arrives at once:

* a peer's process died (its connection dropped) → the node fails, naming it;
* a peer froze or became unreachable (no ping / pong within OCI__HEARTBEAT_TIMEOUT) → the same;
* the cluster's outcome (MAIN's stop marker, or a worker's failure) → the node ends the same way,
  as if it had read the marker (a ``complete`` waits for this node's own running code).

The events are handed to the node's thread (:meth:`ClusterProvider.hand_over`), which interrupts
a sleep or a blocking hook exactly as the keeper does. The work dir stays the record and the
fallback: with ``OCI__CONTROL=off``, on a simulated clock, or when the connection cannot be made
(logged once), the node works through the files alone.
"""

from __future__ import annotations

import logging
import secrets
import threading

from .errors import NodeFailure, StopRequested

log = logging.getLogger(__name__)

CONTROL_KEY = "control"  # MAIN's NodeConfig.extra: "host:port" of its channel
SECRET_FILE = "channel_secret"  # the channel's key, for nodes handed no OCI__CLUSTER_SECRET
JOIN_GRACE = 10.0  # s MAIN waits at its end for roster nodes that have not joined the channel yet


class Control:
    """One per node; inert (``enabled`` False) when the channel is off for this node."""

    def __init__(self, node) -> None:
        self.node = node
        s = node.settings
        self.enabled = bool(s.control and getattr(node.clock, "simulated", True) is False)
        self.server = None
        self.client = None
        self.owner = None  # the node's own thread (events are raised there)
        self._lock = threading.Lock()
        self.registered: set[str] = set()  # MAIN: the nodes that joined the channel
        self.outcome = None  # MAIN: the outcome it announced (sent to a node that joins later)

    def secret(self) -> bytes | None:
        """The channel's key: OCI__CLUSTER_SECRET; for nodes handed none (started by hand), a random
        one MAIN writes in the work dir (``channel_secret``, 0600 on a local disk), which keeps out
        whoever cannot read the work dir. None: a worker that finds none (MAIN has no channel)."""
        n = self.node
        if n.settings.cluster_secret:
            return n.settings.cluster_secret.encode()
        wd = n.workdir
        if n.mode == "MAIN":
            if wd.local:
                import os

                from .channel import load_or_create_secret

                path = wd.path(SECRET_FILE)
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)  # a new cluster's dir
                return load_or_create_secret(path)
            if not wd.exists(SECRET_FILE):
                wd.write_bytes(SECRET_FILE, secrets.token_hex(32).encode(), exclusive=True)
        data = wd.read_bytes(SECRET_FILE, 1024)
        return data.strip() if data else None

    # -- MAIN ----------------------------------------------------------------------------------
    def serve(self) -> str | None:
        """MAIN, as its life begins: listen; returns ``host:port`` to publish (None: off)."""
        if not self.enabled or self.node.mode != "MAIN":
            return None
        from .channel import ChannelServer

        n, s = self.node, self.node.settings
        self.owner = n.clock.current()
        try:
            self.server = ChannelServer(self.secret(), n.ip, s.control_port, timeout=s.heartbeat_timeout,
                                        on_register=self._on_register, on_lost=self._on_lost,
                                        on_outcome=self._on_outcome).start()
        except Exception as e:  # noqa: BLE001 - no channel (port, key file): the work dir carries everything
            log.warning("%s: control channel not started (%s); the work dir carries everything", n.node_id, e)
            return None
        host, port = self.server.address
        log.info("%s: control channel on %s:%d", n.node_id, host, port)
        return f"{host}:{port}"

    def _on_register(self, msg, conn_id) -> None:
        n = self.node
        if msg.life and n.life and msg.life != n.life:
            self.server.disconnect(conn_id, "another life of this cluster")
            return
        with self._lock:
            self.registered.add(msg.node)
            outcome = self.outcome
        if outcome is not None:  # the cluster ended before this node joined: tell it at once
            self.server.send(conn_id, outcome)

    # -- WORKER / PS ---------------------------------------------------------------------------
    def join(self, main_config) -> None:
        """A worker that accepted MAIN's configuration: connect (once; a failure is logged)."""
        address = (main_config.extra or {}).get(CONTROL_KEY) if main_config is not None else None
        if not self.enabled or self.client is not None or not address or self.node.mode == "MAIN":
            return
        from .channel import ChannelClient, ChannelUnavailable, Register

        n, s = self.node, self.node.settings
        self.owner = n.clock.current()
        host, _, port = str(address).rpartition(":")
        hello = Register(node=n.node_id, mode=n.mode, run_id=n.run_id, rank=n.settings.rank, ip=n.ip,
                         host=n.host, life=n.life)
        try:
            secret = self.secret()
        except Exception as e:  # noqa: BLE001 - an unreadable key file: the work dir carries everything
            log.warning("%s: control channel key unreadable (%s); the work dir carries everything", n.node_id, e)
            return
        if not secret:
            return
        client = ChannelClient(host, int(port), secret, hello, ping_interval=s.heartbeat_interval,
                               timeout=s.heartbeat_timeout, on_outcome=self._on_outcome, on_lost=self._on_lost)
        try:
            client.connect()
        except ChannelUnavailable as e:
            log.warning("%s: control channel to MAIN at %s unavailable (%s); the work dir carries "
                        "everything", n.node_id, address, e)
            return
        self.client = client
        log.info("%s: joined MAIN's control channel at %s", n.node_id, address)

    # -- both ----------------------------------------------------------------------------------
    def _on_lost(self, *args) -> None:
        """MAIN: ``(node, why)`` — a worker's process died or froze; a worker: ``(why,)`` — MAIN's."""
        n = self.node
        peer, why = (args[0], args[1]) if len(args) == 2 else ("MAIN", args[0])
        if n.ending is not None or not (n.is_live() or n.state.value == "complete"):
            return
        if n.mode == "MAIN" and peer not in {r.node for r in n.roster}:
            return  # not (yet) a member: its registration file is the record
        self._raise(NodeFailure(f"{peer}: lost on the control channel ({why})"))

    def _on_outcome(self, msg) -> None:
        n = self.node
        marker = msg.to_marker()
        if n.ending is not None or not n.rendezvous.belongs_here(marker):
            return
        code = n.code_process
        if marker.outcome == "failed" and code is not None and code.poll() not in (None, 0):
            return  # this node's own code failed too: its thread reports its own failure
        with self._lock:
            if n.watch.stop_marker is None:
                n.watch.stop_marker = marker  # learnt, as from the stop file
        exc = StopRequested(marker.reason, marker.exit_code, marker.outcome, marker.node)
        if marker.outcome == "complete" and n.own_code_running():
            n._defer(exc)
            return
        self._raise(exc)

    def _raise(self, exc: BaseException) -> None:
        if self.owner is not None:
            self.node.hand_over(exc, self.owner)

    def announce(self, marker) -> None:
        """The node's stop marker is decided: tell the cluster at once (MAIN: every node; a
        worker: MAIN)."""
        if marker is None:
            return
        from .channel import OutcomeMsg

        msg = OutcomeMsg.from_marker(marker)
        try:
            if self.server is not None:
                with self._lock:
                    self.outcome = msg
                self.server.broadcast_outcome(msg)
            elif self.client is not None:
                self.client.send_outcome(msg)
        except Exception as e:  # noqa: BLE001 - the work dir has the marker
            log.warning("%s: could not announce the outcome on the control channel: %s", self.node.node_id, e)

    def close(self) -> None:
        """End the channel. MAIN first gives the roster's nodes that have not joined yet (a worker
        reads MAIN's configuration up to one back-off cap after it appeared; a job that ends at once
        may end before) a bounded moment to join and hear the outcome."""
        if self.server is not None and self.outcome is not None:
            n = self.node
            expected = {r.node for r in n.roster if r.node != n.node_id and not (
                r.node in n.rendezvous.workers and n.rendezvous.workers[r.node].legacy)}
            deadline = n.clock.now() + min(n.settings.heartbeat_timeout, JOIN_GRACE)
            while n.clock.now() < deadline:
                with self._lock:
                    if expected <= self.registered:
                        break
                n.clock.sleep(0.05)
        for part in (self.client, self.server):
            if part is not None:
                try:
                    part.close()
                except Exception as e:  # noqa: BLE001 - the life is over
                    log.debug("closing the control channel: %s", e)
        self.client = self.server = None
