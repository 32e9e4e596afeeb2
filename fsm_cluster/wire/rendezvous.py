"""How nodes find each other through the work dir, and which of its files a node accepts.

One ``Rendezvous`` per node owns the protocol's configuration side: the node's first look (MAIN
moves a previous life's files, its channel key too, to ``previous/<life>-<id>/``; a worker notes a
previous life's stop marker — and fails at once when that life is over and the worker was none of
its nodes: it came too late), its registration (``<node>_config.json``, written again if a new
life's MAIN moved it aside), MAIN's acceptance of the WORKER / PS registrations (signed, naming the
node of their file name, each read once) and its roster, a worker's acceptance of MAIN's
configuration (this life's, listing it), the variables a node takes from MAIN's configuration
(declared names only), the done markers of OCI__RUN_ON=all, and the refusals (each logged once per
version of the file).
"""

from __future__ import annotations

import fnmatch
import logging
import secrets
from typing import Iterable

from ..errors import NodeFailure, ProtocolError, SignatureError
from .control import SECRET_FILE
from .exports import UnsignedExports
from .models import (
    EXPORTABLE_RE,
    IDENTITY_NAMES,
    LEGACY_STOP,
    MAX_ENV_VALUE,
    DoneMarker,
    NodeConfig,
    RosterEntry,
    StopMarker,
    is_hijack_name,
)
from .workdir import MAIN_NODE, PREVIOUS, STOP, Listing, WorkDir, config_name, node_of, state_name

log = logging.getLogger(__name__)

DONE_SUFFIX = "_done"


