"""Our TURN client (``delshare.aio.client``) against our relay: SHA-256 auth, both RFC 6062 paths.

The client negotiates PASSWORD-ALGORITHM SHA-256 and MESSAGE-INTEGRITY-SHA256 (RFC 8489 §9.2.4)
because the relay offers it; coturn's uclient (tests/interop) takes the SHA-1/MD5 fallback.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from delshare.aio.client import connect_turn
from delshare.aio.server import RelayConfig, RunningRelay, start_relay
from delshare.stun import attributes as at
from delshare.stun.constants import PASSWORD_ALGORITHM_SHA256
from delshare.turn.auth import AuthConfig
from delshare.turn.server_config import ServerConfig

HOST = "127.0.0.1"
STEP = 10.0


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    server = ServerConfig(
        auth=AuthConfig("ours.test", {"u": "p"}, secret="s3cret"), allow_peers=("127.0.0.0/8",)
    )
    running = await start_relay(RelayConfig(server=server, listen=((HOST, 0),)))
    try:
        yield running
    finally:
        await running.close()


async def test_incoming_and_outgoing_streams_with_sha256(relay: RunningRelay) -> None:
    uri = f"turn:{HOST}:{relay.turn_port}?transport=tcp"
    async with await connect_turn(uri, "u", "p") as client:
        allocation = await client.allocate_tcp()
        (server_side,) = relay.core.allocations.values()
        assert server_side.creds.sha256  # MESSAGE-INTEGRITY-SHA256 was negotiated
        assert server_side.request.get(at.PASSWORD_ALGORITHM) == (PASSWORD_ALGORITHM_SHA256, b"")
        await allocation.permit(HOST)
        # incoming: a plain peer dials the relayed address
        peer_reader, peer_writer = await asyncio.open_connection(*allocation.relayed_address)
        stream = await asyncio.wait_for(allocation.accept(), STEP)
        payload = os.urandom(1 << 20)
        peer_writer.write(payload)
        peer_writer.write_eof()
        assert await asyncio.wait_for(stream.reader.read(), STEP) == payload
        stream.writer.write(b"thanks")
        stream.writer.close()
        assert await asyncio.wait_for(peer_reader.read(), STEP) == b"thanks"
        peer_writer.close()
        # outgoing: Connect to a local listener
        accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

        async def on_peer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"hello from the peer")
            await w.drain()
            await accepted.put(w)

        server = await asyncio.start_server(on_peer, HOST, 0)
        reader, writer = await allocation.connect(server.sockets[0].getsockname()[:2])
        assert await asyncio.wait_for(reader.readexactly(19), STEP) == b"hello from the peer"
        (await accepted.get()).close()
        writer.close()
        server.close()


async def test_rest_secret_credentials(relay: RunningRelay) -> None:
    uri = f"turn:{HOST}:{relay.turn_port}?transport=tcp"
    async with await connect_turn(uri, "carol", secret="s3cret") as client:
        allocation = await client.allocate_tcp()
        assert allocation.relayed_address[0] == HOST
        assert any(a.username.endswith(":carol") for a in relay.core.allocations.values())
