"""RFC 6062 in the sans-IO core: Connect, ConnectionAttempt, ConnectionBind, timers, teardown."""

from __future__ import annotations

import itertools

import pytest

from delshare.stun import attributes as at
from delshare.stun.constants import PROTO_TCP, Attr, MessageClass, Method
from delshare.stun.message import Message
from delshare.turn.auth import AuthConfig, Authenticator, NonceState
from delshare.turn.peerfilter import PeerFilter
from delshare.turn.server_events import (
    TCP,
    UDP,
    BindDataConnection,
    ClosePeerConnection,
    CloseRelay,
    ConnectionClosed,
    ConnectToPeer,
    SendToClient,
)
from delshare.turn.server_state import (
    AllocationState,
    ConnectionState,
    IllegalTransition,
    TcpConnection,
)
from tests.turn.test_server_core import T0, Client, code, five, make_server

PEER = ("127.0.0.1", 6000)


def tcp_client(**overrides: object) -> Client:
    client = Client(make_server(**overrides), five(TCP))
    assert client.allocate().cls == MessageClass.SUCCESS
    return client


def permit(client: Client, peer: tuple[str, int] = PEER) -> None:
    assert code(client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, peer))) is None


def connect(client: Client, peer: tuple[str, int] = PEER, now: float = T0) -> ConnectToPeer:
    """Send Connect; return the core's ConnectToPeer command (the response is deferred)."""
    response = client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, peer), now=now)
    assert response.cls == MessageClass.INDICATION, response.error  # no answer yet
    commands = [o for o in client.outputs if isinstance(o, ConnectToPeer)]
    return commands[-1]


def connect_ok(client: Client, peer: tuple[str, int] = PEER, now: float = T0) -> int:
    command = connect(client, peer, now)
    client.server.peer_connected(command.conn_id, now)
    (response,) = client.responses(client.pump(now))
    assert response.method == Method.CONNECT and response.cls == MessageClass.SUCCESS
    cid = response.get(at.CONNECTION_ID)
    assert cid == command.conn_id
    return cid


def bind(
    client: Client, cid: int, port: int = 41000, now: float = T0, user: str = "alice"
) -> tuple[Client, Message]:
    data = Client(client.server, five(TCP, port=port), user=user)  # learns its own nonce:
    # nonces are bound to the 5-tuple, so the control connection's would get 438
    response = data.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, cid), now=now)
    return data, response


def test_connect_without_permission_is_403() -> None:
    client = tcp_client()
    response = client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, PEER))
    assert code(response) == 403


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "127.0.0.1", "0.0.0.0"]
)
def test_connect_to_private_targets_is_403_by_default(host: str) -> None:
    client = tcp_client(allow_peers=())
    response = client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, (host, 80)))
    assert code(response) == 403
    assert not [o for o in client.outputs if isinstance(o, ConnectToPeer)]


def test_ipv4_mapped_loopback_is_refused() -> None:
    assert not PeerFilter().allowed("::ffff:127.0.0.1")
    assert not PeerFilter().allowed("::")
    assert not PeerFilter().allowed("fd00::1")
    assert PeerFilter(["127.0.0.0/8"]).allowed("::ffff:127.0.0.1")


def test_connect_on_udp_allocation_is_400() -> None:
    client = Client(make_server(), five(TCP))
    client.allocate((Attr.REQUESTED_TRANSPORT, 17))
    permit(client)
    assert code(client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, PEER))) == 400


def test_connect_success_then_bind() -> None:
    client = tcp_client()
    permit(client)
    cid = connect_ok(client)
    data, response = bind(client, cid)
    assert response.cls == MessageClass.SUCCESS and response.method == Method.CONNECTION_BIND
    assert response.verify_integrity(client.key)
    (command,) = [o for o in data.outputs if isinstance(o, BindDataConnection)]
    assert command.conn_id == cid and command.five == data.five


def test_second_connect_to_same_peer_is_446() -> None:
    client = tcp_client()
    permit(client)
    connect_ok(client)
    response = client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, PEER))
    assert code(response) == 446
    connect_ok(client, ("127.0.0.1", 6001))  # another port is another connection


