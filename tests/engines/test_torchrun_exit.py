"""torchrun's exit barrier through :mod:`fsm_cluster.frameworks._torchrun`, on real c10d TCPStores
in real processes: the agent that serves the store leaves last, so no other agent's last request
finds the store gone (a ``recvValueWithTimeout failed`` warning and a C++ stack on a successful
run)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch", reason="PyTorch not installed: pip install torch==2.13.0 (CPU build)")

from fsm_cluster.frameworks._torchrun import serves_the_store  # noqa: E402

pytestmark = [pytest.mark.engine, pytest.mark.integration]

# One agent at its exit barrier: the host serves the store, prints its port and, as torchrun's
# agent does, exits the moment the barrier returns; the others are clients whose waits are slow
# (a loaded machine), the widest window of the race.
AGENT = textwrap.dedent("""
    import os, sys, time
    from datetime import timedelta
    import torch.distributed as dist
    from torch.distributed.elastic.agent.server import api
    from torch.distributed.elastic.utils import store as store_util
    from fsm_cluster.frameworks import _torchrun

    role, world = sys.argv[1], int(sys.argv[2])
    host = role == "host"
    assert _torchrun.patch(host=host)
    if host:
        store = dist.TCPStore("127.0.0.1", 0, world, True, timedelta(seconds=30), wait_for_workers=False)
        print(store.port, flush=True)
    else:
        real = dist.TCPStore("127.0.0.1", int(sys.argv[3]), world, False, timedelta(seconds=30))

        class SlowWaits:  # the store as the agent uses it, each wait 0.5 s late
            def __getattr__(self, name):
                return getattr(real, name)

            def wait(self, keys, *args):
                time.sleep(0.5)
                return real.wait(keys, *args)

        store = SlowWaits()
    went_through = store_util.barrier(store, world, api._TERMINAL_STATE_SYNC_ID, 30)
    print("through" if went_through else "not through", flush=True)
    os._exit(0)  # the agent's process ends at once: its store with it
""")


def agent(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", AGENT, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_the_store_host_leaves_the_exit_barrier_last():
    world = 3
    host = agent("host", str(world))
    port = host.stdout.readline().strip()
    assert port.isdigit(), host.stderr.read()
    others = [agent("client", str(world), port) for _ in range(world - 1)]
    for p in [host, *others]:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip().splitlines()[-1] == "through", out + err
        assert "recvValueWithTimeout" not in err and "Connection was likely closed" not in err, err


@pytest.mark.parametrize("args, host", [
    (["--nnodes=3", "--node-rank=0", "--master-addr=10.0.0.5", "--master-port=29400", "t.py"], True),
    (["--nnodes=3", "--node-rank=2", "--master-addr=10.0.0.5", "--master-port=29400", "t.py"], False),
    (["--nnodes=2:3", "--rdzv-backend=c10d", "--rdzv-endpoint=10.0.0.5:29400", "--rdzv-id=c",
      "--rdzv-conf=is_host=1,last_call_timeout=2", "t.py"], True),
    (["--nnodes=2:3", "--rdzv-backend=c10d", "--rdzv-endpoint=10.0.0.5:29400", "--rdzv-id=c",
      "--rdzv-conf=is_host=0,last_call_timeout=2", "t.py"], False),
])
def test_the_store_host_is_known_from_torchruns_arguments(args, host):
    assert serves_the_store(args) is host
