"""A node's watch of its cluster: its heartbeat, the look each interval, the stop marker, and
what MAIN's state file tells the workers (MAIN's restarts, its stacks requests).

Each heartbeat interval a node writes its state file once (the beat) and looks once: MAIN lists
the directory (the stop marker, and the state-file fingerprints of the nodes it accepted); a
worker lists it until it joined MAIN's life and MAIN's state file exists, then reads only that
small file (MAIN's heartbeat counter and the stop marker MAIN mirrors into it). Liveness is a
:class:`~fsm_cluster.wire.peerwatch.PeerWatch` on this node's clock. A stop marker of this life ends
the node (StopRequested); a forged one is refused; a peer silent past the heartbeat timeout, or
MAIN's files gone, fail it (NodeFailure). ``write_stop`` is the first-writer-wins write of the
node's own marker, replacing a forged or previous life's file.
"""

from __future__ import annotations

import logging
from typing import Callable

from ..errors import NodeFailure, NodeLost, ProtocolError, RestartRequested, StopRequested
from .models import NodeState, StopMarker
from .peerwatch import EXPECTED, PeerWatch
from .rendezvous import Rendezvous
from .states import NodeStatus
from .workdir import MAIN_NODE, STOP, WorkDir, config_name, state_name

log = logging.getLogger(__name__)


