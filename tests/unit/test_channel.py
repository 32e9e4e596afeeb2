"""The control channel on real sockets (127.0.0.1), in one process: messages, frames, handshake,
server and client. Timings are never asserted, only bounded generously as hang guards."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fsm_cluster.wire.channel import (
    ChannelUnavailable,
    OutcomeMsg,
    Ping,
    Register,
    load_or_create_secret,
    read_secret,
    wire,
)
from fsm_cluster.wire.channel.messages import CLIENT_MESSAGE, SERVER_MESSAGE, encode
from fsm_cluster.wire.models import StopMarker
from tests.unit.test_channel_kit import (
    OTHER_SECRET,
    SECRET,
    Kit,
    closed_by_peer,
    hello,
    raw_authenticated,
)

ROSTER = [{"node": "MAIN", "mode": "MAIN", "run_id": "main", "rank": 0, "ip": "127.0.0.1"},
          {"node": "WORKER_a", "mode": "WORKER", "run_id": "a", "rank": 1, "ip": "127.0.0.1"}]


@pytest.fixture
def kit():
    k = Kit()
    yield k
    k.close()


def wait_registered(server, *nodes: str, timeout: float = 10.0) -> None:
    """``connect()`` returns once the register frame is sent; MAIN knows the node a moment later."""
    deadline = time.monotonic() + timeout
    while not set(nodes) <= set(server.nodes()):
        assert time.monotonic() < deadline, f"{nodes} not registered within {timeout} s: {server.nodes()}"
        time.sleep(0.005)


def assert_served(kit: Kit, server, ev, node: str = "WORKER_good") -> None:
    """A good client can still connect, register, and get a broadcast."""
    client, cev = kit.client(server.address, node)
    wait_registered(server, node)
    server.broadcast_roster(ROSTER, life="L")
    cev.wait("roster")
    assert node in server.nodes()
    client.close()


# -- messages ----------------------------------------------------------------------------------------
def test_register_name_must_match_mode_and_run_id():
    with pytest.raises(ValidationError, match="not WORKER_<run_id>"):
        Register(node="WORKER_b", mode="WORKER", run_id="a", ip="x")
    with pytest.raises(ValidationError):
        Register(node="MAIN", mode="MAIN", run_id="main", ip="x")  # MAIN never registers with itself


def test_messages_are_strict_and_one_directional():
    with pytest.raises(ValidationError):
        CLIENT_MESSAGE.validate_json(b'{"type": "ping", "seq": 1, "extra": 1}')
    with pytest.raises(ValidationError):
        CLIENT_MESSAGE.validate_json(b'{"type": "roster", "entries": []}')  # MAIN's message from a node
    with pytest.raises(ValidationError):
        SERVER_MESSAGE.validate_json(encode(hello()))
    assert CLIENT_MESSAGE.validate_json(encode(Ping(seq=3))) == Ping(seq=3)


def test_outcome_round_trips_through_the_stop_marker():
    marker = StopMarker(outcome="failed", node="WORKER_a", reason="boom", exit_code=3, life="L")
    msg = OutcomeMsg.from_marker(marker)
    assert msg.to_marker() == marker
    assert SERVER_MESSAGE.validate_json(encode(msg)) == msg


# -- frames and handshake ------------------------------------------------------------------------------
def test_frames_survive_any_split_and_refuse_tampering_replay_and_oversize():
    w, r = wire.FrameWriter(b"k" * 32), wire.FrameReader(b"k" * 32, 100)
    stream = w.frame(b'{"a": 1}') + w.frame(b"[]")
    got = []
    for i in range(len(stream)):
        got += r.feed(stream[i:i + 1])
    assert got == [b'{"a": 1}', b"[]"] and not r.partial

    first = wire.FrameWriter(b"k" * 32).frame(b"{}")
    with pytest.raises(wire.FrameError, match="authentication"):
        wire.FrameReader(b"k" * 32, 100).feed(first[:-1] + b"]")  # body changed
    replay = wire.FrameReader(b"k" * 32, 100)
    replay.feed(first)
    with pytest.raises(wire.FrameError, match="authentication"):
        replay.feed(first)  # the same frame again: its sequence number is used up
    with pytest.raises(wire.FrameError, match="exceeds"):
        wire.FrameReader(b"k" * 32, 100).feed(struct.pack(">I", 101) + b"\0" * 32)  # no body needed


def test_handshake_needs_the_same_secret_on_both_sides():
    ns, greeting = wire.server_hello()
    nc, proof = wire.client_proof(SECRET, greeting)
    assert wire.check_client_proof(SECRET, ns, proof) == nc
    with pytest.raises(wire.FrameError, match="authentication failed"):
        wire.check_client_proof(OTHER_SECRET, ns, proof)
    with pytest.raises(wire.FrameError, match="does not hold"):  # an impostor MAIN
        wire.check_server_proof(SECRET, ns, nc, wire.server_proof(OTHER_SECRET, ns, nc))
    with pytest.raises(ValueError, match="at least"):
        wire.check_secret(b"short")


# -- secret file ---------------------------------------------------------------------------------------
def test_secret_file_is_created_once_owner_only_and_agreed_on(tmp_path):
    path = str(tmp_path / "channel_secret")
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(load_or_create_secret(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results[0]) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_secret(path) == results[0]
    assert sorted(os.listdir(tmp_path)) == ["channel_secret"]  # no temporary file left
    (tmp_path / "bad").write_bytes(b"short\n")
    with pytest.raises(ValueError, match="not a cluster secret"):
        read_secret(str(tmp_path / "bad"))


# -- server and client ---------------------------------------------------------------------------------
def test_register_roster_ping_and_outcomes_both_ways(kit):
    server, sev = kit.server(timeout=5)
    client, cev = kit.client(server.address, "WORKER_a")
    (_, _, msg, conn_id), = sev.wait("register")
    assert msg == hello("WORKER_a") and server.nodes() == {"WORKER_a": conn_id}

    server.broadcast_roster(ROSTER, life="L", env={"MASTER_ADDR": "127.0.0.1"})
    roster = cev.wait("roster")[0][2]
    assert [e.node for e in roster.entries] == ["MAIN", "WORKER_a"] and roster.env["MASTER_ADDR"] == "127.0.0.1"

    assert client.send_outcome(OutcomeMsg(outcome="failed", node="WORKER_a", reason="boom", exit_code=3))
    assert sev.wait("outcome")[0][2].reason == "boom"
    server.broadcast_outcome(OutcomeMsg(outcome="failed", node="WORKER_a", reason="boom", life="L"))
    assert cev.wait("outcome")[0][2].outcome == "failed"
    deadline = time.monotonic() + 5
    while client.rtt is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.rtt is not None  # a pong came back
    assert not sev.of("lost") and not cev.of("lost")


def test_close_says_bye_to_every_node_and_ends_the_thread(kit):
    server, sev = kit.server()
    clients = [kit.client(server.address, f"WORKER_{i}") for i in range(3)]
    sev.wait("register", 3)
    server.close()
    for client, cev in clients:
        assert cev.wait("bye")[0][2] == "MAIN closes the channel"
        assert not cev.of("lost") and not client.send_outcome(OutcomeMsg(outcome="complete", node=client.hello.node))
    assert not server._thread.is_alive()
    with pytest.raises(ChannelUnavailable, match="refused"):
        kit.client(server.address, "WORKER_late")


def test_client_bye_is_not_a_loss(kit):
    server, sev = kit.server()
    client, cev = kit.client(server.address)
    sev.wait("register")
    client.close(reason="done")
    assert sev.wait("bye")[0][2:] == ("WORKER_a", "done")
    assert not sev.of("lost") and not cev.of("lost") and not cev.of("bye")
    assert not client._thread.is_alive()


def test_roster_broadcast_reaches_8_clients(kit):
    server, sev = kit.server()
    clients = [kit.client(server.address, f"WORKER_{i}") for i in range(8)]
    sev.wait("register", 8)
    server.broadcast_roster(ROSTER, life="L")
    for _, cev in clients:
        assert cev.wait("roster")[0][2].life == "L"


def test_200_concurrent_clients_register(kit):
    server, sev = kit.server(timeout=30)
    barrier = threading.Barrier(200)
    errors: list[BaseException] = []

    def join(i: int) -> None:
        client, _ = kit.client(server.address, f"WORKER_{i}", connect=False, ping_interval=5, timeout=30,
                               connect_timeout=20)
        barrier.wait()
        try:
            client.connect()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=join, args=(i,)) for i in range(200)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    sev.wait("register", 200, timeout=60)
    took = time.monotonic() - start
    print(f"200 concurrent clients registered in {took:.2f} s")
    assert not errors and len(server.nodes()) == 200


def test_reregistration_replaces_the_old_connection_without_a_loss(kit):
    server, sev = kit.server()
    old, old_ev = kit.client(server.address, "WORKER_a")
    sev.wait("register")
    new, _ = kit.client(server.address, "WORKER_a")
    second = sev.wait("register", 2)[1]
    assert "replaced" in old_ev.wait("bye")[0][2]
    assert server.nodes() == {"WORKER_a": second[3]} and not sev.of("lost")


def test_disconnect_refuses_one_node_with_a_reason(kit):
    server, sev = kit.server()
    client, cev = kit.client(server.address)
    conn_id = sev.wait("register")[0][3]
    server.disconnect(conn_id, "another life")
    assert cev.wait("bye")[0][2] == "another life"
    assert not sev.of("lost") and not cev.of("lost")


def test_a_failing_callback_does_not_stop_the_server(kit):
    def boom(msg, conn_id):
        raise RuntimeError("owner bug")

    server, sev = kit.server(on_register=boom)
    kit.client(server.address, "WORKER_a")
    client, cev = kit.client(server.address, "WORKER_b")
    wait_registered(server, "WORKER_a", "WORKER_b")
    server.broadcast_roster(ROSTER)
    cev.wait("roster")
    assert set(server.nodes()) == {"WORKER_a", "WORKER_b"}


@pytest.mark.parametrize("frames, why", [
    ([Ping(seq=0)], "before register"),
    ([hello("WORKER_a"), hello("WORKER_a")], "registered twice"),
    ([hello("WORKER_a"), OutcomeMsg(outcome="failed", node="WORKER_b")], "outcome for 'WORKER_b'"),
])
def test_protocol_violations_close_only_that_connection(kit, frames, why, caplog):
    server, sev = kit.server()
    good, gev = kit.client(server.address, "WORKER_good")
    sev.wait("register")
    sock, writer, _ = raw_authenticated(server.address)
    with sock:
        sock.sendall(b"".join(writer.frame(encode(f)) for f in frames))
        assert closed_by_peer(sock)
    assert any(why in r.getMessage() for r in caplog.records)
    server.broadcast_roster(ROSTER)
    gev.wait("roster")
    assert "WORKER_good" in server.nodes()


# -- refusal and hostile peers ---------------------------------------------------------------------------
@pytest.mark.parametrize("secret", [OTHER_SECRET, b"wrong-secret-but-long-enough!"], ids=["other-cluster", "wrong"])
def test_wrong_secret_is_refused_clearly_and_the_good_client_is_served(kit, secret):
    server, sev = kit.server()
    good, gev = kit.client(server.address, "WORKER_good")
    sev.wait("register")
    start = time.monotonic()
    with pytest.raises(ChannelUnavailable, match="refused the authentication"):
        kit.client(server.address, "WORKER_bad", secret=secret)
    assert time.monotonic() - start < 5
    server.broadcast_roster(ROSTER)
    gev.wait("roster")
    assert set(server.nodes()) == {"WORKER_good"} and not sev.of("lost")


def test_a_client_with_no_secret_that_sends_nothing_is_dropped_and_others_served(kit, caplog):
    server, sev = kit.server(auth_timeout=0.5)
    silent = socket.create_connection(server.address)
    with silent:
        assert_served(kit, server, sev)  # while the silent one holds its connection
        assert closed_by_peer(silent, timeout=10)
    assert any("did not authenticate within 0.5 s" in r.getMessage() for r in caplog.records)


def test_a_client_that_authenticates_but_never_registers_is_dropped(kit, caplog):
    server, sev = kit.server(auth_timeout=0.5)
    sock, _, _ = raw_authenticated(server.address)
    with sock:
        assert closed_by_peer(sock, timeout=10)
    assert any("did not register" in r.getMessage() for r in caplog.records)


def test_slow_client_one_byte_per_second_does_not_stall_others(kit, caplog):
    server, sev = kit.server(auth_timeout=2.5)
    _, greeting = wire.server_hello()
    proof = wire.client_proof(SECRET, greeting)[1]  # a well-formed answer, trickled
    slow = socket.create_connection(server.address)
    stop = threading.Event()

    def trickle() -> None:
        for byte in proof:
            if stop.wait(1.0):
                return
            try:
                slow.send(bytes([byte]))
            except OSError:
                return

    t = threading.Thread(target=trickle)
    t.start()
    try:
        time.sleep(1.2)  # the slow client is mid-handshake
        start = time.monotonic()
        assert_served(kit, server, sev)
        print(f"good client served in {time.monotonic() - start:.3f} s beside a 1 byte/s client")
        assert closed_by_peer(slow, timeout=10)  # its auth deadline
    finally:
        stop.set()
        t.join()
        slow.close()


def test_an_authenticated_client_trickling_a_frame_is_lost_at_the_timeout(kit):
    server, sev = kit.server(timeout=1.0)
    sock, writer, _ = raw_authenticated(server.address)
    with sock:
        sock.sendall(writer.frame(encode(hello("WORKER_slow"))))
        sev.wait("register")
        frame = writer.frame(encode(Ping(seq=0)))
        for byte in frame[:20]:  # never a whole frame
            try:
                sock.send(bytes([byte]))
            except (ConnectionResetError, BrokenPipeError):
                break  # MAIN dropped it (and told it so: a bye with lost=True) — what is tested
            if sev.of("lost"):
                break
            time.sleep(0.1)
        (_, _, node, why), = sev.wait("lost")
        assert node == "WORKER_slow" and "no ping" in why


def test_connection_refused_raises_channel_unavailable_quickly(kit):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        start = time.monotonic()
        with pytest.raises(ChannelUnavailable, match="cannot connect.*refused"):
            kit.client(("127.0.0.1", port))
    assert time.monotonic() - start < 2


def test_a_peer_that_never_answers_raises_channel_unavailable_after_the_connect_timeout(kit):
    with socket.socket() as s:  # listens (the kernel accepts) but says nothing
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ChannelUnavailable, match="did not answer the handshake in time"):
            kit.client(s.getsockname(), connect_timeout=0.3)


def test_a_peer_that_is_not_a_channel_raises_channel_unavailable(kit):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()

        def answer() -> None:
            conn, _ = s.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"x" * 40)
                time.sleep(0.5)

        t = threading.Thread(target=answer)
        t.start()
        with pytest.raises(ChannelUnavailable, match="not a control channel"):
            kit.client(s.getsockname())
        t.join()


# -- fuzzing against a live server ------------------------------------------------------------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                           max_leaves=12)
messageish = st.fixed_dictionaries({"type": st.sampled_from(["register", "ping", "outcome", "bye", "roster", "pong", "x"])},
                                   optional={"seq": json_values, "node": json_values, "mode": json_values,
                                             "run_id": json_values, "ip": json_values, "outcome": json_values,
                                             "reason": json_values, "extra": json_values})


def test_fuzzed_bytes_and_frames_never_stall_or_crash_a_live_server(kit):
    server, sev = kit.server(auth_timeout=2.0)
    good, gev = kit.client(server.address, "WORKER_good", ping_interval=0.05)
    sev.wait("register")

    def run(sock: socket.socket, data: bytes) -> None:
        with sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server may close first (an oversized length is refused at once)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=300))
    def before_auth(data: bytes) -> None:
        run(socket.create_connection(server.address, timeout=5), data)

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(
        st.binary(max_size=300),  # raw bytes after the handshake
        st.binary(max_size=300).map(lambda b: ("frame", b)),  # MAC'd random body
        st.one_of(json_values, messageish).map(lambda v: ("frame", json.dumps(v).encode())),  # MAC'd random JSON
        st.integers(wire.MAX_CLIENT_FRAME + 1, 2**32 - 1).map(lambda n: ("length", n)),  # oversized length prefix
        messageish.map(lambda v: ("truncated", json.dumps(v).encode())),  # a frame cut short
    ))
    def after_auth(item) -> None:
        sock, writer, _ = raw_authenticated(server.address)
        if isinstance(item, bytes):
            data = item
        elif item[0] == "frame":
            data = writer.frame(item[1])
        elif item[0] == "length":
            data = struct.pack(">I", item[1]) + b"\0" * 32 + b"{}"
        else:
            frame = writer.frame(item[1])
            data = frame[:len(frame) // 2]
        run(sock, data)

    before_auth()
    after_auth()
    assert_served(kit, server, sev, node="WORKER_after_fuzz")
    assert server._thread.is_alive() and "WORKER_good" in server.nodes()
    assert not gev.of("lost") and good.rtt is not None
