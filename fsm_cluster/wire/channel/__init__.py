"""The control channel: one authenticated TCP connection from every WORKER/PS to MAIN.

Over it MAIN learns each arrival at once (``register``), pushes the roster (``roster``), both
sides see the other's death at once (a dropped connection) or its freeze within the heartbeat
timeout (missed ``ping``/``pong``), and the outcome travels both ways (``outcome``). The work dir
stays the rendezvous, the record and the fallback: a node that cannot connect raises
:class:`ChannelUnavailable` once and goes on through the files.

* :class:`ChannelServer` — MAIN: ``ChannelServer(secret, host, port, on_register=…, on_lost=…,
  on_outcome=…).start()``, ``.address``, ``broadcast_roster``, ``broadcast_outcome``, ``send``,
  ``disconnect``, ``close``.
* :class:`ChannelClient` — WORKER/PS: ``ChannelClient(host, port, secret, Register(…),
  ping_interval=…, timeout=…, on_roster=…, on_outcome=…, on_lost=…).connect()``,
  ``send_outcome``, ``close``.
* :mod:`~fsm_cluster.wire.channel.messages` — the pydantic messages; :mod:`~fsm_cluster.wire.channel.wire` —
  the handshake and frames; :mod:`~fsm_cluster.wire.channel.secretfile` — a 0600 secret file (tools).

Wiring into a node's life (not done here; the channel changes how events arrive, not which
states exist):

* MAIN, at start: the secret is ``OCI__CLUSTER_SECRET`` (encoded), else a fresh random key MAIN
  writes for this life as ``<cluster dir>/channel_secret`` (``Control.secret``); ``ChannelServer(secret, self_ip,
  OCI__CONTROL_PORT or 0, timeout=OCI__HEARTBEAT_TIMEOUT, on_register=…, on_lost=…,
  on_outcome=…).start()`` and ``address`` into ``MAIN_config.json`` (e.g. its ``extra``) in the
  first write. ``on_register(msg, conn_id)`` is an arrival (as a config file would be; check
  ``msg.life``, ``disconnect(conn_id, why)`` refuses); once every expected node is in,
  ``broadcast_roster(entries, life, env)``, and ``send(conn_id, Roster(…))`` to a node that comes
  later. ``on_lost(node, why)`` is a peer dead or silent (today's "silent past the timeout", now
  at once for a process that died); ``on_outcome(msg)`` a node's end (``msg.to_marker()`` → the
  first-writer-wins stop marker). When the marker is decided: ``broadcast_outcome(
  OutcomeMsg.from_marker(marker))``, then ``close()``.
* WORKER/PS, once it read MAIN's config: ``ChannelClient(host, port, secret, Register(node, mode,
  run_id, rank, ip, host, life), ping_interval=OCI__HEARTBEAT_INTERVAL,
  timeout=OCI__HEARTBEAT_TIMEOUT, on_roster=…, on_outcome=…, on_lost=…, on_bye=…).connect()``; on
  :class:`ChannelUnavailable` log it once and go on through the work dir (also for
  ``OCI__CONTROL=off``, without trying). ``on_outcome`` → StopRequested, ``on_lost`` →
  NodeFailure (MAIN died or froze), ``on_bye`` → MAIN closed on purpose (its outcome came first,
  or the work dir has it). A node that fails: ``send_outcome(OutcomeMsg(outcome="failed",
  node=…))`` as well as its files; at its end ``close()``.
* Callbacks run on the channel's thread: hand each event to the node's thread (the Keeper's
  ``hand_over``, or a queue its tick drains); the VirtualClock simulations keep the channel off
  (real sockets, real time).
* ``connect()`` returns once the ``register`` frame is sent; MAIN knows the node a moment later
  (``nodes()``).

Standard library + pydantic only (the bootstrap imports pydantic already). ``python -m
fsm_cluster.wire.channel serve|connect`` runs either side from a shell (JSON lines on stdout): a
reachability check for operators, and the peer process of the tests and benchmarks.
"""

from .client import ChannelClient
from .messages import Bye, DoneMsg, DumpMsg, FailureMsg, OutcomeMsg, Ping, Pong, QuietMsg, Register, RestartMsg, Roster
from .secretfile import load_or_create_secret, read_secret
from .server import ChannelServer
from .wire import MAX_CLIENT_FRAME, MAX_SERVER_FRAME, SILENT, ChannelUnavailable

__all__ = ["ChannelClient", "ChannelServer", "ChannelUnavailable", "Register", "Roster", "Ping", "Pong",
           "FailureMsg", "RestartMsg", "DumpMsg", "QuietMsg", "DoneMsg", "SILENT",
           "OutcomeMsg", "Bye", "load_or_create_secret", "read_secret", "MAX_CLIENT_FRAME", "MAX_SERVER_FRAME"]
