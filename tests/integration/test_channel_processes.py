"""The control channel across real processes that die or freeze: a SIGKILLed node or MAIN is
seen at once through its dropped connection (long before any ping timeout), a SIGSTOPped one
after the timeout through missed pings. The measured times are printed (``-s``); the bounds
asserted are hang guards only (or, for a freeze, that nothing is declared lost before the timeout)."""

from __future__ import annotations

import signal
import time

import pytest

from benchmarks.channel_peers import Peer
from tests.unit.test_channel_kit import SECRET, Kit

pytestmark = pytest.mark.integration

PRODUCTION = ["--ping-interval", "10", "--timeout", "60"]  # OCI__HEARTBEAT_INTERVAL / _TIMEOUT defaults


@pytest.fixture
def kit():
    k = Kit()
    yield k
    k.close()


def test_sigkill_of_a_worker_is_seen_by_main_through_the_dropped_connection(kit):
    server, sev = kit.server(timeout=60)
    host, port = server.address
    with Peer("connect", host, str(port), "--node", "WORKER_victim", *PRODUCTION, secret=SECRET) as worker:
        worker.wait("connected")
        sev.wait("register")
        killed = worker.signal(signal.SIGKILL)
        (seen, _, node, why), = sev.wait("lost", timeout=20)
    print(f"worker SIGKILL → MAIN's on_lost: {1000 * (seen - killed):.1f} ms ({why})")
    assert node == "WORKER_victim" and "process ended" in why  # closed, or reset when a ping was unread
    assert seen - killed < 10  # far below the 60 s ping timeout: the connection told


def test_sigkill_of_main_is_seen_by_a_worker_through_the_dropped_connection(kit):
    with Peer("serve", "--timeout", "60", secret=SECRET) as main:
        listening = main.wait("listening")
        client, cev = kit.client((listening["host"], listening["port"]), ping_interval=10, timeout=60)
        main.wait("register")
        killed = main.signal(signal.SIGKILL)
        (seen, _, why), = cev.wait("lost", timeout=20)
    print(f"MAIN SIGKILL → worker's on_lost: {1000 * (seen - killed):.1f} ms ({why})")
    assert "process ended" in why  # closed, or reset when a ping was unread
    assert seen - killed < 10


def test_sigstop_of_a_worker_is_lost_by_missed_pings_after_the_timeout(kit):
    timeout, interval = 1.0, 0.25
    server, sev = kit.server(timeout=timeout)
    host, port = server.address
    with Peer("connect", host, str(port), "--node", "WORKER_frozen", "--ping-interval", str(interval),
              "--timeout", "30", secret=SECRET) as worker:
        worker.wait("connected")
        sev.wait("register")
        time.sleep(3 * interval)
        assert not sev.of("lost")  # pinging keeps a live node in
        stopped = worker.signal(signal.SIGSTOP)
        (seen, _, node, why), = sev.wait("lost", timeout=20)
    print(f"worker SIGSTOP → MAIN's on_lost: {seen - stopped:.2f} s (timeout {timeout} s, interval {interval} s)")
    assert node == "WORKER_frozen" and "no ping" in why
    assert timeout - interval - 0.05 <= seen - stopped < 10  # not before the timeout (its last ping may be one interval old)


def test_sigstop_of_main_is_lost_by_missed_pongs_after_the_timeout(kit):
    timeout, interval = 1.0, 0.25
    with Peer("serve", "--timeout", "30", secret=SECRET) as main:
        listening = main.wait("listening")
        client, cev = kit.client((listening["host"], listening["port"]), ping_interval=interval, timeout=timeout)
        main.wait("register")
        time.sleep(3 * interval)
        assert not cev.of("lost")
        stopped = main.signal(signal.SIGSTOP)
        (seen, _, why), = cev.wait("lost", timeout=20)
    print(f"MAIN SIGSTOP → worker's on_lost: {seen - stopped:.2f} s (timeout {timeout} s, interval {interval} s)")
    assert "no answer from MAIN" in why
    assert timeout - interval - 0.05 <= seen - stopped < 10


def test_outcome_broadcast_reaches_worker_processes_and_bye_ends_them():
    with Peer("serve", secret=SECRET) as main:
        listening = main.wait("listening")
        workers = [Peer("connect", listening["host"], str(listening["port"]), "--node", f"WORKER_p{i}",
                        "--count", "2", secret=SECRET) for i in range(2)]
        try:
            for _ in range(4):
                main.wait("register")
            main.send({"type": "outcome", "outcome": "failed", "node": "WORKER_x", "reason": "boom", "exit_code": 1})
            for w in workers:
                assert [w.wait("outcome")["reason"] for _ in range(2)] == ["boom", "boom"]
            main.proc.stdin.close()  # MAIN closes the channel: bye to all
            assert main.proc.wait(10) == 0
            for w in workers:
                assert w.proc.wait(10) == 0  # every client ended by bye, none lost
        finally:
            for w in workers:
                w.stop()
