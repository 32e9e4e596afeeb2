"""``python -m fsm_cluster.wire.channel serve|connect``: either side of the control channel from a shell.

Every event is one JSON line on stdout with ``t`` = ``time.monotonic()`` (one clock for every
process of a machine, so a test or benchmark can compare them). The secret comes from
``OCI__CLUSTER_SECRET`` or ``--secret-file``.

* ``serve [--host H] [--port P] [--timeout S]``: prints ``listening`` (host, port), then
  ``register``/``lost``/``outcome``/``bye``; every line on stdin is a MAIN message (JSON) to
  broadcast (``sent`` says when, ``at``); end of stdin closes the channel (``bye`` to all) and exits 0.
* ``connect HOST PORT [--node WORKER_x] [--count N] [--ping-interval S] [--timeout S]``: N clients
  (``WORKER_x-<i>`` when N > 1; the process's soft limit of open files raised for them); prints
  ``connected`` per client, then ``roster``/``outcome`` (``rx``: when the frame arrived, before it
  was parsed)/``bye``/``lost``; exits once every client ended: 0 when all ended by ``bye``, 3 when
  one was lost, 2 when one could not connect.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from . import limits
from .client import ChannelClient
from .messages import SERVER_MESSAGE, Register
from .secretfile import read_secret
from .server import ChannelServer
from .wire import ChannelUnavailable

_out = threading.Lock()


def emit(event: str, **fields) -> None:
    line = json.dumps({"event": event, "t": time.monotonic(), **fields}, default=str)
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _secret(args) -> bytes:
    if args.secret_file:
        return read_secret(args.secret_file)
    value = os.environ.get("OCI__CLUSTER_SECRET", "")
    if not value:
        sys.exit("no secret: set OCI__CLUSTER_SECRET or pass --secret-file")
    return value.encode()


def serve(args) -> int:
    server = ChannelServer(
        _secret(args), args.host, args.port, timeout=args.timeout,
        on_register=lambda m, cid: emit("register", node=m.node, conn=cid, life=m.life),
        on_lost=lambda node, why: emit("lost", node=node, why=why),
        on_outcome=lambda m: emit("outcome", **m.model_dump()),
        on_bye=lambda node, reason: emit("bye", node=node, reason=reason)).start()
    host, port = server.address
    emit("listening", host=host, port=port, pid=os.getpid())
    try:
        for line in sys.stdin:
            if line.strip():
                msg = SERVER_MESSAGE.validate_json(line)
                at = time.monotonic()
                server.broadcast(msg)
                emit("sent", type=msg.type, at=at)
    finally:
        server.close()
    return 0


def connect(args) -> int:
    secret = _secret(args)
    limits.raise_open_files(limits.descriptors_for(args.count, limits.open_files()))
    ended: list[str] = []
    done = threading.Semaphore(0)
    clients = []
    for i in range(args.count):
        node = args.node if args.count == 1 else f"{args.node}-{i}"
        run_id = node.split("_", 1)[1]
        hello = Register(node=node, mode=node.split("_", 1)[0], run_id=run_id, ip="127.0.0.1")

        def end(kind: str, why: str, node=node) -> None:
            emit(kind, node=node, why=why)
            ended.append(kind)
            done.release()

        client = ChannelClient(
            args.host, args.port, secret, hello, ping_interval=args.ping_interval, timeout=args.timeout,
            on_lost=lambda why, end=end: end("lost", why), on_bye=lambda why, end=end: end("bye", why))
        client.on_roster = lambda m, node=node, c=client: emit("roster", node=node, entries=len(m.entries),
                                                              life=m.life, rx=c.received_at)
        client.on_outcome = lambda m, node=node, c=client: emit("outcome", node=node, rx=c.received_at,
                                                                **m.model_dump(exclude={"node"}))
        try:
            clients.append(client.connect())
        except ChannelUnavailable as e:
            emit("unavailable", node=node, why=str(e))
            return 2
        emit("connected", node=node, pid=os.getpid())
    for _ in clients:
        done.acquire()
    return 3 if "lost" in ended else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fsm_cluster.wire.channel", description=__doc__.split("\n\n")[0])
    p.add_argument("--secret-file")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--timeout", type=float, default=60.0)
    c = sub.add_parser("connect")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--node", default=f"WORKER_{os.getpid()}")
    c.add_argument("--count", type=int, default=1)
    c.add_argument("--ping-interval", type=float, default=10.0)
    c.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    return serve(args) if args.cmd == "serve" else connect(args)


if __name__ == "__main__":
    sys.exit(main())
