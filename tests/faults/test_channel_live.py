"""Hostile and unreachable peers of a live MAIN node's control channel: real ``fsm-cluster run``
processes (short heartbeat: the local profile, 0.5 / 3 s), MAIN's channel on a port chosen here
(OCI__CONTROL_PORT) so the test reaches it before any worker exists; the port MAIN published
(``MAIN_config.json`` → ``extra.control``) is checked against it at the end.

Each test throws something at MAIN — fuzzed bytes and frames, wrong secrets, a 1 byte/s client —
then a real worker joins over the channel and the cluster completes with exit 0 everywhere, and
MAIN's log has one line per bad peer and no traceback. Then the fallbacks: a worker that cannot
reach the channel (connection refused: it runs in a network namespace of its own) completes
through the work dir, and a cluster mixing a channel worker with an OCI__CONTROL=off one
completes, and still sees the off-channel worker's kill -9 through the heartbeat timeout.
Timings are recorded or printed, never asserted: the waits are hang guards.
"""

from __future__ import annotations

import json
import secrets
import select
import signal
import socket
import struct
import threading
import time

import pytest
from engines.cluster import PrivateNetwork, netns_available
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsm_cluster.wire.channel import ChannelClient, ChannelUnavailable, wire
from fsm_cluster.wire.channel.messages import encode
from fsm_cluster.wire.models import NodeConfig
from tests.unit.test_channel import json_values, messageish
from tests.unit.test_channel_kit import closed_by_peer, hello, raw_authenticated

from .cluster import PROFILES, row
from .conftest import free_port

pytestmark = pytest.mark.integration

LOCAL = PROFILES["local"]
AUTH_TIMEOUT = 5  # ChannelServer's default auth_timeout (control.py does not change it)


# -- a MAIN node whose channel the test can reach before any worker exists --------------------------
def live_main(clusters, secret: str | None = None, **env):
    """A started MAIN of a 1 + 1 cluster, waiting for its worker; its channel listening on a port
    chosen here. Entry scripts run until ``finish``. → (cluster, (host, port), secret)."""
    secret = secret or secrets.token_hex(32)
    port = free_port()
    c = clusters("file", workers=1, profile=LOCAL,
                 env={"OCI__CLUSTER_SECRET": secret, "FAULT_FINISH": "1", **env})
    main = c.start_node("MAIN", 0, OCI__CONTROL_PORT=port)

    def listening() -> bool:
        text = main.log.read_text(errors="replace")
        assert "control channel not started" not in text, c.dump()  # port taken since free_port()
        return f"control channel on 127.0.0.1:{port}" in text

    c.until(listening, "MAIN's control channel listening")
    return c, ("127.0.0.1", port), secret


def form_and_finish(c, address, during=None) -> None:
    """A real worker joins over the channel (``during`` runs once it did), the entry scripts
    finish, every node exits 0; MAIN published ``address`` and logged no traceback, nothing was
    lost on the channel, nothing is left running."""
    endpoint = f"{address[0]}:{address[1]}"
    worker = c.start_node("WORKER", 1)
    c.wait_running()
    c.until(lambda: f"joined MAIN's control channel at {endpoint}" in worker.log.read_text(errors="replace"),
            "the worker joined MAIN's control channel")
    if during is not None:
        during()
    (c.marks / "finish").write_text("")
    assert c.wait() == [0, 0], c.dump()
    main = c.nodes[0]
    published = c.workdir.read("MAIN_config.json", NodeConfig)
    assert published is not None and published.extra.get("control") == endpoint, published
    marker = c.stop_marker()
    assert marker is not None and marker.outcome == "complete" and marker.node == "MAIN", marker
    text = main.log.read_text(errors="replace")
    assert "Traceback" not in text and "server loop failed" not in text and "callback" not in text, text
    assert " lost " not in text and "lost MAIN" not in worker.log.read_text(errors="replace"), c.dump()
    assert "complete" in worker.last_line(), c.dump()
    c.assert_no_orphans()


