"""Our two sans-IO TURN cores against each other, in memory, with an explicit clock.

As aioquic pairs its client and server connections: whatever ``TurnClientCore`` queues is fed to
``TurnServer`` and back, with no sockets. ``Wire`` plays the server's adapter (it answers
``OpenRelay``, records what the relay would send to peers, completes RFC 6062 data connections)
and the network: over TCP/TLS both directions go through a ``StreamFramer`` in 3-byte pieces, so
the exchange also survives any split of the byte stream. Time moves only when a test says so;
each side's timers fire when ``Wire.advance`` passes their deadline.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from delshare.errors import TransactionTimeout
from delshare.stun import attributes as at
from delshare.stun.attributes import Address, Attribute
from delshare.stun.constants import PROTO_TCP, PROTO_UDP, MessageClass, Method
from delshare.stun.framing import ChannelData, StreamFramer
from delshare.stun.message import Message, decode_message
from delshare.turn.auth import AuthConfig
from delshare.turn.client import (
    ClientEvent,
    ConnectionAttempted,
    PeerDataReceived,
    TransactionFailed,
    TransactionSucceeded,
    TurnClientCore,
)
from delshare.turn.client_errors import AllocationError, AuthenticationError, PeerConnectError
from delshare.turn.server import TurnServer
from delshare.turn.server_config import ServerConfig
from delshare.turn.server_events import (
    TCP,
    UDP,
    AllocationCreated,
    AllocationDeleted,
    BindDataConnection,
    ConnectionBound,
    ConnectToPeer,
    FiveTuple,
    OpenRelay,
    Output,
    SendToClient,
    SendToPeer,
)

REALM = "pair.example"
USER, PASSWORD = "alice", "alice-pw"
SERVER: Address = ("192.0.2.1", 3478)
RELAY_IP = "192.0.2.1"
PEER: Address = ("198.51.100.7", 6000)
T0 = 1_800_000_000.0  # wall-clock seconds: the server's nonces and REST names carry Unix times
CHUNK = 3  # stream bytes are delivered in pieces this small
MAX_ROUNDS = 100  # Wire.run gives up instead of looping forever


class Wire:
    """Carries bytes between client cores and one ``TurnServer``, playing the server's adapter."""

    def __init__(self, server: TurnServer) -> None:
        self.server = server
        self.now = T0
        self.cores: dict[FiveTuple, TurnClientCore] = {}
        self.to_server: dict[FiveTuple, StreamFramer] = {}
        self.to_client: dict[FiveTuple, StreamFramer] = {}
        self.seen_by_client: list[Message] = []  # every STUN message the server sent
        self.to_peers: list[SendToPeer] = []
        self.connects: list[ConnectToPeer] = []
        self.bound: dict[int, FiveTuple] = {}  # CONNECTION-ID -> client data connection
        self.events: list[Output] = []  # the server's events (past tense), for assertions
        self.lose_successes = 0  # lose this many of the next success responses to clients
        self._relay_port = 50000

    def attach(self, core: TurnClientCore, five: FiveTuple) -> TurnClientCore:
        self.cores[five] = core
        if five.stream:
            self.to_server[five], self.to_client[five] = StreamFramer(), StreamFramer()
        return core

    def run(self) -> None:
        """Move bytes both ways until neither side has anything more to say."""
        for _ in range(MAX_ROUNDS):
            moved = False
            for five, core in list(self.cores.items()):
                for data in core.data_to_send():
                    moved = True
                    for frame in self._split(self.to_server.get(five), data):
                        self.server.receive(five, frame, self.now)
            for output in self.server.next_outputs():
                moved = True
                self._adapter(output)
            if not moved:
                return
        raise AssertionError("the cores kept talking for MAX_ROUNDS rounds")

    def advance(self, seconds: float) -> None:
        """Let time pass, firing each side's timers as their deadlines come."""
        end = self.now + seconds
        while True:
            deadlines = [core.get_timer() for core in self.cores.values()]
            deadlines.append(self.server.get_timer())
            due = min((d for d in deadlines if d is not None and d <= end), default=None)
            if due is None:
                break
            self.now = max(self.now, due)
            for core in list(self.cores.values()):
                timer = core.get_timer()
                if timer is not None and timer <= self.now:
                    core.handle_timer(self.now)
            self.server.handle_timer(self.now)
            self.run()
        self.now = end

    def _split(self, framer: StreamFramer | None, data: bytes) -> Iterator[bytes]:
        """A datagram as it is; stream bytes through a framer, a few bytes at a time."""
        if framer is None:
            yield data
            return
        for start in range(0, len(data), CHUNK):
            yield from framer.feed(data[start : start + CHUNK])

    def _to_client(self, five: FiveTuple, data: bytes) -> None:
        if data[0] >> 6 == 0:
            message = decode_message(data)
            if message.cls == MessageClass.SUCCESS and self.lose_successes:
                self.lose_successes -= 1
                return
            self.seen_by_client.append(message)
        for frame in self._split(self.to_client.get(five), data):
            self.cores[five].receive(frame, self.now)

    def _adapter(self, output: Output) -> None:
        match output:
            case SendToClient(five, data):
                self._to_client(five, data)
            case OpenRelay(alloc_id):
                self._relay_port += 1
                self.server.relay_opened(alloc_id, (RELAY_IP, self._relay_port), self.now)
            case SendToPeer():
                self.to_peers.append(output)
            case ConnectToPeer():
                self.connects.append(output)
            case BindDataConnection(conn_id, five, response):
                self.bound[conn_id] = five
                self._to_client(five, response)
            case _:
                self.events.append(output)

    def allocation_id(self) -> int:
        created = [e for e in self.events if isinstance(e, AllocationCreated)]
        assert created, "no allocation was created"
        return created[-1].alloc_id