class Rendezvous:
    def __init__(self, workdir: WorkDir, node_id: str, mode: str):
        self.workdir = workdir
        self.node_id = node_id
        self.mode = mode
        # This life of the cluster: MAIN draws it; the others learn it from MAIN's configuration.
        self.life = secrets.token_hex(6) if mode == "MAIN" else ""
        self.main_config: NodeConfig | None = None
        self.roster: list[RosterEntry] = []
        self.workers: dict[str, NodeConfig] = {}  # MAIN: accepted registrations by node
        self.registration: NodeConfig | None = None  # this node's config, as written
        self.stale_life: str | None = None  # a previous life's, seen by a worker before MAIN's
        self.stale_stop: tuple | None = None  # fingerprint of a stop marker to ignore
        self.refused: dict[str, tuple[tuple | None, str]] = {}  # file → (fingerprint, why)
        self._done: set[str] = set()
        self.lost: set[str] = set()  # MAIN: nodes lost and replaced (recovery): never accepted again

    # -- refusals ----------------------------------------------------------------------------------
    def refuse(self, name: str, fp: tuple | None, why: str) -> None:
        """Remember (and log once per version) a shared file this node does not accept."""
        if self.refused.get(name) != (fp, why):
            log.warning("%s: ignoring %s", self.node_id, why)
        self.refused[name] = (fp, why)

    def is_refused(self, name: str, fp: tuple | None) -> bool:
        return name in self.refused and fp is not None and self.refused[name][0] == fp

    def refusals(self) -> list[str]:
        return [why for _, why in self.refused.values()]

    # -- lives -------------------------------------------------------------------------------------
    def first_listing(self) -> Listing:
        """What the node's first look needs, in one request: MAIN lists the cluster dir (it moves
        a previous life's files aside); a worker reads the stop marker alone (one small request
        whatever N, where a listing of a forming cluster is N files for each of N nodes) and
        lists the dir only when there is one, to tell a previous life's marker from this life's."""
        if self.mode != "MAIN":
            try:
                if self.workdir.read_bytes(STOP, StopMarker.MAX_BYTES) is None:
                    return Listing()
            except ProtocolError:
                pass  # not a readable marker: the listing shows it, the first look judges it
        return self.workdir.listing()

    def first_look(self, listing: dict[str, tuple]) -> None:
        """The node's first look, before it writes anything. The same job may run again in the
        same work dir (on OCI every run of a job shares JOB_OCID): MAIN starts a new life and
        moves the previous life's files aside; a worker notes the previous life's stop marker
        (and so ignores it and MAIN's configuration of that life)."""
        old = self._previous_stop(listing)
        if self.mode == "MAIN":
            self._archive_previous_life(listing, old)
        elif old is not None:
            self.stale_stop = listing[STOP]
            self.stale_life = old.life
            ended = f"{old.outcome} by {old.node}: {old.reason or '-'}"
            if old.life and not self._took_part(listing, old.life):
                raise NodeFailure(f"MAIN's life {old.life} in {self.workdir.display} is over ({ended}) and this "
                                  f"node ({self.node_id}) was not one of its nodes: it came too late to join. A "
                                  "new run of the job in this work dir starts a new life when its MAIN starts")
            log.warning("%s: MAIN's life %s in %s is over (%s); this node was one of its nodes: waiting up to "
                        "OCI__TIMEOUT for the MAIN of a new run of the job", self.node_id, old.life or "?",
                        self.workdir.display, ended)

    def _took_part(self, listing: dict[str, tuple], life: str) -> bool:
        """A worker: whether it was a node of the ended ``life`` (its own files are there, or that
        life's roster lists it): then it is run again in place (a re-run of the job with the same
        run ids, as ``fsm-cluster local --cluster-id`` makes) and waits for the re-run's MAIN. A node
        with no trace in a life that is over came too late for it."""
        if config_name(self.node_id) in listing or state_name(self.node_id) in listing:
            return True
        if config_name(MAIN_NODE) not in listing:
            return False
        try:
            cfg = self.workdir.read(config_name(MAIN_NODE), NodeConfig)
        except ProtocolError:
            return False
        return cfg is not None and cfg.life == life and any(r.node == self.node_id for r in cfg.roster)

    def _previous_stop(self, listing: dict[str, tuple]) -> StopMarker | None:
        """The stop marker found at the first look, when it is a previous life's: it names a life
        (only nodes that joined a life write one), or MAIN's files of a life are there too. A
        marker with neither (a launcher's Ctrl-C, an operator's stop before MAIN began) is this
        life's and ends it."""
        if STOP not in listing:
            return None
        try:
            old = self.workdir.read_stop()
        except ProtocolError:
            return LEGACY_STOP  # unreadable: ignored like a forged one
        if old is None:
            return None
        mains = config_name(MAIN_NODE) in listing or state_name(MAIN_NODE) in listing
        return old if (old.life or mains) else None

    def _archive_previous_life(self, listing: dict[str, tuple], old_stop: StopMarker | None) -> None:
        mains = [n for n in (config_name(MAIN_NODE), state_name(MAIN_NODE), f"{MAIN_NODE}{DONE_SUFFIX}")
                 if n in listing] + ([STOP] if old_stop is not None else [])
        if not mains:
            return
        roster: list[RosterEntry] = []
        life = old_stop.life if old_stop is not None else ""
        if config_name(MAIN_NODE) in listing:
            try:
                old = self.workdir.read(config_name(MAIN_NODE), NodeConfig)
            except ProtocolError:
                old = None
            if old is not None:
                life, roster = life or old.life, list(old.roster)
        names = list(mains) + ([SECRET_FILE] if SECRET_FILE in listing else [])  # its key goes with it
        for r in roster:
            if r.node != MAIN_NODE:
                names += [n for n in (config_name(r.node), state_name(r.node), f"{r.node}{DONE_SUFFIX}")
                          if n in listing]
        folder = f"{PREVIOUS}/{life or 'unknown'}-{secrets.token_hex(3)}"
        for name in names:
            self.workdir.move(name, f"{folder}/{name}")
        ended = f"; it ended {old_stop.outcome} by {old_stop.node}: {old_stop.reason or '-'}" if old_stop else ""
        workers = [r.node for r in roster if r.node != MAIN_NODE]
        log.warning("%s: %s held a previous life %s of this cluster%s; moved its %d file(s) to %s/ and starting a "
                    "new life, whose workers are those of a new run of the job (%s registered in the old one: they "
                    "do not come back; this MAIN waits OCI__TIMEOUT for new ones)", self.node_id,
                    self.workdir.display, life or "?", ended, len(names), folder, ", ".join(workers) or "none")

    def belongs_here(self, marker: StopMarker) -> bool:
        """A marker of this life (or of no known life: ADS, the launcher, an operator)."""
        return marker.life in ("", self.life) or not self.life

    def is_stale(self, marker: StopMarker) -> bool:
        """The previous life's marker that a worker saw at its first look."""
        return (self.stale_life is not None and self.main_config is None and bool(marker.life)
                and marker.life == self.stale_life)

    # -- registration ----------------------------------------------------------------------------
    def register(self, cfg: NodeConfig) -> None:
        """Write this node's config (a worker's registration; MAIN's configuration)."""
        log.info("%s: writing %s", self.node_id, config_name(self.node_id))
        self.workdir.write(config_name(self.node_id), cfg)
        self.registration = cfg
        if self.mode == "MAIN":
            self.main_config = cfg
            self.roster = list(cfg.roster)

    def register_again_if_gone(self, listing: dict[str, tuple]) -> None:
        """A new life's MAIN moved the previous life's files aside, and with them this node's
        registration when the run ids are the same: register again."""
        own = config_name(self.node_id)
        if self.registration is not None and own not in listing:
            log.info("%s: %s is gone; registering again", self.node_id, own)
            self.workdir.write(own, self.registration)

    def accept_workers(self, listing: dict[str, tuple]) -> dict[str, NodeConfig]:
        """MAIN: every WORKER / PS registration, each read once. One that is unsigned or badly
        signed (with a cluster secret), names another node than its file, or is malformed is
        refused (logged once) and never joins the roster."""
        for name, fp in listing.items():
            parsed = node_of(name)
            if not (parsed and parsed[1] == "config" and parsed[0] != MAIN_NODE) or \
                    parsed[0] in self.workers or parsed[0] in self.lost or self.is_refused(name, fp):
                continue
            try:
                cfg = self.workdir.read(name, NodeConfig)
                if cfg is not None and (cfg.node != parsed[0] or cfg.mode == "MAIN"):
                    raise ProtocolError(f"{self.workdir.url(name)}: names node {cfg.node!r} ({cfg.mode}), "
                                        "not the node of its file name")
            except ProtocolError as e:
                self.refuse(name, fp, str(e))
                continue
            if cfg is not None:
                self.workers[parsed[0]] = cfg
        return dict(self.workers)

    def forget(self, node: str) -> None:
        """MAIN: ``node`` was lost and is being replaced: never accepted again."""
        self.workers.pop(node, None)
        self.lost.add(node)

    def registered(self) -> tuple[int, int]:
        """(WORKER, PS) registrations MAIN accepted."""
        modes = [c.mode for c in self.workers.values()]
        return modes.count("WORKER"), modes.count("PS")

    def build_roster(self, main: RosterEntry) -> list[RosterEntry]:
        """MAIN first; then by the run's RANK when given (unique), else by run id; WORKERs before PS."""
        def key(c: NodeConfig):
            return (c.mode != "WORKER", c.rank if c.rank is not None else 1 << 30, c.run_id)

        return [main] + [RosterEntry(node=c.node, mode=c.mode, run_id=c.run_id, rank=i, ip=c.ip, host=c.host)
                         for i, c in enumerate(sorted(self.workers.values(), key=key), start=1)]

    def take_main_config(self) -> NodeConfig | None:
        """A worker: MAIN's configuration of this life, once published (None until then). It is
        accepted only when signed (with a cluster secret), not a previous life's, and listing
        this node; the node then joins its life."""
        if self.main_config is not None:
            return self.main_config
        name = config_name(MAIN_NODE)
        try:
            cfg = self.workdir.read(name, NodeConfig)
        except SignatureError as e:  # forged or another launch's: wait for the real one
            self.refuse(name, None, str(e))
            return None
        if cfg is None:
            return None
        if self.mode != "MAIN" and cfg.legacy:  # an oracle-ads MAIN: no roster, no lives
            log.info("%s: MAIN is an oracle-ads node (its config has no fsm_cluster fields): not watching "
                     "its heartbeat; its stop file ends this node once its own code is done", self.node_id)
        elif self.mode != "MAIN":
            if self.stale_life is not None and cfg.life == self.stale_life:
                return None  # the previous life's; MAIN of this life has not published yet
            if not any(r.node == self.node_id for r in cfg.roster):
                self.refuse(name, None, f"{self.workdir.url(name)}: its roster does not list "
                                        f"{self.node_id} (a configuration of another life or cluster)")
                return None
            self.life = cfg.life
        self.main_config = cfg
        self.roster = list(cfg.roster)
        return cfg

    def read_main_config_again(self) -> NodeConfig | None:
        """A worker after MAIN replaced a lost node: MAIN's configuration of this life as it is now
        (signed; still listing this node), or None while it cannot be taken."""
        name = config_name(MAIN_NODE)
        try:
            cfg = self.workdir.read(name, NodeConfig)
        except ProtocolError as e:
            self.refuse(name, None, str(e))
            return None
        if cfg is None or cfg.life != self.life or not any(r.node == self.node_id for r in cfg.roster):
            return None
        self.main_config, self.roster = cfg, list(cfg.roster)
        return cfg

    # -- exports ---------------------------------------------------------------------------------
    @staticmethod
    def exported(env: dict[str, str], names: Iterable[str] | None,
                 unsigned: UnsignedExports | None = None) -> tuple[dict[str, str], dict[str, str]]:
        """(variables a node takes, names kept in the file → why) of a config's variables: every
        name that can be a variable (``names`` None, as oracle-ads) or the declared ones (fnmatch
        patterns ``names``); never an identity name (who a node is), never one of the hijack
        denylist, never a value no environment can hold; of a file nobody vouches for
        (``unsigned``: no cluster secret, not this node's own) only what that rule admits."""
        patterns = None if names is None else tuple(names)

        def refusal(k: str, v: str) -> str | None:
            if k in IDENTITY_NAMES or is_hijack_name(k) or not EXPORTABLE_RE.match(k):
                return "identity or not a variable name"
            if "\x00" in v or len(v) > MAX_ENV_VALUE:
                return "not a value a variable can hold"
            if patterns is not None and not any(fnmatch.fnmatchcase(k, p) for p in patterns):
                return "not declared by the engine or OCI__EXPORTS"
            why = None if unsigned is None else unsigned.refusal(k, v)
            return None if why is None else f"unsigned: {why}"

        take, kept = {}, {}
        for k, v in env.items():
            why = refusal(k, v)
            if why is None:
                take[k] = v
            else:
                kept[k] = why
        return take, kept

    # -- done markers (OCI__RUN_ON=all) ----------------------------------------------------------
    def publish_done(self) -> None:
        self.workdir.write(f"{self.node_id}{DONE_SUFFIX}", DoneMarker(node=self.node_id, life=self.life))

    def members(self) -> list[RosterEntry]:
        """MAIN: the roster without the nodes lost and not yet replaced."""
        return [r for r in self.roster if r.node not in self.lost]

    def all_done(self, listing: dict[str, tuple], said: set[str] = frozenset()) -> bool:
        """MAIN: every other fsm_cluster node of the roster said its code completed (``said``: on the
        channel) or wrote its done marker (oracle-ads nodes write none)."""
        workers = self.workers
        return all(r.node in said or self.done(r.node, listing) for r in self.roster
                   if r.node != self.node_id and not (r.node in workers and workers[r.node].legacy))

    def done(self, node: str, listing: dict[str, tuple]) -> bool:
        """``node`` wrote its done marker for this life (read once, signature checked)."""
        name = f"{node}{DONE_SUFFIX}"
        if node in self._done:
            return True
        fp = listing.get(name)
        if fp is None or self.is_refused(name, fp):
            return False
        try:
            marker = self.workdir.read(name, DoneMarker)
            if marker is not None and (marker.node != node or marker.life not in ("", self.life)):
                raise ProtocolError(f"{self.workdir.url(name)}: a done marker of another node or life")
        except ProtocolError as e:
            self.refuse(name, fp, str(e))
            return False
        if marker is not None:
            self._done.add(node)
        return marker is not None
