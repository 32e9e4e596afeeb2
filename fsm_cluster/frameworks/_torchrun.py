"""``python -m fsm_cluster.frameworks._torchrun <torchrun arguments>``: torchrun whose exit barrier the store's host leaves last.

torchrun's agents meet at an exit barrier once their workers are done (``store_util.barrier`` on
the rendezvous store: each agent counts itself in, the last one sets a key, every agent waits for
that key). The store is served by one agent's process (MAIN's: node rank 0, or the c10d host);
when that agent is not the last to count in, it may see the key, return and exit before the last
agent's wait for the key was answered, and that agent logs "Error waiting on exit barrier" with a
``DistNetworkError`` traceback although every worker succeeded. Here the barrier gets a second
half: after it, every agent counts itself out and waits (at most ``LINGER`` s) until all have; the
host therefore exits only once every agent is past the barrier. Errors in that second half are
not reported (by then every worker has succeeded; at worst the host was already gone); a barrier
that failed is torchrun's own error, as before.

Everything else is torchrun as installed (:func:`torch.distributed.run.main`, same arguments).
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

LINGER = 30.0  # seconds the agents wait for each other after the exit barrier, at most
LEFT = "/fsm_cluster/exit_barrier/left"  # the count of agents past the barrier (after the barrier's prefix)
ALL_LEFT = "/fsm_cluster/exit_barrier/all_left"


def _leave_together(store, world_size: int, key_prefix: str) -> None:
    from datetime import timedelta

    try:
        store.set_timeout(timedelta(seconds=LINGER))
        if store.add(key_prefix + LEFT, 1) >= world_size:
            store.set(key_prefix + ALL_LEFT, "1")
        store.wait([key_prefix + ALL_LEFT])
    except Exception:  # noqa: BLE001 - see the module doc: nothing is lost past the barrier
        log.debug("after the exit barrier", exc_info=True)


def patch() -> bool:
    """Give torchrun's exit barrier its second half; False when this torch has no such barrier."""
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
            _leave_together(store, world_size, key_prefix)

    exit_barrier.fsm_cluster = True
    store_util.barrier = exit_barrier  # the agent calls store_util.barrier(...) at its exit barrier
    return True


def main(argv: list[str] | None = None) -> None:
    patch()
    from torch.distributed.run import main as torchrun

    args = sys.argv[1:] if argv is None else list(argv)
    sys.argv = ["torchrun", *args]
    torchrun(args)


if __name__ == "__main__":  # pragma: no cover - run as torchrun's replacement
    sys.exit(main())