def test_failed_connect_is_447() -> None:
    client = tcp_client()
    permit(client)
    command = connect(client)
    client.server.peer_connect_failed(command.conn_id, T0)
    (response,) = client.responses(client.pump())
    assert code(response) == 447


def test_connect_timeout_is_447_after_30_seconds() -> None:
    client = tcp_client()
    permit(client)
    command = connect(client)
    client.server.handle_timer(T0 + 29.9)
    assert not client.responses(client.pump())
    client.server.handle_timer(T0 + 30)
    out = client.pump(T0 + 30)
    (response,) = client.responses(out)
    assert code(response) == 447
    assert ClosePeerConnection(command.conn_id) in out
    client.server.peer_connected(command.conn_id, T0 + 31)  # too late: closed again
    assert ClosePeerConnection(command.conn_id) in client.pump()


def test_bind_timeout_closes_the_peer_connection() -> None:
    client = tcp_client()
    permit(client)
    cid = connect_ok(client)
    client.server.handle_timer(T0 + 29)
    assert ClosePeerConnection(cid) not in client.pump()
    client.server.handle_timer(T0 + 30)
    out = client.pump()
    assert ClosePeerConnection(cid) in out
    assert any(isinstance(o, ConnectionClosed) and "timeout" in o.reason for o in out)
    _, response = bind(client, cid, now=T0 + 31)
    assert code(response) == 400


def test_bound_connection_has_no_bind_timer() -> None:
    client = tcp_client()
    permit(client)
    cid = connect_ok(client)
    bind(client, cid)
    client.server.handle_timer(T0 + 60)
    assert ClosePeerConnection(cid) not in client.pump()


def test_connection_bind_unknown_or_reused_id_is_400() -> None:
    client = tcp_client()
    permit(client)
    cid = connect_ok(client)
    _, unknown = bind(client, cid ^ 1)
    assert code(unknown) == 400
    _, first = bind(client, cid, port=41001)
    assert first.cls == MessageClass.SUCCESS
    _, again = bind(client, cid, port=41002)
    assert code(again) == 400


def test_connection_bind_with_another_users_id_is_answered_like_an_unknown_id() -> None:
    """No oracle (issue 10 item 12): bob learns nothing about alice's CONNECTION-IDs."""
    client = tcp_client()
    permit(client)
    cid = connect_ok(client)
    _, theirs = bind(client, cid, user="bob")
    _, unknown = bind(client, cid ^ 0x5A5A5A5A, port=41001, user="bob")
    assert theirs.error == unknown.error and code(theirs) == 400
    _, mine = bind(client, cid, port=41002)  # alice's connection is still hers to bind
    assert mine.cls == MessageClass.SUCCESS


def test_connection_bind_over_udp_is_400() -> None:
    client = tcp_client()
    permit(client)
    cid = connect_ok(client)
    data = Client(client.server, five(UDP, port=41003))
    assert code(data.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, cid))) == 400


def test_connection_bind_without_auth_is_401() -> None:
    client = tcp_client()
    permit(client)
    cid = connect_ok(client)
    data = Client(client.server, five(TCP, port=41004))
    msg = data.build(Method.CONNECTION_BIND, [(Attr.CONNECTION_ID, cid)], auth=False)
    (response,) = data.responses(data.send_raw(msg.encode()))
    assert code(response) == 401


def test_incoming_peer_needs_a_permission() -> None:
    client = tcp_client()
    alloc_id = next(iter(client.server.allocations.values())).id
    assert client.server.peer_accepted(alloc_id, PEER, T0) is None
    permit(client)
    cid = client.server.peer_accepted(alloc_id, PEER, T0)
    assert cid is not None
    (attempt,) = [
        m for m in client.responses(client.pump()) if m.method == Method.CONNECTION_ATTEMPT
    ]
    assert attempt.cls == MessageClass.INDICATION
    assert attempt.get(at.CONNECTION_ID) == cid
    assert attempt.get(at.XOR_PEER_ADDRESS) == PEER
    _, response = bind(client, cid)
    assert response.cls == MessageClass.SUCCESS


