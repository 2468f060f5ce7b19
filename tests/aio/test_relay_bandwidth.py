"""Bandwidth caps of the relay (issue 12, item 4): coturn's ``max-bps`` and ``bps-capacity``.

``max-bps`` is bytes per second per allocation, each direction on its own (coturn's README:
"input and output network streams are treated separately"); here it holds for RFC 6062 data
connections as well as for UDP relays. These tests check the cap's accuracy: a sender offers
more than the cap and the receiver's rate over a few seconds must be within ±10% of it. The
first read is left out of the window (the bucket starts full, one burst of 50 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from delshare.aio.client import connect_turn
from delshare.aio.pipe import bridge
from delshare.aio.server import RelayConfig, RunningRelay, start_relay
from delshare.stun.constants import PROTO_TCP, Attr, MessageClass, Method
from delshare.turn.auth import AuthConfig
from delshare.turn.ratelimit import TokenBucket
from delshare.turn.server_config import ServerConfig
from tests.aio.test_server_relay import (
    HOST,
    PASSWORD,
    REALM,
    STEP,
    USER,
    StunStream,
    connection_bind,
    incoming_peer,
)

CAP = 2 << 20  # bytes per second
WINDOW = 3.0  # seconds measured
BLOCK = 64 << 10
DATAGRAM = 8 << 10


def within_cap(rate: float, cap: float = CAP) -> bool:
    return 0.9 * cap <= rate <= 1.1 * cap


async def capped_relay(max_bps: int, bps_capacity: int = 0) -> RunningRelay:
    server = ServerConfig(auth=AuthConfig(REALM, {USER: PASSWORD}), allow_peers=("127.0.0.0/8",))
    config = RelayConfig(
        server=server, listen=((HOST, 0),), max_bps=max_bps, bps_capacity=bps_capacity
    )
    return await start_relay(config)


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    running = await capped_relay(CAP)
    try:
        yield running
    finally:
        await running.close()


async def _flood(writer: asyncio.StreamWriter) -> None:
    """Write as fast as the other side takes it (flow control paces us) until cancelled."""
    block = b"\xa5" * BLOCK
    while True:
        writer.write(block)
        await writer.drain()


async def _stream_rate(reader: asyncio.StreamReader) -> float:
    """Bytes per second arriving on ``reader`` over ``WINDOW``, after the first read."""
    loop = asyncio.get_running_loop()
    assert await asyncio.wait_for(reader.read(BLOCK), STEP)
    start, total = loop.time(), 0
    while (elapsed := loop.time() - start) < WINDOW:
        chunk = await asyncio.wait_for(reader.read(BLOCK), STEP)
        assert chunk, "stream ended early"
        total += len(chunk)
    return total / elapsed


async def _measure_both_ways(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> tuple[float, float]:
    floods = [asyncio.create_task(_flood(a[1])), asyncio.create_task(_flood(b[1]))]
    try:
        a_to_b, b_to_a = await asyncio.gather(_stream_rate(b[0]), _stream_rate(a[0]))
    finally:
        for task in floods:
            task.cancel()
        await asyncio.gather(*floods, return_exceptions=True)
        for _, writer in (a, b):
            writer.transport.abort()
    return a_to_b, b_to_a


async def test_rfc6062_connection_is_held_to_max_bps_each_way(relay: RunningRelay) -> None:
    control, peer_reader, peer_writer, cid = await incoming_peer(relay)
    client_reader, client_writer = await connection_bind(relay, control, cid)
    up, down = await _measure_both_ways((client_reader, client_writer), (peer_reader, peer_writer))
    control.close()
    assert within_cap(up), f"client→peer {up / CAP:.3f} of the cap"
    assert within_cap(down), f"peer→client {down / CAP:.3f} of the cap"


async def test_udp_relay_is_held_to_max_bps_each_way(relay: RunningRelay) -> None:
    """The peer and the client each offer 1.5 times the cap; the relay drops the rest."""
    loop = asyncio.get_running_loop()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((HOST, 0))
    peer.setblocking(False)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    peer_addr: tuple[str, int] = peer.getsockname()
    client = await connect_turn(f"turn:{HOST}:{relay.turn_port}", USER, PASSWORD)
    try:
        allocation = await client.allocate_udp()
        await allocation.bind_channel(peer_addr)
        relayed = allocation.relayed_address

        async def offer(send: object) -> None:
            payload = b"\x5a" * DATAGRAM
            per_tick = 3  # 3 datagrams every 8 ms: 1.5 times 2 MiB/s
            while True:
                for _ in range(per_tick):
                    if send is peer:
                        peer.sendto(payload, relayed)
                    else:
                        allocation.send(peer_addr, payload)
                await asyncio.sleep(per_tick * DATAGRAM / (1.5 * CAP))

        async def rate_at_peer() -> float:
            await asyncio.wait_for(loop.sock_recv(peer, 65536), STEP)
            start, total = loop.time(), 0
            while (elapsed := loop.time() - start) < WINDOW:
                total += len(await asyncio.wait_for(loop.sock_recv(peer, 65536), STEP))
            return total / elapsed

        async def rate_at_client() -> float:
            await asyncio.wait_for(allocation.recv(), STEP)
            start, total = loop.time(), 0
            while (elapsed := loop.time() - start) < WINDOW:
                data, _ = await asyncio.wait_for(allocation.recv(), STEP)
                total += len(data)
            return total / elapsed

        offers = [asyncio.create_task(offer(peer)), asyncio.create_task(offer(client))]
        try:
            up, down = await asyncio.gather(rate_at_peer(), rate_at_client())
        finally:
            for task in offers:
                task.cancel()
            await asyncio.gather(*offers, return_exceptions=True)
    finally:
        await client.close()
        peer.close()
    assert within_cap(up), f"client→peer {up / CAP:.3f} of the cap"
    assert within_cap(down), f"peer→client {down / CAP:.3f} of the cap"


async def test_stream_bridge_is_held_to_its_cap() -> None:
    """The asyncio-stream path of the bridge (TLS data connections) honours the cap too."""
    loop = asyncio.get_running_loop()
    ends: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(2):
        outer, inner = socket.socketpair()
        ends.append(await asyncio.open_connection(sock=outer))
        ends.append(await asyncio.open_connection(sock=inner))
    a_outer, a_inner, b_inner, b_outer = ends
    limits = (TokenBucket(CAP, loop.time()), TokenBucket(CAP, loop.time()))
    relay = asyncio.create_task(bridge(a_inner, b_inner, limits=limits))
    try:
        a_to_b, b_to_a = await _measure_both_ways(a_outer, b_outer)
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
    assert within_cap(a_to_b), f"a→b {a_to_b / CAP:.3f} of the cap"
    assert within_cap(b_to_a), f"b→a {b_to_a / CAP:.3f} of the cap"


async def _tcp_allocate(relay: RunningRelay) -> tuple[StunStream, tuple[int, str] | None]:
    control = await StunStream.open(relay.turn_port)
    reply = await control.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, PROTO_TCP))
    return control, reply.error if reply.cls == MessageClass.ERROR else None


async def test_bps_capacity_is_handed_out_per_allocation_then_486() -> None:
    """coturn's bps-capacity: each allocation reserves max-bps (or what is left); then 486."""
    relay = await capped_relay(CAP, bps_capacity=CAP + CAP // 2)
    try:
        first, error = await _tcp_allocate(relay)
        assert error is None
        second, error = await _tcp_allocate(relay)
        assert error is None  # gets the half that was left
        third, error = await _tcp_allocate(relay)
        assert error == (486, "Allocation Bandwidth Quota Reached")
        third.close()
        assert relay.server.bandwidth.reserved == CAP + CAP // 2
        reply = await first.request(Method.REFRESH, (Attr.LIFETIME, 0))
        assert reply.cls == MessageClass.SUCCESS
        fourth, error = await _tcp_allocate(relay)
        assert error is None  # the first one's share came back
        for control in (first, second, fourth):
            control.close()
    finally:
        await relay.close()
