"""How a node joins its cluster: its registration, MAIN's configuration and roster, the exports.

:class:`Formation` writes this node's config file (a worker's registration; MAIN's carries the
variables every node exports and the roster), waits' predicates (MAIN: every expected node
registered; a worker: MAIN's configuration of this life accepted), and takes MAIN's exported
variables into the node's environment, as oracle-ads does. The files themselves and what counts
as accepted are the wire's (:class:`~fsm_cluster.wire.rendezvous.Rendezvous`).

A worker checks that MAIN's published address answers before it registers (MAIN's channel, named
in its state file from its first heartbeat on) and again when it accepts MAIN's configuration (the
channel's address there; with the channel off, MAIN's address on OCI__CONTROL_PORT when one is
set): an address it cannot reach fails the node at once, saying which address, which interface
this node would use and which setting chooses the nodes' addresses — not an engine's timeout later.
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
from ..errors import NodeFailure, ProtocolError
from ..wire.control import CHANNEL_KEY, CONTROL_KEY, REPLACES_KEY, RESTART_POLICY_KEY
from ..wire.exports import UnsignedExports
from ..wire.models import NodeConfig, RosterEntry
from ..wire.workdir import MAIN_NODE, config_name, state_name
from .identity import is_own, reachable, route_to

log = logging.getLogger(__name__)

# Which of MAIN's variables a node exports into its environment. As in oracle-ads, every one
# (lower-case names too) except the names who say who a node is (OCI__MODE, RANK, JOB_OCID,
# JOB_RUN_OCID: kept in the file); a hijack name (LD_*, PATH, PYTHON*…) fails the node. A job
# definition that sets OCI__EXPORTS narrows that to declared names: fsm_cluster's own below, the
# engine's ``EXPORTS`` and the names (fnmatch patterns) it lists. A file nobody vouches for (no
# cluster secret) gives only declared names, this node's own and addresses', each value by its
# type (wire.exports.UnsignedExports).
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
        self._checked: set[str] = set()  # a worker: MAIN's addresses found reachable

    def names(self, engine_exports) -> tuple[str, ...]:
        """The names this node declares it takes from MAIN's config: BASE_EXPORTS, the engine's
        EXPORTS and the job definition's OCI__EXPORTS (see :meth:`export`)."""
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
        if not self.main:
            self.check_main_early()
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
            self.check_main_config(cfg)
            self.watch.joined(self.clock.now())
            self.control.accepted(cfg)
            self._joined(self._restarts())  # a node that joins a life (a replacement) starts after its restarts so far
        return cfg is not None

    # -- a worker: can MAIN be reached -------------------------------------------------------------
    def _checks(self) -> bool:
        return not self.main and getattr(self.clock, "simulated", True) is False  # real networks only

    def check_main_early(self) -> None:
        """Before a worker registers: MAIN's channel, when MAIN's state file (this life's) names it."""
        if not (self._checks() and self.control.enabled):
            return
        try:
            main = self.rendezvous.workdir.read_state(MAIN_NODE)  # one small read; None: MAIN not there yet
        except ProtocolError:
            return  # forged or torn: MAIN's configuration decides
        if main is not None and main.control and not (main.life and main.life == self.rendezvous.stale_life):
            self.check_main(main.control, "MAIN's control channel (from MAIN's state file)")

    def check_main_config(self, cfg: NodeConfig) -> None:
        """A worker accepting MAIN's configuration: its channel's address (unless this node is on it
        already); with no channel, MAIN's address on OCI__CONTROL_PORT when one is set; else nothing."""
        if not self._checks():
            return
        address = (cfg.extra or {}).get(CONTROL_KEY)
        if address:
            client = self.control.client
            if not (client is not None and client.connected):
                self.check_main(str(address), "MAIN's control channel (from MAIN_config.json)")
        elif self.settings.control_port and cfg.ip:
            self.check_main(f"{cfg.ip}:{self.settings.control_port}", "MAIN's address (MAIN_config.json) on "
                            "OCI__CONTROL_PORT")

    def check_main(self, address: str, what: str) -> None:
        """``address`` (host:port) answers a TCP connection (accepted or refused); else NodeFailure
        naming it, the interface this node would reach it from, and the settings to use. An address
        of this machine's own (loopback, one of its interfaces: a cluster on one host) is not tried."""
        host, _, port = address.rpartition(":")
        if address in self._checked or not host or not port.isdigit() or is_own(host):
            return  # checked, not an address, or this machine's own (one host: nothing to learn)
        why = reachable(host, int(port))
        if why is None:
            self._checked.add(address)
            return
        route = route_to(host)
        via = (f"it would reach {host} from {route[0]} on interface {route[1] or '?'}" if route
               else f"it has no route to {host}")
        raise NodeFailure(f"{what} {address} is not reachable from this node ({why}): this node's address is "
                          f"{self.me.ip}, {via}. Every node must publish an address the others can reach: set "
                          "OCI__CLUSTER_NETWORK (spec: cluster.spec.network) to the cluster's subnet (e.g. "
                          "10.0.1.0/24) or interface name (e.g. eth1), the same for every node, or OCI__SELF_IP "
                          "on each node")

    def export(self, read: Callable[[str], NodeConfig | None], files: list[str], names, url: Callable[[str], str]) -> None:
        """Read the config files and export their variables to this node's environment: every name,
        as oracle-ads, or the declared ones (:meth:`names`) when the job definition sets OCI__EXPORTS;
        of a file nobody vouches for (no cluster secret, not this node's own) only what
        :class:`~fsm_cluster.wire.exports.UnsignedExports` admits. Identity names stay in the file;
        a hijack name in a file fails the node (NodeConfig refuses it, naming the file)."""
        declared = tuple(names or BASE_EXPORTS)
        for f in files:
            name = f.rsplit("/", 1)[-1]
            main = self.rendezvous.main_config
            cfg = main if (name == config_name(MAIN_NODE) and main) else read(name)
            if cfg is None:
                raise NodeFailure(f"{url(name)} is missing")
            own = self.rendezvous.registration
            unsigned = None if self.rendezvous.workdir.secret or cfg == own else UnsignedExports(
                declared, frozenset(own.env if own is not None else ()), cfg.ip,
                frozenset(r.ip for r in cfg.roster) | {cfg.ip})
            take, kept = self.rendezvous.exported(cfg.variables(), declared if self.settings.export_names else None,
                                                  unsigned)
            for level, said in ((logging.INFO, {k: w for k, w in kept.items() if not w.startswith("unsigned")}),
                                (logging.WARNING, {k: w for k, w in kept.items() if w.startswith("unsigned")})):
                if said:
                    log.log(level, "%s: not exporting from %s: %s", self.me.node, name,
                            "; ".join(f"{k} ({why})" for k, why in said.items()))
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