def make_server(nonce_lifetime: float = 600.0) -> TurnServer:
    auth = AuthConfig(REALM, {USER: PASSWORD}, nonce_lifetime=nonce_lifetime)
    return TurnServer(ServerConfig(auth, allow_peers=("198.51.100.0/24",)), nonce_key=b"k" * 32)


def control(transport: str, port: int = 40000) -> FiveTuple:
    return FiveTuple(transport, ("203.0.113.5", port), SERVER)


def events(core: TurnClientCore) -> list[ClientEvent]:
    found: list[ClientEvent] = []
    while (event := core.next_event()) is not None:
        found.append(event)
    return found


def transact(
    wire: Wire, core: TurnClientCore, method: int, attrs: list[Attribute]
) -> TransactionSucceeded | TransactionFailed:
    """Send one request through the wire; its outcome (other events are kept for the caller)."""
    handle = core.request(method, attrs, wire.now)
    wire.run()
    outcome = [e for e in events(core) if getattr(e, "handle", None) == handle]
    assert len(outcome) == 1, f"{Method(method).name}: {outcome}"
    result = outcome[0]
    assert isinstance(result, TransactionSucceeded | TransactionFailed)
    return result


def succeeded(result: TransactionSucceeded | TransactionFailed) -> Message:
    assert isinstance(result, TransactionSucceeded), result
    return result.response


def allocated(transport: str, **server: float) -> tuple[Wire, TurnClientCore]:
    """A wire with one client that holds an allocation of the control connection's kind."""
    five = control(transport)
    wire = Wire(make_server(**server))
    core = wire.attach(TurnClientCore(USER, PASSWORD, reliable=five.stream), five)
    proto = PROTO_TCP if five.stream else PROTO_UDP
    succeeded(transact(wire, core, Method.ALLOCATE, [at.REQUESTED_TRANSPORT(proto)]))
    return wire, core


# -- RFC 8656 over UDP --------------------------------------------------------------------------


def test_allocate_answers_the_401_challenge_by_itself() -> None:
    wire, core = allocated(UDP)
    challenge, answer = wire.seen_by_client
    assert challenge.error is not None and challenge.error[0] == 401
    assert core.auth.realm == REALM and core.auth.nonce == challenge.get(at.NONCE)
    assert answer.cls == MessageClass.SUCCESS
    assert answer.get(at.XOR_RELAYED_ADDRESS) == (RELAY_IP, 50001)
    assert answer.get(at.XOR_MAPPED_ADDRESS) == control(UDP).client
    assert core.auth.sha256  # the server offered PASSWORD-ALGORITHMS, so SHA-256 integrity


