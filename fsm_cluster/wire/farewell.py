"""The control channel at the end of a life (:meth:`fsm_cluster.wire.control.Control.close`).

MAIN, its outcome announced, keeps its channel open a moment for the roster nodes that said they
will join it (their config's ``extra.channel``) and have not: one that joins now hears the outcome at
once. It waits only while such a node can still hear it — not once it joined, was lost, or its state
file says it is ending — and at most min(OCI__HEARTBEAT_TIMEOUT, ``JOIN_GRACE``).

The race this settles (issue 26): a worker that looked at the work dir after MAIN's stop marker was
written learns the outcome there and ends without ever joining (it lists before it joins). MAIN
waited the whole grace for it, 10 s after a 0.5 s life. Now such a worker checks out as it ends —
it joins MAIN's channel and leaves at once (:func:`check_out`) — so MAIN's wait, on a condition the
channel's thread notifies, ends then and there; MAIN's looks at the work dir (at once, then on a
back-off) are the fallback for a worker that could not.
"""

from __future__ import annotations

import logging

from ..clock import Backoff
from .states import NodeStatus
from .workdir import MAIN_NODE, state_name

log = logging.getLogger(__name__)

LOOKS = Backoff(first=0.02, factor=2.0, cap=1.0)  # MAIN's looks for nodes that ended (the fallback)
CHECK_OUT_CONNECT = 1.0  # s: a worker's check-out gives MAIN's channel this long to answer


def wait_for_listeners(c) -> None:
    """MAIN (``c``: its Control) at its end: wait until no roster node that said it will join can
    still hear the outcome, or the grace is over. Woken at once when one joins or is lost (the
    channel's thread notifies ``c._lock``); its state file is looked at once, then after 0.02 s,
    doubling up to 1 s (one listing, and a read of each waited node's state file that changed)."""
    from .control import JOIN_GRACE

    deadline = c.clock.now() + min(c.settings.heartbeat_timeout, JOIN_GRACE)
    delays, seen, ended = LOOKS.delays(), {}, set()

    def pending() -> set[str]:
        return c._expected(joining=True) - c.registered - ended

    while True:
        with c._lock:
            waiting = pending()
        if waiting:
            ended |= ended_nodes(c.workdir, waiting, seen, c.rendezvous.life)
            waiting -= ended
        left = deadline - c.clock.now()
        if not waiting or left <= 0:
            if waiting:
                log.info("%s: closing the control channel; %s did not join it (the work dir tells them)",
                         c.node_id, ", ".join(sorted(waiting)))
            return
        with c._lock:
            c._lock.wait_for(lambda: not waiting <= pending(), min(left, next(delays)))


def ended_nodes(workdir, nodes: set[str], seen: dict, life: str) -> set[str]:
    """Of ``nodes``, those whose state file (of ``life``) says they are ending or stopped: one
    listing, and a read of each of their state files not read at this version (``seen``)."""
    out = set()
    try:
        listing = workdir.listing()
        for node in nodes:
            fp = listing.get(state_name(node))
            if fp is None or seen.get(node) == fp:
                continue
            seen[node] = fp
            st = workdir.read_state(node)
            if st is not None and st.state in (NodeStatus.tearable.value, NodeStatus.stopped.value) and \
                    (not st.life or not life or st.life == life):
                out.add(node)
    except Exception as e:  # noqa: BLE001 - the store is down: the channel alone tells
        log.debug("looking for the nodes that ended: %s", e)
    return out


def check_out(c) -> None:
    """A worker (``c``: its Control) that said it will join MAIN's channel and ends without having
    joined — it learnt the outcome from the work dir first: MAIN's end waits for it on the channel,
    so it joins and leaves at once. Only when MAIN's state file (one small read; and the channel's
    key file when the cluster has no secret) names the channel and the outcome: MAIN is at its end."""
    from .channel import ChannelClient, Register
    from .control import CHANNEL_KEY

    mine = c.rendezvous.registration
    if mine is None or not (mine.extra or {}).get(CHANNEL_KEY):
        return
    try:
        main = c.workdir.read_state(MAIN_NODE)
        if main is None or not main.control or main.stop is None or (main.control, main.life) in c.tried or \
                (main.life and main.life == c.rendezvous.stale_life):
            return  # no channel, or MAIN is not at its end (not waiting), or not this life's
        secret = c.secret()
        if not secret:
            return
        s, host, port = c.settings, *main.control.rpartition(":")[::2]
        hello = Register(node=c.node_id, mode=c.mode, run_id=c.me.run_id, rank=s.rank, ip=c.me.ip, host=c.me.host,
                         life=c.rendezvous.life)
        ChannelClient(host, int(port), secret, hello, ping_interval=s.heartbeat_interval, timeout=s.heartbeat_timeout,
                      connect_timeout=CHECK_OUT_CONNECT).connect().close("ended: it learnt the outcome from the work dir")
        log.debug("%s: checked out of MAIN's control channel", c.node_id)
    except Exception as e:  # noqa: BLE001 - MAIN finds its state file instead
        log.debug("%s: could not check out of MAIN's control channel: %s", c.node_id, e)
