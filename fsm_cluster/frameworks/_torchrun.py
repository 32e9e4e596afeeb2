"""``python -m fsm_cluster.frameworks._torchrun <torchrun arguments>``: torchrun whose exit barrier the store's host leaves last.

torchrun's agents meet at an exit barrier once their workers are done (``store_util.barrier`` on
the rendezvous store: each agent counts itself in, the last one sets a key, every agent waits for
that key). The store is served by one agent's process (MAIN's: node rank 0, or the c10d host);
when that agent is not the last to count in, it may see the key, return and exit before the last
agent's wait for the key was answered, and that agent logs "Error waiting on exit barrier" with a
``DistNetworkError`` traceback although every worker succeeded. Here the barrier gets a second
half: after it, every agent counts itself out and waits (at most ``LINGER`` s) until all have.
That wait has the same race one step later (the host sees the last agent's "all left" key and
exits while that agent's own wait for the key is still unanswered: a ``recvValueWithTimeout
failed`` warning with a C++ stack, 2 runs in 8 of the pytorch init example under load), so the
host, known from torchrun's arguments (static rendezvous: node rank 0; c10d: ``is_host=1``),
waits once more: every other agent's last request is an ``add`` to a "done" count, and the host
polls that count until all of them are in (the store answers requests in order, so the answers
were sent). The host exits last, with nothing of anyone's left unanswered. Errors in that second
half are not reported (by then every worker has succeeded; at worst the host was already gone); a
barrier that failed is torchrun's own error, as before.

Everything else is torchrun as installed (:func:`torch.distributed.run.main`, same arguments).
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

LINGER = 30.0  # seconds the agents wait for each other after the exit barrier, at most
LEFT = "/fsm_cluster/exit_barrier/left"  # the count of agents past the barrier (after the barrier's prefix)
ALL_LEFT = "/fsm_cluster/exit_barrier/all_left"


DONE = "/fsm_cluster/exit_barrier/done"  # the count of agents other than the host that are through
POLL = 0.01  # seconds between the host's looks at that count


def _leave_together(store, world_size: int, key_prefix: str, host: bool) -> bool:
    """The barrier's second half (see the module doc); True when it went through without an error."""
    import time
    from datetime import timedelta

    try:
        store.set_timeout(timedelta(seconds=LINGER))
        if store.add(key_prefix + LEFT, 1) >= world_size:
            store.set(key_prefix + ALL_LEFT, "1")
        store.wait([key_prefix + ALL_LEFT])
        if not host:
            store.add(key_prefix + DONE, 1)  # this agent's last request to the host's store
            return True
        deadline = time.monotonic() + LINGER
        while store.add(key_prefix + DONE, 0) < world_size - 1:
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL)
        return True
    except Exception:  # noqa: BLE001 - see the module doc: nothing is lost past the barrier
        log.debug("after the exit barrier", exc_info=True)
        return False


def serves_the_store(args: list[str]) -> bool:
    """Whether the agent of these torchrun arguments hosts the rendezvous store: static rendezvous'
    node rank 0, or a c10d agent told ``is_host=1`` (as :func:`.pytorch.torchrun_command` does)."""
    from torch.distributed.run import parse_args

    try:
        parsed = parse_args(args)
    except SystemExit:  # torchrun itself reports bad arguments
        return False
    if parsed.rdzv_backend == "static":
        return parsed.node_rank == 0
    conf = dict(item.split("=", 1) for item in parsed.rdzv_conf.split(",") if "=" in item)
    return conf.get("is_host", "").strip().lower() in ("1", "true", "yes")


def patch(host: bool = False) -> bool:
    """Give torchrun's exit barrier its second half; False when this torch has no such barrier.
    ``host``: this agent serves the store (it leaves last)."""
    try:
        from torch.distributed.elastic.agent.server import api
        from torch.distributed.elastic.utils import store as store_util
    except ImportError:
        return False
    prefix = getattr(api, "_TERMINAL_STATE_SYNC_ID", None)
    barrier = getattr(store_util, "barrier", None)
    if prefix is None or barrier is None or getattr(barrier, "fsm_cluster", False):
        return False

    def exit_barrier(store, world_size, key_prefix, *args, **kwargs):
        barrier(store, world_size, key_prefix, *args, **kwargs)  # its errors are torchrun's, as before
        if key_prefix == prefix:
            return _leave_together(store, world_size, key_prefix, host)
        return None

    exit_barrier.fsm_cluster = True
    store_util.barrier = exit_barrier  # the agent calls store_util.barrier(...) at its exit barrier
    return True


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    patch(host=serves_the_store(args))
    from torch.distributed.run import main as torchrun

    sys.argv = ["torchrun", *args]
    torchrun(args)


if __name__ == "__main__":  # pragma: no cover - run as torchrun's replacement
    sys.exit(main())