def test_refresh_permission_send_and_data_indications() -> None:
    wire, core = allocated(UDP)
    refreshed = succeeded(transact(wire, core, Method.REFRESH, [at.LIFETIME(1200)]))
    assert refreshed.get(at.LIFETIME) == 1200
    succeeded(transact(wire, core, Method.CREATE_PERMISSION, [at.XOR_PEER_ADDRESS(PEER)]))

    core.indication(Method.SEND, [at.XOR_PEER_ADDRESS(PEER), at.DATA(b"to peer")])
    wire.run()
    assert wire.to_peers == [SendToPeer(wire.allocation_id(), PEER, b"to peer")]

    wire.server.receive_peer_datagram(wire.allocation_id(), PEER, b"from peer", wire.now)
    wire.run()
    assert events(core) == [PeerDataReceived(PEER, b"from peer")]


def test_channel_bind_then_channel_data_both_ways() -> None:
    wire, core = allocated(UDP)
    bind: list[Attribute] = [
        at.CHANNEL_NUMBER(0x4001),
        at.XOR_PEER_ADDRESS(PEER),
    ]
    succeeded(transact(wire, core, Method.CHANNEL_BIND, bind))
    assert core.channels == {0x4001: PEER}

    core.queue_raw(ChannelData(0x4001, b"via channel").encode(pad=False))
    wire.run()
    assert wire.to_peers == [SendToPeer(wire.allocation_id(), PEER, b"via channel")]

    wire.server.receive_peer_datagram(wire.allocation_id(), PEER, b"back", wire.now)
    wire.run()
    assert events(core) == [PeerDataReceived(PEER, b"back")]
    assert not any(m.method == Method.DATA for m in wire.seen_by_client)  # ChannelData, not Data


def test_refresh_zero_deletes_and_later_requests_are_437() -> None:
    wire, core = allocated(UDP)
    deleted = succeeded(transact(wire, core, Method.REFRESH, [at.LIFETIME(0)]))
    assert deleted.get(at.LIFETIME) == 0
    assert any(isinstance(e, AllocationDeleted) for e in wire.events)
    failed = transact(wire, core, Method.REFRESH, [])
    assert isinstance(failed, TransactionFailed) and isinstance(failed.error, AllocationError)
    assert failed.error.code == 437


def test_allocation_expires_on_the_server_clock() -> None:
    wire, _ = allocated(UDP)
    wire.advance(599)
    assert not any(isinstance(e, AllocationDeleted) for e in wire.events)
    wire.advance(2)
    assert [e.reason for e in wire.events if isinstance(e, AllocationDeleted)] == ["expired"]


def test_stale_nonce_is_answered_by_the_client_core() -> None:
    wire, core = allocated(UDP, nonce_lifetime=60)
    old_nonce = core.auth.nonce
    wire.advance(61)
    succeeded(transact(wire, core, Method.REFRESH, []))
    assert core.auth.stale_nonces == 1 and core.auth.nonce != old_nonce
    assert [m.error[0] for m in wire.seen_by_client if m.error] == [401, 438]


def test_lost_response_is_retransmitted_and_the_server_replays_its_answer() -> None:
    """RFC 8489 §6.2.1 on the client, RFC 8656 §7.2 (retransmitted Allocate) on the server."""
    five = control(UDP)
    wire = Wire(make_server())
    core = wire.attach(TurnClientCore(USER, PASSWORD, reliable=False), five)
    handle = core.request(Method.ALLOCATE, [at.REQUESTED_TRANSPORT(PROTO_UDP)], wire.now)
    wire.lose_successes = 1
    wire.run()  # 401, then the authenticated Allocate, whose answer is lost ...
    assert events(core) == []
    wire.advance(0.4)
    assert events(core) == []
    wire.advance(0.2)  # ... re-sent at RTO 500 ms
    [result] = events(core)
    assert isinstance(result, TransactionSucceeded) and result.handle == handle
    assert len([e for e in wire.events if isinstance(e, AllocationCreated)]) == 1


def test_wrong_password_fails_after_one_authenticated_try() -> None:
    five = control(UDP)
    wire = Wire(make_server())
    core = wire.attach(TurnClientCore(USER, "wrong", reliable=False), five)
    failed = transact(wire, core, Method.ALLOCATE, [at.REQUESTED_TRANSPORT(PROTO_UDP)])
    assert isinstance(failed, TransactionFailed)
    assert isinstance(failed.error, AuthenticationError) and failed.error.code == 401
    assert len(wire.seen_by_client) == 2


# -- RFC 6062 over TCP --------------------------------------------------------------------------


