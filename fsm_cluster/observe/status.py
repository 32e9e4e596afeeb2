"""A reader's view of a cluster: what ``fsm-cluster status`` and the local launcher show.

``open_cluster(uri, cluster_id)`` finds the cluster (``uri`` may be ``<work_dir>/<cluster_id>`` or
a work dir holding exactly one cluster). ``ClusterView.refresh()`` costs one listing plus a read of
each file whose fingerprint changed (configs once, state files when they changed, the stop marker
once). Liveness is judged on the reader's own monotonic clock by when a state file last changed;
wall-clock fields written by nodes are only ever shown as estimates.
"""

from __future__ import annotations

import posixpath
import time
from collections import Counter
from dataclasses import dataclass, field

from ..clock import Clock, SystemClock
from ..errors import FsmClusterError
from ..node.lifecycle import FINAL_STATES
from ..wire.models import NodeConfig, NodeState, StopMarker
from ..wire.peerwatch import PeerWatch
from ..wire.stores import split_uri
from ..wire.workdir import MAIN_NODE, STOP, WorkDir, node_of

ENDED_STATES = tuple(FINAL_STATES)  # the lifecycle says which states are final
UNREADABLE = "unreadable"  # a node whose config or state file is corrupt (the reason is shown)


class ClusterNotFound(FsmClusterError):
    """The URI holds no cluster (or several, and none was chosen)."""


def _looks_like_cluster(names) -> bool:
    return any(n == STOP or node_of(n) is not None for n in names)


def cluster_id_option(value: str, option: str = "--cluster-id") -> str:
    """A cluster id from the command line: one folder name of the work dir (never ``..`` or a
    path), else an error naming ``option``."""
    from ..wire.models import check_identifier

    try:
        return check_identifier(value, option)
    except ValueError as e:
        raise FsmClusterError(str(e)) from None


def open_cluster(uri: str, cluster_id: str | None = None, *, storage_options: dict | None = None) -> WorkDir:
    """The WorkDir of the cluster at ``uri`` (see module doc). Errors name what was looked at.
    With the cluster's secret (``OCI__CLUSTER_SECRET``, or kept by the launcher on this machine)
    its files are checked and written signed: a forged file shows as unreadable."""
    from ..wire import secretstore

    wd = _find_cluster(uri, cluster_id, storage_options)
    secret = secretstore.load(wd.display)
    wd.use_secret(secret)
    return wd


def _find_cluster(uri: str, cluster_id: str | None, storage_options: dict | None) -> WorkDir:
    if cluster_id is not None:
        cluster_id_option(cluster_id)
        wd = WorkDir(uri, cluster_id, storage_options=storage_options)
        if not _looks_like_cluster(wd.listing()):
            raise ClusterNotFound(f"no cluster {cluster_id!r} in {uri} (no config, state or stop file "
                                  f"in {wd.display})")
        return wd
    parent, name = _split_last(uri)
    if name:
        wd = WorkDir(parent, name, storage_options=storage_options)
        if _looks_like_cluster(wd.listing()):
            return wd
    probe = WorkDir(uri, "", storage_options=storage_options)
    try:
        names = probe.subdirectories()
    except FileNotFoundError:
        raise ClusterNotFound(f"{uri}: no such directory") from None
    clusters = []
    for cid in names:
        wd = WorkDir(uri, cid, fs=None if probe.local else probe.fs)  # (a local disk needs no fsspec)
        if _looks_like_cluster(wd.listing()):
            clusters.append(wd)
    if not clusters:
        raise ClusterNotFound(f"{uri}: no cluster here (expected MAIN_config.json, <node>_state.json or "
                              "stop, directly or in one sub-directory per cluster)")
    if len(clusters) > 1:
        ids = ", ".join(sorted(w.cluster_id for w in clusters))
        raise ClusterNotFound(f"{uri} holds {len(clusters)} clusters ({ids}); choose one with "
                              "--cluster-id or give <work_dir>/<cluster_id>")
    return clusters[0]


def _split_last(uri: str) -> tuple[str, str]:
    """``s3://b/wd/c1`` → ("s3://b/wd", "c1"); ``/tmp/wd/c1`` → ("/tmp/wd", "c1"); a bucket → (uri, "")."""
    protocol, full = split_uri(uri)
    if protocol == "file" and "://" not in full:
        parent, name = posixpath.split(full.rstrip("/") or "/")
        return parent or "/", name
    scheme, rest = full.split("://", 1)
    if "/" not in rest.strip("/"):
        return full, ""
    head, name = rest.rstrip("/").rsplit("/", 1)
    return f"{scheme}://{head}", name