def peer_lines(c, local_port: int) -> list[str]:
    """MAIN's log lines naming the peer that connected from ``local_port``."""
    return [ln for ln in c.nodes[0].lines() if f" from 127.0.0.1:{local_port}: " in ln]


def assert_logged_once(c, local_port: int, why: str) -> None:
    c.until(lambda: peer_lines(c, local_port), f"MAIN logged the peer 127.0.0.1:{local_port}")
    lines = peer_lines(c, local_port)
    assert len(lines) == 1 and "WARNING" in lines[0] and why in lines[0], lines


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


# -- 2. fuzzed bytes and frames --------------------------------------------------------------------
JUNK = st.one_of(
    st.binary(max_size=300).map(lambda b: ("raw", b)),  # random bytes instead of a handshake
    st.binary(max_size=120).map(lambda b: ("raw", wire.MAGIC + b)),  # the right magic, then junk
    st.binary(max_size=300).map(lambda b: ("frame-no-handshake", b)),  # a well-formed frame, no handshake
    st.integers(0, wire.CLIENT_PROOF - 1).map(lambda n: ("proof-cut", n)),  # the right proof, cut short
    st.binary(max_size=300).map(lambda b: ("auth-raw", b)),  # right secret, then random bytes
    st.binary(max_size=300).map(lambda b: ("auth-frame", b)),  # a MAC'd random body
    st.one_of(json_values, messageish).map(lambda v: ("auth-frame", json.dumps(v).encode())),  # MAC'd JSON
    st.binary(max_size=300).map(lambda b: ("auth-bad-tag", b)),  # valid length prefix, junk tag and body
    st.integers(wire.MAX_CLIENT_FRAME + 1, 2**32 - 1).map(lambda n: ("auth-oversized", n)),
    messageish.map(lambda v: ("auth-truncated", json.dumps(v).encode())),  # a frame cut short
)