def test_incoming_private_peer_refused_without_allow_flag() -> None:
    client = tcp_client(allow_peers=())
    alloc_id = next(iter(client.server.allocations.values())).id
    assert client.server.peer_accepted(alloc_id, ("10.0.0.5", 1234), T0) is None


def test_connection_limits_give_508_and_refuse_incoming() -> None:
    client = tcp_client(max_connections_per_allocation=1)
    permit(client)
    connect_ok(client)
    response = client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, ("127.0.0.1", 6001)))
    assert code(response) == 508
    alloc_id = next(iter(client.server.allocations.values())).id
    assert client.server.peer_accepted(alloc_id, ("127.0.0.1", 6002), T0) is None


def test_pending_connection_limit() -> None:
    client = tcp_client(max_pending_connections=1)
    permit(client)
    cid = connect_ok(client)
    response = client.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, ("127.0.0.1", 6001)))
    assert code(response) == 508
    bind(client, cid)  # bound connections are no longer pending
    connect_ok(client, ("127.0.0.1", 6001))


def _unbound(client: Client) -> int:
    conns = client.server.connections.values()
    return sum(1 for c in conns if c.state != ConnectionState.BOUND)


def test_pending_count_follows_binds_closes_and_teardown() -> None:
    """The pending count is kept incrementally; it must match a recount after every change."""
    client = tcp_client()
    permit(client)
    cids = [connect_ok(client, ("127.0.0.1", 6100 + i)) for i in range(5)]
    for i, cid in enumerate(cids[:3]):
        bind(client, cid, port=41100 + i)
    assert client.server.pending_connections == _unbound(client) == 2
    client.server.connection_closed(cids[0], T0)  # a bound one ends
    client.server.connection_closed(cids[3], T0)  # a pending one ends
    assert client.server.pending_connections == _unbound(client) == 1
    connect(client, ("127.0.0.1", 6200))  # connecting counts as pending
    assert client.server.pending_connections == _unbound(client) == 2
    client.server.client_closed(client.five, T0 + 1)  # teardown drops bound and pending alike
    assert client.server.pending_connections == _unbound(client) == 0
    assert not client.server.connections


def test_connection_ids_are_unpredictable() -> None:
    client = tcp_client()
    permit(client)
    ids = [connect_ok(client, ("127.0.0.1", 7000 + i)) for i in range(20)]
    assert len(set(ids)) == 20
    steps = {b - a for a, b in itertools.pairwise(ids)}
    assert len(steps) > 1  # not a counter


def test_teardown_closes_every_connection_of_the_allocation() -> None:
    """RFC 6062 §5.5: the control connection closing ends the allocation and its connections."""
    client = tcp_client()
    permit(client)
    pending = connect_ok(client)
    bound = connect_ok(client, ("127.0.0.1", 6001))
    bind(client, bound)
    client.server.client_closed(client.five, T0 + 1)
    out = client.pump()
    assert ClosePeerConnection(pending) in out and ClosePeerConnection(bound) in out
    assert any(isinstance(o, CloseRelay) for o in out)
    assert not client.server.connections


def test_refresh_zero_also_tears_down_connections() -> None:
    client = tcp_client()
    permit(client)
    cid = connect_ok(client)
    client.request(Method.REFRESH, (Attr.LIFETIME, 0))
    assert ClosePeerConnection(cid) in client.outputs


def test_closed_bridge_frees_the_peer_for_a_new_connect() -> None:
    client = tcp_client()
    permit(client)
    cid = connect_ok(client)
    bind(client, cid)
    client.server.connection_closed(cid, T0)
    client.pump()
    connect_ok(client)


def test_tcp_allocate_answer_is_sent_on_the_control_connection() -> None:
    client = Client(make_server(), five(TCP))
    response = client.allocate((Attr.REQUESTED_TRANSPORT, PROTO_TCP))
    assert response.cls == MessageClass.SUCCESS
    assert all(o.five == client.five for o in client.outputs if isinstance(o, SendToClient))