@dataclass
class NodeView:
    node: str
    config: NodeConfig | None = None
    state: NodeState | None = None
    changed_at: float | None = None       # reader's clock: the state file last changed
    entered_at: float | None = None       # reader's clock: the state was seen to change
    entered_before_first_sample: bool = False
    beats_seen: int = 0                   # state-file changes seen by this reader
    first_read_sample: int = 0            # the sample that first read the state file
    config_fingerprint: tuple | None = None
    errors: dict[str, str] = field(default_factory=dict)  # file name → why it could not be read

    @property
    def mode(self) -> str:
        src = self.state or self.config
        return src.mode if src else self.node.split("_", 1)[0]

    @property
    def run_id(self) -> str:
        src = self.state or self.config
        return src.run_id if src else ""

    @property
    def state_name(self) -> str:
        if self.errors:
            return UNREADABLE
        return self.state.state if self.state else ("registered" if self.config else "unknown")

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors.values()) or None


@dataclass
class ClusterView:
    workdir: WorkDir
    clock: Clock = field(default_factory=SystemClock)
    nodes: dict[str, NodeView] = field(default_factory=dict)
    stop: StopMarker | None = None
    samples: int = 0
    first_sample_at: float | None = None
    stop_error: str | None = None  # the stop file is there but could not be read
    peers: PeerWatch = field(default_factory=PeerWatch)  # state files' fingerprints, on our clock

    def _read(self, name: str, cls, errors: dict[str, str]):
        """``name`` as ``cls`` (None when absent); a corrupt or unreadable file is recorded in
        ``errors`` (and None returned): one bad file must not hide the rest of the cluster."""
        try:
            model = self.workdir.read(name, cls)
        except FsmClusterError as e:
            errors[name] = str(e)
            return None
        errors.pop(name, None)
        return model

    def refresh(self) -> set[str]:
        """One listing + reads of what changed; returns the nodes whose state changed."""
        listing = self.workdir.listing()
        now = self.clock.now()
        if self.first_sample_at is None:
            self.first_sample_at = now
        first = self.samples == 0
        self.samples += 1
        changed: set[str] = set()
        if self.stop is None and STOP in listing:
            stop_errors: dict[str, str] = {}
            self.stop = self._read(STOP, StopMarker, stop_errors)
            self.stop_error = stop_errors.get(STOP)
        for name, fp in sorted(listing.items()):
            parsed = node_of(name)
            if parsed is None:
                continue
            node, kind = parsed
            view = self.nodes.setdefault(node, NodeView(node))
            if kind == "config":
                if view.config is None and view.config_fingerprint != fp:
                    view.config_fingerprint = fp
                    view.config = self._read(name, NodeConfig, view.errors)
                continue
            first_sight = name not in self.peers.seen
            if not self.peers.note(name, fp, now):
                continue  # unchanged since the last look
            had_error = name in view.errors
            state = self._read(name, NodeState, view.errors)
            if state is None:
                if name in view.errors and not had_error:  # corrupt: read again once it changes
                    changed.add(node)
                continue
            if first_sight:
                view.first_read_sample = self.samples
            else:
                view.beats_seen += 1
            view.changed_at = now
            if view.state is None or view.state.state != state.state:
                view.entered_at = now
                view.entered_before_first_sample = first
                changed.add(node)
            view.state = state
        return changed

    # -- summaries -------------------------------------------------------------------------------
    def ordered(self) -> list[NodeView]:
        ranks = {}
        main = self.nodes.get(MAIN_NODE)
        if main and main.config:
            ranks = {r.node: r.rank for r in main.config.roster}

        def key(v: NodeView):
            rank = ranks.get(v.node, v.config.rank if v.config and v.config.rank is not None else 1 << 30)
            return ({"MAIN": 0, "WORKER": 1, "PS": 2}.get(v.mode, 3), rank, v.run_id)

        return sorted(self.nodes.values(), key=key)

    def rank_of(self, view: NodeView) -> int | None:
        main = self.nodes.get(MAIN_NODE)
        if main and main.config:
            for r in main.config.roster:
                if r.node == view.node:
                    return r.rank
        return view.config.rank if view.config else None

    def unreadable(self) -> list[str]:
        """Why each file that is there could not be read (empty when every file was)."""
        out = [self.stop_error] if self.stop_error else []
        return out + [e for v in self.ordered() for e in v.errors.values()]

    def counts(self) -> Counter:
        return Counter(v.state_name for v in self.nodes.values())

    def ended(self) -> bool:
        """The stop marker is there and every known node reached ``stopped`` (or has a corrupt
        file, which no waiting will mend)."""
        return self.stop is not None and bool(self.nodes) and all(
            v.state_name in ENDED_STATES + (UNREADABLE,) for v in self.nodes.values())

    def find(self, name: str) -> NodeView:
        """A node by id (``MAIN``, ``WORKER_<run>``), run id, or rank."""
        for v in self.nodes.values():
            if name in (v.node, v.run_id) or name.upper() == v.node:
                return v
        if name.isdigit():
            for v in self.nodes.values():
                if self.rank_of(v) == int(name):
                    return v
        known = ", ".join(v.node for v in self.ordered()) or "none"
        raise FsmClusterError(f"no node {name!r} in {self.workdir.display} (nodes: {known})")

    def node_record(self, v: NodeView, *, watching: bool, stale_after: float, wall: float) -> dict:
        now = self.clock.now()
        s, c = v.state, v.config
        rec = {
            "node": v.node, "mode": v.mode, "run_id": v.run_id, "rank": self.rank_of(v),
            "address": (s.ip if s and s.ip else (c.ip if c else "")),
            "host": (s.host if s and s.host else (c.host if c else "")),
            "pid": s.pid if s else None,
            "state": v.state_name, "reason": s.reason if s else "",
            "heartbeat": s.heartbeat if s else None,
            "resources": s.resources.model_dump() if s and s.resources else None,
            "transitions": s.transitions if s else None,
            "exit_code": s.exit_code if s else None,
            "state_wall": s.state_wall if s else None,
            "error": v.error,
        }
        # Time in state: seen by this reader when it watched the change happen; a node that ended
        # wrote its final state on entering it, so its write time is a (wall-clock) estimate.
        time_in_state, tis_estimate, tis_at_least = None, False, False
        if watching and v.entered_at is not None:
            time_in_state = now - v.entered_at
            tis_at_least = v.entered_before_first_sample
        elif s is not None and (s.entered_wall or (s.state in ENDED_STATES and s.state_wall)):
            # The writer's wall time of entering the state (an estimate across two clocks).
            time_in_state, tis_estimate = max(0.0, wall - (s.entered_wall or s.state_wall)), True
        rec.update(time_in_state=time_in_state, time_in_state_estimated=tis_estimate,
                   time_in_state_at_least=tis_at_least)
        # Heartbeat: watching → on our clock since the state file last changed; a snapshot can only
        # offer the writer's wall time of its last write (an estimate across two machines' clocks).
        if s is None:
            age, estimated, liveness = None, False, None
        elif watching and v.changed_at is not None:
            # Until a change was seen, the reader only knows the file was there when it first looked.
            observed = v.beats_seen > 0 or v.first_read_sample > 1
            if observed:
                age, estimated = now - v.changed_at, False
            else:
                age, estimated = (max(0.0, wall - s.state_wall) if s.state_wall else None), True
            quiet_for = now - v.changed_at  # on this reader's clock
            if s.state in ENDED_STATES:
                liveness = "ended"
            elif quiet_for > stale_after:
                liveness = "stale"
            else:
                liveness = "beating" if observed else None  # no change seen yet: can't tell
        else:
            age, estimated = (max(0.0, wall - s.state_wall) if s.state_wall else None), True
            liveness = "ended" if s.state in ENDED_STATES else None
        rec.update(heartbeat_age=age, heartbeat_age_estimated=estimated, liveness=liveness)
        return rec

    def restarts(self) -> list[dict]:
        """The restarts of the cluster's code MAIN decided (recovery): when, which node, why."""
        for v in self.ordered():
            if v.node == "MAIN" and v.state is not None:
                return [r.model_dump() for r in v.state.restarts]
        return []

    def record(self, *, watching: bool = False, stale_after: float = 60.0) -> dict:
        wall = time.time()
        outcome = self.stop.model_dump() if self.stop else None
        return {
            "cluster_id": self.workdir.cluster_id,
            "work_dir": self.workdir.display,
            "sampled_wall": wall,
            "watching": watching,
            "outcome": outcome,
            "outcome_error": self.stop_error,
            "ended": self.ended(),
            "counts": dict(sorted(self.counts().items())),
            "restarts": self.restarts(),
            "nodes": [self.node_record(v, watching=watching, stale_after=stale_after, wall=wall)
                      for v in self.ordered()],
        }