class ClusterWatch:
    def __init__(self, *, node_id: str, mode: str, workdir: WorkDir, clock, interval: float, timeout: float,
                 rendezvous: Rendezvous, pace: Callable[[], int] = lambda: 1,
                 restarts_seen: Callable[[], int] = lambda: 0):
        self.node_id, self.mode, self.workdir, self.clock = node_id, mode, workdir, clock
        self.interval, self.timeout = interval, timeout
        self.rendezvous = rendezvous
        # How many intervals apart beat and watch run (2 while the control channel carries liveness
        # and outcomes: the files are then the record, for status views and nodes without it).
        self.pace = pace
        self.period = interval  # interval × pace, as of the last tick
        self.heartbeat = 0
        self.dirty = True  # the state file must be written at the next tick
        now = clock.now()
        self.next_beat = now
        self.next_watch = now
        self.listing: dict[str, tuple] = {}
        self.peers = PeerWatch()  # state files this node watches (heartbeat fingerprints)
        self.stop_marker: StopMarker | None = None
        self.legacy_stop = False  # oracle-ads' bare "stop" file seen (no outcome: see LEGACY_STOP)
        self._legacy_fp: tuple | None = None
        self.legacy_marker: StopMarker | None = None
        self.main_state_seen = False  # a worker: from then on, watch MAIN by reading its state
        self.main_state_read = False  # a worker read MAIN's state file of this life at least once
        self.restarts_seen = restarts_seen  # a worker: the newest restart of MAIN's it learnt (the ledger's)
        self.dump_request = ""  # a worker: MAIN's last stacks request, from its state file

    def expect(self, state_file: str, now: float) -> None:
        """A peer that must write ``state_file`` (and keep changing it) from ``now`` on."""
        self.peers.expect(state_file, now)

    def beating(self) -> frozenset:
        """The peers whose state file changed within the heartbeat timeout (on this node's clock)."""
        return frozenset(name[: -len("_state.json")] for name in list(self.peers.seen)
                         if self.is_beating(name[: -len("_state.json")]))

    def is_beating(self, node: str) -> bool:
        """Whether ``node``'s state file changed within the heartbeat timeout (on this node's clock)."""
        quiet = self.peers.quiet_for(state_name(node), self.clock.now())
        return quiet is not None and quiet < self.timeout

    def learn(self, marker: StopMarker) -> None:
        """The cluster's stop marker, learnt on the control channel (as if read from the stop file)."""
        if self.stop_marker is None:
            self.stop_marker = marker

    def forget(self, state_file: str) -> None:
        """A peer no longer watched (lost, its replacement expected under another name)."""
        self.peers.seen.pop(state_file, None)

    def joined(self, now: float) -> None:
        """A worker joined MAIN's life: from now on it watches MAIN through MAIN's state file alone
        (one small read per interval, no listing), which MAIN must write within the timeout."""
        self.peers.expect(state_name(MAIN_NODE), now)
        self.main_state_seen = True

    def changed(self) -> None:
        """The node's state changed: its state file is written at the next tick at the latest."""
        self.dirty = True

    def written(self) -> None:
        self.dirty = False

    def seconds_to_next_tick(self) -> float:
        return max(0.0, min(self.next_beat, self.next_watch) - self.clock.now())

    def tick(self, state: NodeStatus, flush: Callable[[], None]) -> None:
        """Beat, write the state file (``flush``) if it changed, look at the cluster when due:
        at most one write and one look per interval."""
        now = self.clock.now()
        period = self.period = self.interval * self.pace()
        if now >= self.next_beat:
            self.heartbeat += 1
            self.next_beat = now + period
            self.dirty = True
        if self.dirty:
            flush()
        if now >= self.next_watch:
            self.next_watch = now + period
            if self.mode != "MAIN" and self.main_state_seen:
                try:
                    main = self.workdir.read_state(MAIN_NODE)
                except ProtocolError as e:
                    if not self.workdir.secret:
                        raise  # a corrupt file without a secret is a protocol failure, as before
                    self.rendezvous.refuse(state_name(MAIN_NODE), None, str(e))  # forged: no news of MAIN
                else:
                    self.observe_main(main)
            else:
                self.observe(self.workdir.listing(), state)

    def observe(self, listing: dict[str, tuple], state: NodeStatus) -> None:
        """Digest one listing: stop marker, peers' heartbeats (fingerprints that change)."""
        self.listing = listing
        now = self.clock.now()
        # A fresh listing (e.g. MAIN's registration poll) stands for this interval's watch.
        self.next_watch = max(self.next_watch, now + self.period)
        if STOP in listing:
            self._take_stop(listing[STOP])
        if state in (NodeStatus.ready, NodeStatus.running, NodeStatus.complete) and \
                config_name(MAIN_NODE) not in listing:
            raise self._work_dir_gone(config_name(MAIN_NODE))
        if state is NodeStatus.waiting_for_main:
            self.rendezvous.register_again_if_gone(listing)
        self._credit_blind_time(now)
        if self.mode == "MAIN":  # the nodes it accepted, not any state file someone put there
            watched = [(state_name(n), listing[state_name(n)]) for n in self.rendezvous.workers
                       if state_name(n) in listing]
        elif self.rendezvous.main_config is not None:  # workers watch MAIN once they joined its life
            main = state_name(MAIN_NODE)
            watched = [(main, listing[main])] if main in listing else []
            self.main_state_seen = self.main_state_seen or main in listing
        else:
            watched = []
        self._judge(watched, now, lambda name: name in listing)

    def observe_main(self, main: NodeState | None) -> None:
        """A worker's watch once MAIN's state file exists: one small read per interval. MAIN's
        heartbeat counter must change, and MAIN mirrors the stop marker into its state."""
        now = self.clock.now()
        self.next_watch = max(self.next_watch, now + self.period)
        if main is None:
            if self.main_state_read:
                raise self._work_dir_gone(state_name(MAIN_NODE))
            self._judge([], now, lambda name: False)  # not written yet: expected within the timeout
            return
        if main.life != self.rendezvous.life:  # not this life's: no news of MAIN
            return
        self.main_state_read = True
        self.dump_request = main.dump
        if main.restarts and main.restarts[-1].count > self.restarts_seen():  # MAIN restarted the code
            raise RestartRequested(main.restarts[-1])  # (news for the nodes off its channel)
        if main.stop is not None and self.stop_marker is None and self.rendezvous.belongs_here(main.stop):
            self.stop_marker = m = main.stop
            raise StopRequested(m.reason, m.exit_code, m.outcome, m.node)
        self._credit_blind_time(now)
        self._judge([(state_name(MAIN_NODE), (main.heartbeat, main.transitions, main.state))], now,
                    lambda name: True)

    def _take_stop(self, fp: tuple | None) -> None:
        """A stop marker is in the listing: read it (once per version) and, when it is this
        life's and authentic, end the node the way it says."""
        rv = self.rendezvous
        if self.stop_marker is not None or (fp is not None and fp in (rv.stale_stop, self._legacy_fp)) or \
                rv.is_refused(STOP, fp):
            return
        try:
            marker = self.workdir.read_stop()
            if marker is not None and rv.is_stale(marker):
                return
            if marker is not None and not rv.belongs_here(marker):
                raise ProtocolError(f"{self.workdir.url(STOP)}: a stop marker of another life ({marker.life})")
        except ProtocolError as e:
            rv.refuse(STOP, fp, str(e))
            return
        if marker is not None and marker.legacy:  # (the dispatcher says what it means for this node)
            self.legacy_stop, self._legacy_fp, self.legacy_marker = True, fp, marker
            return
        if marker is not None:
            self.stop_marker = marker
            raise StopRequested(marker.reason, marker.exit_code, marker.outcome, marker.node)

    def _work_dir_gone(self, name: str) -> NodeFailure:
        # One reason whichever of MAIN's files a node happens to miss first.
        return NodeFailure(f"work dir {self.workdir.display}: MAIN's files disappeared "
                           f"({name} is gone; was the work dir deleted?)")

    def _credit_blind_time(self, now: float) -> None:
        """Time this node could not look (storage outage, retries, the process paused) is not the
        peers' silence: credit it, so a storage blip seen by everyone is not a dead node."""
        blind = self.peers.credit_blind_time(now, self.period)
        if blind:
            log.warning("%s: could not look for %.1f s; not counting that against peers' heartbeats",
                        self.node_id, blind + self.period)

    def _judge(self, watched, now: float, present) -> None:
        """Record changed fingerprints; a peer silent (on this node's clock) past the timeout is dead."""
        self.peers.note_all(watched, now)
        for name, fp, quiet in self.peers.silent(now, self.timeout):
            peer = name[: -len("_state.json")]
            if fp is EXPECTED and not present(name):
                raise NodeFailure(f"{peer} wrote no state file for {quiet:.0f} s after it "
                                  f"joined the cluster (timeout {self.timeout:g} s)")
            gone = "" if present(name) else " (its state file is gone)"
            raise NodeLost(f"{peer} stopped heart-beating: no change for {quiet:.0f} s "
                           f"(timeout {self.timeout:g} s){gone}", peer)

    def write_stop(self, marker: StopMarker) -> StopMarker | None:
        """Write this node's marker, first writer wins among this life's: a stop file that is
        forged, unsigned (with a secret) or a previous life's is replaced. Returns the marker
        that stands (this one, or the one that was first), None if it cannot be read."""
        if self._write_stop(marker):
            log.info("%s: wrote stop marker: %s (%s)", self.node_id, marker.outcome, marker.reason)
            self.stop_marker = marker
            return marker
        try:
            self.stop_marker = self.workdir.read_stop()
        except ProtocolError:
            self.stop_marker = None
        m = self.stop_marker
        log.info("%s: stop marker already written by %s (%s)", self.node_id, m.node if m else "?",
                 m.outcome if m else "?")
        return m

    def _write_stop(self, marker: StopMarker) -> bool:
        if self.workdir.write_stop(marker):
            return True
        try:
            existing = self.workdir.read_stop()
            if existing is None or (self.rendezvous.belongs_here(existing) and not existing.legacy):
                return False
            why = (f"{self.workdir.url(STOP)}: oracle-ads' stop file (no outcome) with this node's outcome"
                   if existing.legacy else f"{self.workdir.url(STOP)}: a stop marker of another life ({existing.life})")
        except ProtocolError as e:
            why = str(e)
        log.warning("%s: replacing %s", self.node_id, why)
        self.workdir.remove(STOP)
        return self.workdir.write_stop(marker)