def test_connection_life_cycle_is_a_transition_table() -> None:
    conn = TcpConnection(1, 1, PEER, ConnectionState.CONNECTING, 0.0, incoming=False)
    with pytest.raises(IllegalTransition):
        conn.move(ConnectionState.BOUND)  # must connect first
    conn.move(ConnectionState.PENDING)
    conn.move(ConnectionState.BOUND)
    with pytest.raises(IllegalTransition):
        conn.move(ConnectionState.PENDING)


def test_connection_bind_may_reuse_the_control_connections_nonce() -> None:
    """Nonces are bound to the 5-tuple, but a ConnectionBind may carry the nonce of its
    allocation's control connection (coturn's uclient does): RFC 6062 §5.4."""
    client = tcp_client()
    permit(client)
    cid = connect_ok(client)
    data = Client(client.server, five(TCP, port=41005))
    data.nonce = client.nonce
    response = data.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, cid))
    assert response.cls == MessageClass.SUCCESS
    other = Client(client.server, five(TCP, port=41006))
    other.nonce = client.nonce  # not a ConnectionBind: the control nonce is stale here
    assert code(other.request(Method.REFRESH)) == 438


def test_pending_limits_per_allocation_and_per_user_sit_under_the_global_one() -> None:
    """Issue 10 item 4 in the core: alice cannot hold the whole pending budget."""
    limits = {"max_pending_per_allocation": 2, "max_pending_per_user": 3}
    alice = tcp_client(max_pending_connections=5, **limits)
    permit(alice)
    for port in (6001, 6002):
        connect(alice, ("127.0.0.1", port))
    refused = alice.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, ("127.0.0.1", 6003)))
    assert code(refused) == 508 and refused.error is not None
    assert "allocation" in refused.error[1]
    second = Client(alice.server, five(TCP, port=40001))
    assert second.allocate().cls == MessageClass.SUCCESS
    permit(second)
    connect(second, ("127.0.0.1", 6004))
    over_user = second.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, ("127.0.0.1", 6005)))
    assert code(over_user) == 508 and over_user.error is not None
    assert "user" in over_user.error[1]
    bob = Client(alice.server, five(TCP, port=40002), user="bob")
    assert bob.allocate().cls == MessageClass.SUCCESS
    permit(bob)
    connect(bob, ("127.0.0.1", 6006))  # room in the global budget for bob


def test_retransmitted_connect_is_not_processed_twice() -> None:
    client = tcp_client()
    permit(client)
    msg = client.build(Method.CONNECT, [(Attr.XOR_PEER_ADDRESS, PEER)])
    data = msg.encode(client.key, fingerprint=True)
    client.send_raw(data)
    assert client.responses(client.send_raw(data)) == []  # still connecting: no 446
    (command,) = [o for o in client.outputs if isinstance(o, ConnectToPeer)]
    client.server.peer_connected(command.conn_id, T0)
    (first,) = client.responses(client.pump())
    (again,) = client.responses(client.send_raw(data))
    assert first.cls == MessageClass.SUCCESS and again.raw == first.raw


def test_allocation_life_cycle_is_a_transition_table() -> None:
    client = Client(make_server(), five(TCP))
    client.allocate((Attr.REQUESTED_TRANSPORT, PROTO_TCP))
    (alloc,) = client.server.allocations.values()
    assert alloc.state == AllocationState.ACTIVE
    with pytest.raises(IllegalTransition):
        alloc.move(AllocationState.OPENING)
    with pytest.raises(IllegalTransition):
        alloc.move(AllocationState.ACTIVE)


def test_nonce_states_are_named() -> None:
    """RFC 8489 §9.2.4: ours and fresh, ours but expired, or not ours (another 5-tuple)."""
    auth = Authenticator(AuthConfig("del.test", {"u": "p"}, nonce_lifetime=10), b"k" * 32)
    nonce = auth.make_nonce(100.0, "five-a")
    assert auth.nonce_state(nonce, 105.0, "five-a") is NonceState.VALID
    assert auth.nonce_state(nonce, 111.0, "five-a") is NonceState.STALE
    assert auth.nonce_state(nonce, 105.0, "five-b") is NonceState.INVALID
    assert auth.nonce_state("obMatJos2garbage", 105.0, "five-a") is NonceState.INVALID
