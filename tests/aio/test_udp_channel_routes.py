"""The relay's UDP channel fast path (``TurnServer.channel_route`` / ``peer_route``, cached by
the adapter) on real loopback sockets: ChannelData goes both ways, and a route never outlives
its allocation (RFC 8656 §12: a channel belongs to one allocation).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from delshare.aio.client import connect_turn
from delshare.aio.server import RelayConfig, RunningRelay, start_relay
from delshare.stun.attributes import LIFETIME
from delshare.stun.constants import Method
from delshare.turn.auth import AuthConfig
from delshare.turn.server_config import ServerConfig

HOST = "127.0.0.1"
STEP = 10.0


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    server = ServerConfig(auth=AuthConfig("routes.test", {"u": "p"}), allow_peers=("127.0.0.0/8",))
    running = await start_relay(RelayConfig(server=server, listen=((HOST, 0),)))
    try:
        yield running
    finally:
        await running.close()


def _peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


async def _recv(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    data, source = await asyncio.wait_for(
        asyncio.get_running_loop().sock_recvfrom(sock, 2048), STEP
    )
    return data, source[:2]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_channel_data_both_ways_many_times(relay: RunningRelay, transport: str) -> None:
    peer = _peer()
    uri = f"turn:{HOST}:{relay.turn_port}?transport={transport}"
    try:
        async with await connect_turn(uri, "u", "p") as client:
            allocation = await client.allocate_udp()
            peer_address = peer.getsockname()
            await allocation.bind_channel(peer_address)
            loop = asyncio.get_running_loop()
            for n in range(50):  # the first datagrams fill the routes, the rest use them
                payload = bytes([n]) * (n + 1)  # odd sizes: padded on TCP
                allocation.send(peer_address, payload)
                assert await _recv(peer) == (payload, allocation.relayed_address)
                await loop.sock_sendto(peer, payload[::-1] + b"!", allocation.relayed_address)
                reply = await asyncio.wait_for(allocation.recv(), STEP)
                assert reply == (payload[::-1] + b"!", peer_address)
    finally:
        peer.close()


async def test_a_channel_route_ends_with_its_allocation(relay: RunningRelay) -> None:
    """Same client, same channel number, new allocation bound to another peer: the data goes
    to the new peer from the new relayed address, never through the old allocation's route."""
    first_peer, second_peer = _peer(), _peer()
    uri = f"turn:{HOST}:{relay.turn_port}?transport=udp"
    try:
        async with await connect_turn(uri, "u", "p") as client:
            first = await client.allocate_udp()
            number = await first.bind_channel(first_peer.getsockname())
            first.send(first_peer.getsockname(), b"one")
            assert await _recv(first_peer) == (b"one", first.relayed_address)
            await first.close()
            second = await client.allocate_udp()
            assert await second.bind_channel(second_peer.getsockname()) == number
            second.send(second_peer.getsockname(), b"two")
            assert await _recv(second_peer) == (b"two", second.relayed_address)
            with pytest.raises(BlockingIOError):
                first_peer.recv(2048)
    finally:
        first_peer.close()
        second_peer.close()


async def test_no_datagram_is_relayed_after_a_refresh_to_zero_in_the_same_batch(
    relay: RunningRelay,
) -> None:
    """Refresh 0 and a ChannelData right behind it reach the relay in one read batch: the
    allocation ends before the ChannelData is looked at (RFC 8656 §7.3), cached route or not."""
    peer = _peer()
    uri = f"turn:{HOST}:{relay.turn_port}?transport=udp"
    try:
        async with await connect_turn(uri, "u", "p") as client:
            allocation = await client.allocate_udp()
            await allocation.bind_channel(peer.getsockname())
            allocation.send(peer.getsockname(), b"before")  # fills the route
            assert await _recv(peer) == (b"before", allocation.relayed_address)
            # the request task sends at its first step, before this coroutine resumes and
            # before the loop next polls, so both datagrams wait in the relay's socket together
            refresh = asyncio.ensure_future(client.request(Method.REFRESH, [LIFETIME(0)]))
            await asyncio.sleep(0)
            allocation.send(peer.getsockname(), b"after")
            await asyncio.wait_for(refresh, STEP)
            assert not relay.core.allocations
            with pytest.raises(BlockingIOError):  # relayed data would be here already
                peer.recv(2048)
    finally:
        peer.close()
