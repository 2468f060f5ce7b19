"""How the relay reads plain TCP control connections: readiness callbacks, not tasks.

Each plain TCP client connection (and each TURN listener) is read by a callback registered
once with the event loop, so a connection costs no asyncio task and no future per read
(BENCHMARKS.md, issue 15: case 3 opens one per allocation). The idle timeout of a connection
without an allocation is one timer that bytes move on; these tests hold the relay to both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from delshare.aio.server import RelayConfig, RunningRelay, start_relay
from delshare.stun.constants import MessageClass, Method
from delshare.stun.framing import StreamFramer
from delshare.stun.message import Message, decode_message
from delshare.turn.auth import AuthConfig
from delshare.turn.server_config import ServerConfig

HOST = "127.0.0.1"
STEP = 10.0
CONNECTIONS = 24


async def _relay(idle_timeout: float = 120.0) -> RunningRelay:
    server = ServerConfig(auth=AuthConfig("reading.test", {"u": "p"}))
    config = RelayConfig(server=server, listen=((HOST, 0),), idle_timeout=idle_timeout)
    return await start_relay(config)


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    running = await _relay()
    try:
        yield running
    finally:
        await running.close()


async def _binding(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Message:
    """One Binding request and its answer (RFC 8489 §6): proof the relay reads the stream."""
    request = Message(Method.BINDING, MessageClass.REQUEST)
    writer.write(request.encode(fingerprint=True))
    framer = StreamFramer()
    while True:
        data = await asyncio.wait_for(reader.read(65536), STEP)
        assert data, "relay closed the connection"
        frames = framer.feed(data)
        if frames:
            answer = decode_message(frames[0])
            assert answer.transaction_id == request.transaction_id
            return answer


async def test_open_control_connections_cost_no_task_each(relay: RunningRelay) -> None:
    """With many served connections open, the loop runs no more tasks than with none (a task
    awaiting ``sock_recv`` per connection, or one awaiting ``sock_accept``, would show)."""
    before = len(asyncio.all_tasks())
    streams = [await asyncio.open_connection(HOST, relay.turn_port) for _ in range(CONNECTIONS)]
    try:
        for reader, writer in streams:
            assert (await _binding(reader, writer)).cls == MessageClass.SUCCESS
        assert len(asyncio.all_tasks()) <= before
        assert len(relay.server._clients) == CONNECTIONS
    finally:
        for _reader, writer in streams:
            writer.close()
    for _ in range(int(STEP / 0.01)):  # each close reaches the relay's callback, then it forgets
        if not relay.server._clients:
            break
        await asyncio.sleep(0.01)
    assert not relay.server._clients


async def test_bytes_keep_an_unallocated_connection_past_its_idle_timeout() -> None:
    """The idle deadline moves with every read (one timer, re-armed when it fires early):
    a connection that keeps talking outlives the timeout several times over, then goes once
    it falls silent."""
    idle = 1.5
    running = await _relay(idle_timeout=idle)
    reader, writer = await asyncio.open_connection(HOST, running.turn_port)
    try:
        for _ in range(12):  # 3 s of requests every 0.25 s, each far inside the 1.5 s bound
            assert (await _binding(reader, writer)).cls == MessageClass.SUCCESS
            await asyncio.sleep(0.25)
        assert await asyncio.wait_for(reader.read(), idle + STEP) == b""  # silent: closed
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        await running.close()
