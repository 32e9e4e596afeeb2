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
* :mod:`~fsm_cluster.channel.messages` — the pydantic messages; :mod:`~fsm_cluster.channel.wire` —
  the handshake and frames; :mod:`~fsm_cluster.channel.secretfile` — a 0600 secret file for nodes
  handed no secret.

Standard library + pydantic only (the bootstrap imports pydantic already). ``python -m
fsm_cluster.channel serve|connect`` runs either side from a shell (JSON lines on stdout): a
reachability check for operators, and the peer process of the tests and benchmarks.
"""

from .client import ChannelClient
from .messages import Bye, OutcomeMsg, Ping, Pong, Register, Roster
from .secretfile import load_or_create_secret, read_secret
from .server import ChannelServer
from .wire import MAX_CLIENT_FRAME, MAX_SERVER_FRAME, ChannelUnavailable

__all__ = ["ChannelClient", "ChannelServer", "ChannelUnavailable", "Register", "Roster", "Ping", "Pong",
           "OutcomeMsg", "Bye", "load_or_create_secret", "read_secret", "MAX_CLIENT_FRAME", "MAX_SERVER_FRAME"]
