"""The node's side of the control channel (:mod:`fsm_cluster.wire.channel`), and the work-dir file
a worker off the channel asks MAIN for a restart with (``<node>_failure.json``).

MAIN serves the channel from the moment it begins its life and publishes the address in its state
file (``control``, written at its first heartbeat, before any node registered) and in its
configuration (``extra["control"]``). A WORKER/PS that waits for MAIN's configuration reads MAIN's
state file and connects as soon as the address is there. Formation then runs on events: a node's
registration wakes MAIN's wait for the roster (one listing, one read of the new config), and the
roster push MAIN sends once its configuration is written wakes every waiting node (one read of it:
the push carries the life, not the entries, which the file holds — O(N) bytes from MAIN, not O(N²)).
Over it, what today takes a heartbeat interval (or a timeout) arrives at once:

* a peer's process died (its connection dropped) → the node fails, naming it;
* a peer froze or became unreachable (no ping / pong within OCI__HEARTBEAT_TIMEOUT) → the same;
* the cluster's outcome (MAIN's stop marker, or a worker's failure) → the node ends the same way,
  as if it had read the marker (a ``complete`` waits for this node's own running code).

:class:`Control` decides nothing about the node's life: each message becomes an event
(:mod:`fsm_cluster.node.decisions`) given to ``dispatch``, the node's dispatcher, which decides and
hands what the node must take to its thread (interrupting a sleep or a blocking hook exactly as the
keeper does). What Control keeps is the channel's own bookkeeping: who joined, who was lost before
the roster was out, the outcome to tell a node that joins late. The work dir stays the record and the
fallback: with ``OCI__CONTROL=off``, on a simulated clock, or when the connection cannot be made
(logged once), the node works through the files alone.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Callable

from ..errors import CodeFailed, NodeFailure, NodeLost, RestartRequested, StopRequested
from .events import Kind

log = logging.getLogger(__name__)

CONTROL_KEY = "control"  # MAIN's NodeConfig.extra: "host:port" of its channel
CHANNEL_KEY = "channel"  # a worker's NodeConfig.extra: true when it will join MAIN's channel
RESTART_POLICY_KEY = "restart_policy"  # a worker's NodeConfig.extra: its role's OCI__RESTART_POLICY
REPLACES_KEY = "replaces"  # a worker's NodeConfig.extra: the lost node it replaces (OCI__REPLACES)
SECRET_FILE = "channel_secret"  # the channel's key, for nodes handed no OCI__CLUSTER_SECRET
JOIN_GRACE = 10.0  # s MAIN waits at its end, at most, for roster nodes that can still join the channel (farewell)
SLOW = 2  # with the channel up, the work-dir heartbeat and watch run every SLOW heartbeat intervals


def failure_name(node: str) -> str:
    """The failure request file of a node off MAIN's channel (see :meth:`Control.asks_for_restart`)."""
    return f"{node}_failure.json"