def tcp_allocated_with_permission() -> tuple[Wire, TurnClientCore]:
    wire, core = allocated(TCP)
    succeeded(transact(wire, core, Method.CREATE_PERMISSION, [at.XOR_PEER_ADDRESS(PEER)]))
    return wire, core


def bind_data_connection(wire: Wire, core: TurnClientCore, connection_id: int) -> FiveTuple:
    """RFC 6062 §5.4: a new connection, a forked core (same credentials), ConnectionBind."""
    data_five = control(TCP, port=40001 + len(wire.bound))
    data_core = wire.attach(core.fork(), data_five)
    bound = transact(wire, data_core, Method.CONNECTION_BIND, [at.CONNECTION_ID(connection_id)])
    succeeded(bound)
    assert wire.bound[connection_id] == data_five
    assert ConnectionBound(connection_id, wire.allocation_id()) in wire.events
    return data_five


def test_connect_then_connection_bind() -> None:
    wire, core = tcp_allocated_with_permission()
    handle = core.request(Method.CONNECT, [at.XOR_PEER_ADDRESS(PEER)], wire.now)
    wire.run()
    [connect] = wire.connects
    assert connect.peer == PEER and events(core) == []  # answered once the peer is reached

    wire.server.peer_connected(connect.conn_id, wire.now)
    wire.run()
    [result] = events(core)
    assert isinstance(result, TransactionSucceeded) and result.handle == handle
    assert result.response.get(at.CONNECTION_ID) == connect.conn_id
    bind_data_connection(wire, core, connect.conn_id)
    unchallenged = [m for m in wire.seen_by_client if m.method == Method.CONNECTION_BIND]
    assert [m.cls for m in unchallenged] == [MessageClass.SUCCESS]  # the fork knew the nonce


def test_peer_connection_attempt_then_connection_bind() -> None:
    wire, core = tcp_allocated_with_permission()
    connection_id = wire.server.peer_accepted(wire.allocation_id(), PEER, wire.now)
    assert connection_id is not None
    wire.run()
    assert events(core) == [ConnectionAttempted(connection_id, PEER)]
    bind_data_connection(wire, core, connection_id)


def test_failed_connect_is_447() -> None:
    wire, core = tcp_allocated_with_permission()
    handle = core.request(Method.CONNECT, [at.XOR_PEER_ADDRESS(PEER)], wire.now)
    wire.run()
    wire.server.peer_connect_failed(wire.connects[0].conn_id, wire.now)
    wire.run()
    [result] = events(core)
    assert isinstance(result, TransactionFailed) and result.handle == handle
    assert isinstance(result.error, PeerConnectError) and result.error.code == 447


def test_unreached_peer_is_447_at_the_server_timeout_before_the_client_gives_up() -> None:
    """The server's 30 s Connect timer (RFC 6062 §5.2) beats the client's 39.5 s (RFC 8489)."""
    wire, core = tcp_allocated_with_permission()
    core.request(Method.CONNECT, [at.XOR_PEER_ADDRESS(PEER)], wire.now)
    wire.run()
    wire.advance(29.9)
    assert events(core) == []
    wire.advance(0.2)
    [result] = events(core)
    assert isinstance(result, TransactionFailed) and isinstance(result.error, PeerConnectError)


def test_a_request_the_server_never_answers_times_out_at_39_5_s() -> None:
    wire, core = tcp_allocated_with_permission()
    wire.lose_successes = 1
    transact_handle = core.request(Method.REFRESH, [], wire.now)
    wire.run()
    wire.advance(39.4)
    assert events(core) == []
    wire.advance(0.2)
    [result] = events(core)
    assert isinstance(result, TransactionFailed) and result.handle == transact_handle
    assert isinstance(result.error, TransactionTimeout)


@pytest.mark.parametrize("transport", [UDP, TCP])
def test_binding_needs_no_credentials(transport: str) -> None:
    five = control(transport)
    wire = Wire(make_server())
    core = wire.attach(TurnClientCore(USER, PASSWORD, reliable=five.stream), five)
    handle = core.request(Method.BINDING, [], wire.now, authenticate=False)
    wire.run()
    [result] = events(core)
    assert isinstance(result, TransactionSucceeded) and result.handle == handle
    assert result.response.get(at.XOR_MAPPED_ADDRESS) == five.client
