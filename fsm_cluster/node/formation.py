"""How a node joins its cluster: its registration, MAIN's configuration and roster, the exports.

:class:`Formation` writes this node's config file (a worker's registration; MAIN's carries the
variables every node exports and the roster), waits' predicates (MAIN: every expected node
registered; a worker: MAIN's configuration of this life accepted), and takes MAIN's exported
variables into the node's environment, as oracle-ads does. The files themselves and what counts
as accepted are the wire's (:class:`~fsm_cluster.wire.rendezvous.Rendezvous`).
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any, Callable, Mapping, MutableMapping

from ..env import (
    OCI__CLUSTER_ID,
    OCI__MAIN_IP,
    OCI__NODE_IP,
    OCI__NODE_LIST,
    OCI__NODE_RANK,
    OCI__WORLD_SIZE,
    WORLD_SIZE,
)
from ..errors import NodeFailure
from ..wire.control import CHANNEL_KEY, CONTROL_KEY, REPLACES_KEY, RESTART_POLICY_KEY
from ..wire.models import NodeConfig, RosterEntry
from ..wire.workdir import MAIN_NODE, config_name, state_name

log = logging.getLogger(__name__)

# Which of MAIN's variables a node exports into its environment. As in oracle-ads, every one
# (lower-case names too) except the names who say who a node is (OCI__MODE, RANK, JOB_OCID,
# JOB_RUN_OCID: kept in the file); a hijack name (LD_*, PATH, PYTHON*…) fails the node. A job
# definition that sets OCI__EXPORTS narrows that to declared names: fsm_cluster's own below, the
# engine's ``EXPORTS`` and the names (fnmatch patterns) it lists.
BASE_EXPORTS = (OCI__MAIN_IP, OCI__WORLD_SIZE, WORLD_SIZE, OCI__NODE_LIST, OCI__CLUSTER_ID)


class Formation:
    """``me`` is this node's RosterEntry (rank 0 for MAIN); ``environ`` the node's environment
    (exports go there); ``restarts()`` the cluster's restarts so far."""

    def __init__(self, me: RosterEntry, settings, clock, rendezvous, watch, control, *,
                 environ: MutableMapping[str, str], restarts: Callable[[], int], joined: Callable[[int], None]):
        self.me, self.settings, self.clock = me, settings, clock
        self.rendezvous, self.watch, self.control = rendezvous, watch, control
        self.environ, self._restarts, self._joined = environ, restarts, joined
        self.main = me.mode == "MAIN"
        self.control_address: str | None = None  # MAIN: its channel's host:port, once serving
        # MAIN's declared variables as this node took them (typed, read-only; engines read these)
        self.exported: Mapping[str, str] = MappingProxyType({})

    def names(self, engine_exports) -> tuple[str, ...] | None:
        """Names this node takes from MAIN's config: None (every name, as oracle-ads) unless the job
        definition declares OCI__EXPORTS: then BASE_EXPORTS, the engine's EXPORTS and those."""
        if not self.settings.export_names:
            return None
        return BASE_EXPORTS + tuple(engine_exports) + self.settings.export_names

    def roster(self) -> list[RosterEntry]:
        """MAIN: itself, then every registration it accepted (see Rendezvous.build_roster)."""
        self.rendezvous.accept_workers(self.watch.listing)
        return self.rendezvous.build_roster(self.me)

    def register(self, conf: dict, roster: list[RosterEntry], extra_conf: Callable[[dict], dict | None]) -> None:
        """Write this node's config file: ``conf`` (the engine's configuration); MAIN adds
        ``extra_conf(conf)`` (setup_extra_configs), the cluster's size, node list and id."""
        s, me = self.settings, self.me
        if self.main:
            conf = {**conf, **(extra_conf(conf) or {})}
            conf.setdefault(OCI__MAIN_IP, me.ip)
            conf[OCI__WORLD_SIZE] = conf[WORLD_SIZE] = str(len(roster))
            conf[OCI__NODE_LIST] = ",".join(r.ip for r in roster)
            conf[OCI__CLUSTER_ID] = s.cluster_id
        extra: dict[str, Any] = {CONTROL_KEY: self.control_address} if self.control_address else {}
        if not self.main:
            if self.control.enabled:
                extra[CHANNEL_KEY] = True  # MAIN waits for it on the channel at its end (never in vain)
            extra[RESTART_POLICY_KEY] = s.restart_policy  # MAIN decides by the role's policy
            if s.replaces:
                extra[REPLACES_KEY] = s.replaces
        elif self._restarts():
            extra["restarts"] = self._restarts()
        cfg = NodeConfig(node=me.node, mode=me.mode, run_id=me.run_id, rank=s.rank, ip=me.ip, host=me.host,
                         env=json_values(conf), roster=roster, life=self.rendezvous.life, extra=extra)
        self.rendezvous.register(cfg)
        now = self.clock.now()
        for r in roster[1:]:  # a node of the roster that never writes a state file is dead too
            if not self.rendezvous.workers[r.node].legacy:  # (an oracle-ads node never writes one)
                self.watch.expect(state_name(r.node), now)

    def roster_complete(self, look: Callable[[], None], workers: int, ps: int) -> bool:
        """MAIN in configuring: every expected WORKER and PS registered (one listing per poll, and
        one read of each new config: only accepted configs count)."""
        look()
        self.rendezvous.accept_workers(self.watch.listing)
        have_workers, have_ps = self.rendezvous.registered()
        return have_workers >= workers and have_ps >= ps

    def take_main(self) -> bool:
        """A worker accepts MAIN's configuration of this life (see Rendezvous); from then on it
        expects MAIN's state file within the heartbeat timeout (unless MAIN is an oracle-ads node)
        and is on MAIN's channel."""
        known = self.rendezvous.main_config is not None
        cfg = self.rendezvous.take_main_config()
        if cfg is not None and not known and not self.main and not cfg.legacy:
            self.watch.joined(self.clock.now())
            self.control.accepted(cfg)
            self._joined(self._restarts())  # a node that joins a life (a replacement) starts after its restarts so far
        return cfg is not None

    def export(self, read: Callable[[str], NodeConfig | None], files: list[str], names, url: Callable[[str], str]) -> None:
        """Read the config files and export their variables to this node's environment (names:
        None for every name, as oracle-ads; else the declared patterns); identity names stay in
        the file. A hijack name in a file fails the node (NodeConfig refuses it, naming the file)."""
        for f in files:
            name = f.rsplit("/", 1)[-1]
            main = self.rendezvous.main_config
            cfg = main if (name == config_name(MAIN_NODE) and main) else read(name)
            if cfg is None:
                raise NodeFailure(f"{url(name)} is missing")
            take, kept = self.rendezvous.exported(cfg.variables(), names)
            if kept:
                log.info("%s: not exporting %s from %s (%s)", self.me.node, ", ".join(kept), name,
                         "identity or not a variable name" if names is None else
                         "not declared by the engine or OCI__EXPORTS")
            self.exported = MappingProxyType({**self.exported, **take})
            self.environ.update(take)  # oracle-ads semantics: the node's environment carries them
        me = next((r for r in self.rendezvous.roster if r.node == self.me.node), None)
        if me is not None:
            self.environ[OCI__NODE_RANK] = self.environ["RANK"] = str(me.rank)
        self.environ[OCI__NODE_IP] = self.me.ip


def json_values(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``configuration()``'s values as oracle-ads writes them (JSON as they are; anything else as its ``str``)."""
    def plain(v):
        return v if v is None or isinstance(v, (str, int, float, bool, list, dict)) else str(v)

    return {str(k): plain(v) for k, v in conf.items()}