class Control:
    """One per node; inert (``enabled`` False) when the channel is off for this node.

    ``me`` is the node's RosterEntry-like identity (node, mode, run_id, rank, ip, host);
    ``rendezvous`` gives the life and the roster; callbacks: ``dispatch(event)`` (an event from the
    channel's thread), ``wake()`` (a wait looks again at once), ``look(listing)`` (a listing the
    channel took stands for the watch's), ``listing()`` (the watch's last listing),
    ``quiet(node, since, ended)`` (a stall report, for MAIN's watchdog)."""

    def __init__(self, me, settings, clock, workdir, rendezvous, *, dispatch: Callable, wake: Callable[[], None],
                 look: Callable, listing: Callable[[], dict], quiet: Callable) -> None:
        self.me, self.settings, self.clock, self.workdir, self.rendezvous = me, settings, clock, workdir, rendezvous
        self.node_id, self.mode = me.node, me.mode
        self._dispatch, self._wake, self._look, self._listing, self._quiet = dispatch, wake, look, listing, quiet
        self.enabled = bool(settings.control and getattr(clock, "simulated", True) is False)
        self.server = None
        self.client = None
        self._lock = threading.Condition()  # (notified when a node joins or is lost: MAIN's end waits on it)
        self.registered: set[str] = set()  # MAIN: the nodes that joined the channel
        self.lost_early: dict[str, str] = {}  # MAIN: nodes whose connection dropped before the roster
        self.gone: set[str] = set()  # MAIN: roster nodes whose connection dropped
        self.tried: set[tuple[str, str]] = set()  # a worker: (address, life) it could not reach (logged once)
        self.joined_life: str | None = None  # a worker: the life of the MAIN it joined (None: unknown)
        self.roster_came = False  # a worker: MAIN pushed its roster (its configuration is out)
        self._state_fp = None  # a worker: the version of MAIN's state file it last read while joining
        self.config_read_at = 0.0  # a worker: when it last read MAIN's configuration while on the channel
        self.outcome = None  # MAIN: the outcome it announced (sent to a node that joins later)
        self._failure_fps: dict[str, tuple] = {}  # MAIN: failure request files taken (by version)
        self.done: set[str] = set()  # MAIN: nodes whose code completed, as they said on the channel

    def secret(self) -> bytes | None:
        """The channel's key: OCI__CLUSTER_SECRET; for nodes handed none (started by hand), a fresh
        random one MAIN makes for each life and writes in the work dir (``channel_secret``, 0600 on
        a local disk, create-if-absent; the previous life's went to ``previous/`` with its files).
        A key file MAIN did not write this life (planted before it started) is moved aside and
        never used; one written while MAIN makes its own means no channel. Whoever can read the
        work dir can join. None: a worker that finds none (MAIN has no channel)."""
        if self.settings.cluster_secret:
            return self.settings.cluster_secret.encode()
        wd = self.workdir
        if self.mode == "MAIN":
            key = getattr(self, "_life_key", None)
            if key is None:
                from ..errors import ProtocolError
                from .workdir import PREVIOUS

                if wd.exists(SECRET_FILE):
                    aside = f"{PREVIOUS}/unclaimed-{secrets.token_hex(3)}/{SECRET_FILE}"
                    log.warning("%s: %s was there before this MAIN made its key (not this life's): moved to "
                                "%s, never used", self.node_id, wd.url(SECRET_FILE), aside)
                    wd.move(SECRET_FILE, aside)
                key = secrets.token_hex(32).encode()
                if not wd.write_bytes(SECRET_FILE, key, exclusive=True):
                    raise ProtocolError(f"{wd.url(SECRET_FILE)} was written by someone else while MAIN made "
                                        "its key: refused")
                self._life_key = key
            return key
        data = wd.read_bytes(SECRET_FILE, 1024)
        return data.strip() if data else None

    # -- MAIN ----------------------------------------------------------------------------------
    def serve(self) -> str | None:
        """MAIN, as its life begins: listen; returns ``host:port`` to publish (None: off)."""
        if not self.enabled or self.mode != "MAIN":
            return None
        from .channel import ChannelServer

        s = self.settings
        try:
            self.server = ChannelServer(self.secret(), self.me.ip, s.control_port, timeout=s.heartbeat_timeout,
                                        on_register=self._on_register, on_lost=self._on_lost,
                                        on_outcome=self._on_outcome, on_failure=self._on_failure,
                                        on_quiet=self._on_quiet, on_done=self._on_done,
                                        nodes=1 + s.worker_count + s.ps_count).start()
        except Exception as e:  # noqa: BLE001 - no channel (port, key file): the work dir carries everything
            log.warning("%s: control channel not started (%s); the work dir carries everything", self.node_id, e)
            return None
        host, port = self.server.address
        log.info("%s: control channel on %s:%d", self.node_id, host, port)
        return f"{host}:{port}"

    def _on_register(self, msg, conn_id) -> None:
        if msg.life and self.rendezvous.life and msg.life != self.rendezvous.life:
            self.server.disconnect(conn_id, "another life of this cluster")
            return
        from .channel import Roster

        with self._lock:  # (the sends queued before MAIN's end, woken by it, closes the channel)
            self.registered.add(msg.node)
            self.lost_early.pop(msg.node, None)
            count = len(self.registered)
            if self.rendezvous.roster:  # MAIN's configuration is out (the broadcast may have gone before it joined)
                self.server.send(conn_id, Roster(entries=[], life=self.rendezvous.life))
            if self.outcome is not None:  # the cluster ended before this node joined: tell it at once
                self.server.send(conn_id, self.outcome)
            self._lock.notify_all()
        log.info("%s: %s joined the control channel (%d joined)", self.node_id, msg.node, count)
        self._wake()  # MAIN's wait for the roster looks again now

    def publish_roster(self) -> None:
        """MAIN wrote its configuration: push the roster, which wakes every node waiting for it
        (each then reads the configuration once: the file stays the record, signed). The push
        names the life only: with the entries (~94 B each) it was N copies of an N-entry roster, 94
        MB from MAIN for 1,000 nodes, each parsed by a node that then reads the file anyway."""
        if self.server is None:
            return
        gone = sorted(r.node for r in self.rendezvous.roster if r.node in self.lost_early)
        if gone:  # registered, then its process died before the roster was complete
            raise NodeFailure(f"{gone[0]}: lost on the control channel ({self.lost_early[gone[0]]})")
        self.server.broadcast_roster([], life=self.rendezvous.life)

    def config_worth_reading(self) -> bool:
        """A worker waiting for MAIN's configuration reads it at each poll, unless it is on MAIN's
        channel and no roster came since it joined (MAIN pushes one when it writes its
        configuration, and to a node that joins after that): then only once a heartbeat interval."""
        if not self.carries_formation() or self.roster_came:
            return True
        now = self.clock.now()
        if now - self.config_read_at >= self.settings.heartbeat_interval:
            self.config_read_at = now
            return True
        return False

    def _on_roster(self, msg) -> None:
        self.roster_came = True
        self._wake()

    def carries_formation(self) -> bool:
        """A worker on MAIN's channel: MAIN's roster push wakes its wait for MAIN's configuration,
        which then polls the work dir only once a heartbeat interval (the fallback)."""
        return self.client is not None and self.client.connected

    def pace(self) -> int:
        """How many heartbeat intervals apart the work-dir beat and watch run: SLOW while the
        channel carries liveness and outcomes for this node (a worker connected; MAIN serving and
        every fsm_cluster node of the roster joined), else 1."""
        if self.client is not None:
            return SLOW if self.client.connected else 1
        if self.server is None or not self.rendezvous.roster:
            return 1
        with self._lock:
            return SLOW if self._expected() <= self.registered else 1

    def _expected(self, joining: bool = False) -> set[str]:
        """MAIN: the roster's fsm_cluster nodes (not itself, not oracle-ads nodes); ``joining``:
        those of them that said they will join the channel and have not been lost."""
        workers = self.rendezvous.workers
        out = {r.node for r in self.rendezvous.roster if r.node in workers and not workers[r.node].legacy}
        if joining:
            out = {w for w in out if (workers[w].extra or {}).get(CHANNEL_KEY) and w not in self.gone}
        return out

    # -- WORKER / PS ---------------------------------------------------------------------------
    def look_early(self) -> bool:
        """A worker waiting for MAIN's configuration, at each poll: join MAIN's channel as soon as
        MAIN's state file names it (one small read per poll until joined), so that MAIN learns this
        node's registration at once and can push the roster. Returns whether MAIN's configuration
        is worth reading at this poll (on the channel: when the roster came, or once an interval)."""
        if not self.enabled or self.mode == "MAIN":
            return True
        if self.client is None:
            from ..errors import ProtocolError
            from .workdir import MAIN_NODE, config_name, state_name
            listing = self.workdir.listing()  # one request: which of MAIN's files are there (and the watch)
            self._look(listing)
            fp = listing.get(state_name(MAIN_NODE))
            if fp is None or fp == self._state_fp:
                return config_name(MAIN_NODE) in listing
            self._state_fp = fp
            try:
                main = self.workdir.read_state(MAIN_NODE)
            except ProtocolError:
                return True  # forged or torn: MAIN's configuration decides
            if main is None or not main.control or (main.life and main.life == self.rendezvous.stale_life):
                return config_name(MAIN_NODE) in listing  # MAIN serves no channel (or not this life's)
            self._connect(main.control, main.life)
            if self.client is None:
                return config_name(MAIN_NODE) in listing
        return self.config_worth_reading()

    def accepted(self, main_config) -> None:
        """A worker accepted MAIN's configuration: be on that life's channel (connect if not yet;
        reconnect if the channel joined early was another life's)."""
        address = (main_config.extra or {}).get(CONTROL_KEY) if main_config is not None else None
        if not self.enabled or not address or self.mode == "MAIN":
            return
        if self.client is not None:
            if self.joined_life == main_config.life and self.client.connected:
                return
            self.client.close("another life's MAIN")
            self.client = None
        self._connect(str(address), main_config.life)

    def _connect(self, address: str, life: str) -> None:
        if (address, life) in self.tried:
            return
        from .channel import ChannelClient, ChannelUnavailable, Register

        s = self.settings
        host, _, port = address.rpartition(":")
        hello = Register(node=self.node_id, mode=self.mode, run_id=self.me.run_id, rank=self.settings.rank, ip=self.me.ip,
                         host=self.me.host, life=self.rendezvous.life)
        try:
            secret = self.secret()
            if not secret:
                return  # MAIN has not written its key file: it serves no channel yet
            client = ChannelClient(host, int(port), secret, hello, ping_interval=s.heartbeat_interval,
                                   timeout=s.heartbeat_timeout, on_outcome=self._on_outcome,
                                   on_lost=self._on_lost, on_roster=self._on_roster,
                                   on_restart=self._on_restart, on_dump=self._on_dump)
            client.connect()
        except (ChannelUnavailable, ValueError, OSError) as e:
            self.tried.add((address, life))
            log.warning("%s: control channel to MAIN at %s unavailable (%s); the work dir carries "
                        "everything", self.node_id, address, e)
            return
        self.client, self.joined_life = client, life
        self.config_read_at = self.clock.now()  # (read just before: MAIN's push tells when to read again)
        log.info("%s: joined MAIN's control channel at %s", self.node_id, address)

    # -- both ----------------------------------------------------------------------------------
    def _on_lost(self, *args) -> None:
        """MAIN: ``(node, why)`` — a worker's process died or froze; a worker: ``(why,)`` — MAIN's."""
        peer, why = (args[0], args[1]) if len(args) == 2 else ("MAIN", args[0])
        if len(args) == 1 and self.client is not None and self.client.declared_lost is not None:
            peer, why = self.node_id, f"{self.client.declared_lost}; MAIN gave it up"  # it was this node
        if self.mode == "MAIN":
            with self._lock:
                if peer in {r.node for r in self.rendezvous.roster}:
                    self.gone.add(peer)  # (MAIN no longer waits for it at its end)
                    self._lock.notify_all()
                else:  # not (yet) a member: if it becomes one, the roster fails at once
                    self.lost_early[peer] = why
                    self.registered.discard(peer)
                    return
        from .channel import SILENT

        self._event(Kind.PEER_LOST, NodeLost(f"{peer}: lost on the control channel ({why})", peer), node=peer,
                    silent=why.endswith(SILENT))

    def _on_outcome(self, msg) -> None:
        marker = msg.to_marker()
        if not self.rendezvous.belongs_here(marker):
            return  # another life's
        self._event(Kind.OUTCOME, StopRequested(marker.reason, marker.exit_code, marker.outcome, marker.node),
                    node=marker.node, marker=marker)

    def _on_dump(self, msg) -> None:
        self._event(Kind.DUMP, None, request=msg.id)

    def _event(self, kind, exc, **fields) -> None:
        from .events import Event, Source

        self._dispatch(Event(kind, Source.CHANNEL, exc, **fields))

    # -- recovery ------------------------------------------------------------------------------
    def _on_failure(self, msg) -> None:
        """MAIN: a worker's code failed and its policy may retry: MAIN's thread decides."""
        failed = CodeFailed(f"{msg.node}: {msg.reason}", msg.node, msg.exit_code, msg.after)
        self._event(Kind.PEER_FAILED, failed, node=msg.node)

    # -- the stall watchdog (fsm_cluster.runtime.stall) ------------------------------------------------
    def _on_quiet(self, msg) -> None:
        """MAIN: a node's code is quiet (or active again)."""
        self._quiet(msg.node, msg.since, msg.ended)

    def _on_done(self, msg) -> None:
        """MAIN: a node's code completed (its done file says the same, later): look again now."""
        if msg.life and self.rendezvous.life and msg.life != self.rendezvous.life:
            return
        with self._lock:
            self.done.add(msg.node)
        self._wake()

    def send_done(self) -> bool:
        """A worker whose code completed tells MAIN at once (the done file stays the record)."""
        if self.client is None or not self.client.connected:
            return False
        from .channel import DoneMsg

        return self.client.send_done(DoneMsg(node=self.node_id, life=self.rendezvous.life))

    def send_quiet(self, since: float | None, ended: bool) -> bool:
        """A worker: tell MAIN its code's quiet now. False when not on MAIN's channel (its state file
        tells)."""
        if self.client is None or not self.client.connected:
            return False
        from .channel import QuietMsg

        return self.client.send_quiet(QuietMsg(node=self.node_id, since=since, ended=ended))

    def _on_restart(self, msg) -> None:
        """A worker: MAIN restarts the cluster's code."""
        from .models import RestartRecord

        if msg.life and self.rendezvous.life and msg.life != self.rendezvous.life:
            return  # another life's
        record = RestartRecord(count=msg.count, node=msg.node, reason=msg.reason, exit_code=msg.exit_code,
                               waiting_for=msg.waiting_for)
        self._event(Kind.RESTART, RestartRequested(record), node=msg.node, count=msg.count)

    def ask_for_restart(self, e, policy: str) -> bool:
        """A worker whose own code failed, under a policy that may retry it (recovery decided so):
        ask MAIN (True), which answers with a restart or the cluster's failure — over the channel,
        or off it through a request file (``<node>_failure.json``) MAIN reads at its next look,
        answered in MAIN's state file. False: the request could not be made (the node fails)."""
        log.info("%s: %s; asking MAIN for a restart (OCI__RESTART_POLICY=%s)", self.node_id, e.reason, policy)
        if self.client is not None and self.client.connected:
            from .channel import FailureMsg

            if self.client.send_failure(FailureMsg(node=self.node_id, exit_code=e.code, reason=e.reason[:4000],
                                                   after=getattr(e, "after", None))):
                return True
        # off the channel: a request file MAIN finds at its next look (its answer: its state file)
        from .models import FailureRequest

        try:
            self.workdir.write(failure_name(self.node_id), FailureRequest(node=self.node_id, exit_code=e.code,
                                                                    reason=e.reason[:4000], life=self.rendezvous.life,
                                                                    after=getattr(e, "after", None)))
        except Exception as err:  # noqa: BLE001 - the node fails as without a policy
            log.warning("%s: could not ask MAIN for a restart: %s", self.node_id, err)
            return False
        return True

    def failure_requests(self) -> None:
        """MAIN, at each look: a roster node's failure request file (each version once, of this
        life) is that node's ``failure`` message."""
        members = {r.node for r in self.rendezvous.roster}
        for node in members - {self.node_id}:
            name = failure_name(node)
            fp = self._listing().get(name)
            if fp is None or self._failure_fps.get(name) == fp:
                continue
            self._failure_fps[name] = fp
            from .models import FailureRequest

            try:
                req = self.workdir.read(name, FailureRequest)
            except Exception as e:  # noqa: BLE001 - forged / unreadable: refused, logged once
                log.warning("%s: %s refused: %s", self.node_id, name, e)
                continue
            if req is None or req.node != node or (req.life and req.life != self.rendezvous.life):
                continue
            raise CodeFailed(f"{node}: {req.reason}", node, req.exit_code, req.after)

    def announce_restart(self, record) -> None:
        """MAIN: tell every node on the channel (the others read it in MAIN's state file)."""
        if self.server is None:
            return
        from .channel import RestartMsg

        self.server.broadcast(RestartMsg(count=record.count, node=record.node, reason=record.reason[:4000],
                                         exit_code=record.exit_code, waiting_for=record.waiting_for,
                                         life=self.rendezvous.life))

    def broadcast_dump(self, request_id: str) -> None:
        """MAIN: ask every node on the channel for its stacks."""
        if self.server is not None:
            from .channel import DumpMsg

            self.server.broadcast(DumpMsg(id=request_id[:64]))

    def forget(self, node: str) -> None:
        """MAIN: ``node`` was lost and is being replaced: no longer expected on the channel."""
        with self._lock:
            self.registered.discard(node)
            self.gone.discard(node)
            self._lock.notify_all()

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
            log.warning("%s: could not announce the outcome on the control channel: %s", self.node_id, e)

    def close(self) -> None:
        """End the channel (:mod:`.farewell`): MAIN first waits for the nodes that can still hear its
        outcome there; a worker that said it would join and never did checks out."""
        from . import farewell

        if self.server is not None and self.outcome is not None:
            farewell.wait_for_listeners(self)
        elif self.enabled and self.client is None and self.mode != "MAIN":
            farewell.check_out(self)
        for part in (self.client, self.server):
            if part is not None:
                try:
                    part.close()
                except Exception as e:  # noqa: BLE001 - the life is over
                    log.debug("closing the control channel: %s", e)
        self.client = self.server = None
