"""Issue 10 item 4: one user holding many pending RFC 6062 connections cannot lock others out.

alice makes TCP allocations and has peers dial her relayed addresses until she holds far more
unbound connections than the relay's global budget (256 by default). The per-allocation (32)
and per-user (64) limits keep her below it: bob's Connect still succeeds (not 508) and a peer
dialling bob still produces a ConnectionAttempt at once.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

from delshare.stun import attributes as at
from delshare.stun.attributes import Address
from delshare.stun.constants import PROTO_TCP, Attr, MessageClass, Method
from tests.adversarial.conftest import scaled
from tests.adversarial.relay_support import RelayProcess, TurnClient, error_code

PER_USER = 64  # the relay's default --max-pending-per-user
CONNECTIONS_PER_ALLOCATION = 64  # the relay's default --max-connections-per-allocation


def tcp_allocation(relay: RelayProcess, user: str) -> tuple[TurnClient, Address]:
    client = TurnClient("tcp", relay.address(), user=user)
    answer = client.allocate(PROTO_TCP)
    relayed = answer.get(at.XOR_RELAYED_ADDRESS)
    assert error_code(answer) is None and relayed is not None, answer.error
    permit = client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, ("127.0.0.1", 1)))
    assert error_code(permit) is None
    return client, relayed


def attempts(client: TurnClient, quiet: float = 1.0) -> Iterator[int]:
    """CONNECTION-IDs of the ConnectionAttempts that arrive until ``quiet`` seconds pass."""
    while (msg := client.receive(quiet)) is not None:
        if msg.method == Method.CONNECTION_ATTEMPT and msg.cls == MessageClass.INDICATION:
            cid = msg.get(at.CONNECTION_ID)
            assert cid is not None
            yield cid


def test_alice_holding_pending_connections_does_not_lock_bob_out() -> None:
    allocations = scaled(4, 8)  # 256 (long: 512) peer connections: the global budget and more
    dialled: list[socket.socket] = []
    alices: list[TurnClient] = []
    with RelayProcess("--allow-peer", "127.0.0.0/8") as relay:
        try:
            for _ in range(allocations):
                alice, relayed = tcp_allocation(relay, "alice")
                alices.append(alice)
                dialled += [socket.create_connection(relayed, timeout=5) for _ in range(64)]
            held = sum(len(list(attempts(alice))) for alice in alices)
            assert 0 < held <= PER_USER

            bob, bob_relayed = tcp_allocation(relay, "bob")
            with bob, socket.create_server(("127.0.0.1", 0)) as peer:
                answer = bob.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, peer.getsockname()))
                assert error_code(answer) is None, answer.error
                assert answer.get(at.CONNECTION_ID) is not None
                with socket.create_connection(bob_relayed, timeout=5):
                    first = next(attempts(bob, quiet=10), None)
                    assert first is not None  # bob's peer is not starved
        finally:
            for sock in dialled:
                sock.close()
            for alice in alices:
                alice.close()