def throw(address, secret: bytes, item) -> None:
    """One fuzz example on a fresh connection, then close it."""
    kind, value = item
    if kind.startswith("auth-"):
        sock, writer, _ = raw_authenticated(address, secret, timeout=10)
        if kind == "auth-raw":
            data = value
        elif kind == "auth-frame":
            data = writer.frame(value)
        elif kind == "auth-bad-tag":
            data = struct.pack(">I", len(value)) + secrets.token_bytes(32) + value
        elif kind == "auth-oversized":
            data = struct.pack(">I", value) + b"\0" * 32 + b"{}"
        else:
            frame = writer.frame(value)
            data = frame[:len(frame) // 2]
    else:
        sock = socket.create_connection(address, timeout=10)
        if kind == "raw":
            data = value
        elif kind == "frame-no-handshake":
            data = wire.FrameWriter(secrets.token_bytes(32)).frame(value)
        else:
            data = wire.client_proof(secret, _recv_exact(sock, wire.SERVER_HELLO))[1][:value]
    with sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # MAIN may close first (an oversized length is refused at once)


def test_fuzzed_frames_against_a_live_main_leave_the_cluster_whole(clusters):
    c, address, secret = live_main(clusters)
    thrown = []

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(JUNK)
    def fuzz(item) -> None:
        throw(address, secret.encode(), item)
        thrown.append(item[0])

    def dropped() -> int:
        return sum("control channel: dropped connection" in ln for ln in c.nodes[0].lines())

    fuzz()  # MAIN waits for its worker
    form_and_finish(c, address, during=fuzz)  # and again while the worker is on the channel
    # every bad connection cost one log line, and only its own connection (the worker was not lost)
    assert len(thrown) >= 100 and dropped() == len(thrown), (len(thrown), dropped())
    print(f"{len(thrown)} fuzzed connections: {sorted(set(thrown))}")


# -- 3. authentication refused ---------------------------------------------------------------------
def test_wrong_missing_or_another_clusters_secret_is_refused_and_logged_once(clusters):
    c, address, _ = live_main(clusters)
    _, other_address, other_secret = live_main(clusters)  # another live cluster
    # the other secret is a real one: its own MAIN lets it in
    sock, _, _ = raw_authenticated(other_address, other_secret.encode(), timeout=10)
    sock.close()

    def proof_with(key: bytes) -> tuple[int, bytes]:
        """Answer MAIN's greeting with a proof made with ``key``: (our port, MAIN's answer)."""
        with socket.create_connection(address, timeout=10) as s:
            s.sendall(wire.client_proof(key, _recv_exact(s, wire.SERVER_HELLO))[1])
            answer = s.recv(1)
            assert closed_by_peer(s, timeout=10)
            return s.getsockname()[1], answer

    refused = "authentication failed (wrong or no cluster secret)"
    for key in (b"a-wrong-secret-long-enough-0123456789", other_secret.encode()):
        port, answer = proof_with(key)
        assert answer == wire.REFUSED
        assert_logged_once(c, port, refused)
    # a real client with another cluster's secret says why it cannot use the channel
    client = ChannelClient(*address, other_secret.encode(), hello("WORKER_w1"), ping_interval=0.5, timeout=3)
    with pytest.raises(ChannelUnavailable, match="refused the authentication"):
        client.connect()
    # no secret: a connection that sends nothing is dropped at the authentication deadline
    with socket.create_connection(address, timeout=10) as s:
        assert closed_by_peer(s, timeout=AUTH_TIMEOUT + 30)
        port = s.getsockname()[1]
    assert_logged_once(c, port, f"did not authenticate within {AUTH_TIMEOUT} s")
    # no secret: a worker's register frame sent without the handshake
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(wire.FrameWriter(secrets.token_bytes(32)).frame(encode(hello("WORKER_w1"))))
        _recv_exact(s, wire.SERVER_HELLO)  # MAIN greets every connection first
        answer = s.recv(1)
        assert closed_by_peer(s, timeout=10)
        port = s.getsockname()[1]
    assert answer == wire.REFUSED
    assert_logged_once(c, port, "not a control channel client (bad greeting)")
    assert sum(refused in ln for ln in c.nodes[0].lines()) == 3  # the two above and the real client's
    form_and_finish(c, address)


# -- 4. a slow client ------------------------------------------------------------------------------
def test_a_one_byte_per_second_client_does_not_hold_up_the_cluster(clusters):
    """Clients trickling a correct proof at 1 byte/s, one after another (each is dropped at the
    authentication deadline), for the whole life of the cluster: a real worker forms with MAIN
    and the cluster, kept running until MAIN dropped the first slow client, ends beside them."""
    c, address, secret = live_main(clusters)
    stop = threading.Event()
    ports: list[int] = []

    def slow_client() -> None:
        with socket.create_connection(address, timeout=AUTH_TIMEOUT + 30) as s:
            ports.append(s.getsockname()[1])
            proof = wire.client_proof(secret.encode(), _recv_exact(s, wire.SERVER_HELLO))[1]
            for byte in proof:
                s.send(bytes([byte]))
                # a second's pause; MAIN sends nothing more mid-handshake: readable = closed
                if select.select([s], [], [], 1.0)[0] and not s.recv(64) or stop.is_set():
                    return

    def slow_clients() -> None:
        while not stop.is_set():
            try:
                slow_client()
            except (OSError, EOFError):  # dropped by MAIN, or MAIN ended: the next one
                stop.wait(0.1)

    t = threading.Thread(target=slow_clients, daemon=True)
    t.start()
    try:
        c.until(lambda: ports, "a slow client connected")
        started = time.monotonic()
        form_and_finish(c, address, during=lambda: c.until(lambda: peer_lines(c, ports[0]) and len(ports) > 1,
                                                           "MAIN dropped the first slow client; the next came"))
        print(f"cluster formed and ended {time.monotonic() - started:.1f} s after its worker started, "
              f"beside {len(ports)} slow client(s)")
    finally:
        stop.set()
        t.join(AUTH_TIMEOUT + 30)
    assert not t.is_alive()
    why = f"did not authenticate within {AUTH_TIMEOUT} s"
    assert_logged_once(c, ports[0], why)
    for port in ports[1:]:  # dropped at the deadline too, or cut short by the cluster's end (no line)
        assert all(why in ln for ln in peer_lines(c, port)) and len(peer_lines(c, port)) <= 1


# -- 5. the channel unreachable: the work dir carries everything -----------------------------------
@pytest.fixture
def private_network():
    net = PrivateNetwork()
    yield net
    net.close()


@pytest.mark.skipif(not netns_available(), reason="needs a network namespace (unshare, nsenter, ip; root)")
def test_a_worker_refused_by_mains_channel_completes_through_the_work_dir(clusters, private_network):
    c = clusters("file", workers=1, profile=LOCAL,
                 env={"OCI__CLUSTER_SECRET": secrets.token_hex(32), "FAULT_RUN_FOR": "1"})
    c.start_node("MAIN", 0)
    # the worker's own loopback: MAIN's published 127.0.0.1:port refuses it; the work dir is shared
    worker = c.start_node("WORKER", 1, prefix=private_network.prefix())
    assert c.wait() == [0, 0], c.dump()
    endpoint = c.workdir.read("MAIN_config.json", NodeConfig).extra.get("control")
    assert endpoint and endpoint.startswith("127.0.0.1:"), endpoint
    said = [ln for ln in worker.lines() if "unavailable" in ln]
    assert len(said) == 1, c.dump()
    assert f"control channel to MAIN at {endpoint} unavailable" in said[0] and "Connection refused" in said[0], said
    assert "joined MAIN's control channel" not in worker.log.read_text(), c.dump()
    assert "cluster complete" in worker.last_line() and "cluster complete" in c.nodes[0].last_line(), c.dump()
    marker = c.stop_marker()
    assert marker is not None and marker.outcome == "complete", marker
    c.assert_no_orphans()


# -- 6. a cluster mixing the channel and the work dir ----------------------------------------------
def _mixed(clusters, **env):
    """1 MAIN + WORKER_w1 on the channel + WORKER_w2 with OCI__CONTROL=off."""
    c = clusters("file", workers=2, profile=LOCAL, env={"OCI__CLUSTER_SECRET": secrets.token_hex(32), **env})
    c.start(per_node=lambda rank: {"OCI__CONTROL": "off"} if rank == 2 else {})
    return c


def _assert_mixed(c) -> None:
    w1, w2 = c.nodes[1].log.read_text(), c.nodes[2].log.read_text()
    assert "joined MAIN's control channel" in w1 and "control channel" not in w2, c.dump()


def test_a_cluster_of_channel_and_off_channel_workers_completes(clusters):
    c = _mixed(clusters, FAULT_RUN_FOR="1")
    assert c.wait() == [0, 0, 0], c.dump()
    _assert_mixed(c)
    for n in c.nodes:
        assert "cluster complete" in n.last_line(), c.dump()
    c.assert_no_orphans()


def test_kill9_of_an_off_channel_worker_is_seen_through_the_heartbeat(clusters, record):
    c = _mixed(clusters)
    c.wait_running()
    _assert_mixed(c)
    victim = c.nodes[2]
    c.signal(victim, signal.SIGKILL)
    marker = c.assert_failed_everywhere(f"{victim.node_id} stopped heart-beating", first="MAIN", killed=(victim,))
    record(row(c, "kill -9 off-channel WORKER", "file", marker, "mixed: w1 on the channel, w2 OCI__CONTROL=off"))
