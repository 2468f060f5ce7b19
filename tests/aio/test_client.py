"""The asyncio TURN client against scripted servers on real loopback sockets.

Each scripted server is a few lines of STUN written with the codec: it plays one exact
situation that a real server produces only by chance (a lost datagram, a redirect, relay bytes
in the same segment as the ConnectionBind response, a dropped control connection).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from delshare.aio.client import connect_turn
from delshare.stun import attributes as at
from delshare.stun.constants import Attr, MessageClass, Method
from delshare.stun.framing import StreamFramer
from delshare.stun.message import Message, decode_message, error_response, success_response
from delshare.turn.client_errors import AllocationError, TryAlternateError, TurnConnectionError

STEP = 5.0
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> Message:
    framer = StreamFramer()
    while True:
        data = await reader.read(4096)
        if not data:
            raise ConnectionError("client went away")
        frames = framer.feed(data)
        if frames:
            return decode_message(frames[0])


async def answer_the_rest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer every further request with success (the Refresh that deletes the allocation)."""
    try:
        while True:
            writer.write(success_response(await read_request(reader)).encode())
    except ConnectionError:
        writer.close()


def allocate_ok(request: Message, relayed: tuple[str, int]) -> bytes:
    return success_response(
        request,
        (Attr.XOR_RELAYED_ADDRESS, relayed),
        (Attr.XOR_MAPPED_ADDRESS, ("127.0.0.1", 1)),
        (Attr.LIFETIME, 600),
    ).encode()


class Scripted:
    """A TCP server running ``handler`` for each connection, closed on exit."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self.handler, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def uri(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=tcp"


@pytest.fixture
async def udp_dropping_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A UDP STUN server that ignores the first two copies of a request, answers the third."""
    loop = asyncio.get_running_loop()
    seen: list[bytes] = []

    class Protocol(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            seen.append(data)
            if len(seen) == 3:
                reply = success_response(decode_message(data), (Attr.XOR_MAPPED_ADDRESS, addr))
                self.transport.sendto(reply.encode(), addr)  # type: ignore[attr-defined]

    transport, _ = await loop.create_datagram_endpoint(Protocol, local_addr=("127.0.0.1", 0))
    yield transport.get_extra_info("sockname")[1], seen
    transport.close()


async def test_udp_binding_survives_two_lost_datagrams(
    udp_dropping_server: tuple[int, list[bytes]],
) -> None:
    port, seen = udp_dropping_server
    client = await connect_turn(f"turn:127.0.0.1:{port}?transport=udp", "u", "p")
    client.core.rto = 0.05  # the RFC schedule, scaled down
    async with client:
        reflexive = await asyncio.wait_for(client.binding(), STEP)
    assert reflexive == client.local_address
    assert len(seen) == 3 and seen[0] == seen[1] == seen[2]


async def test_closed_port_raises_turn_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TurnConnectionError, match="refused"):
        await connect_turn(f"turn:127.0.0.1:{port}?transport=tcp", "u", "p")


async def test_an_unreachable_ipv6_server_is_named_in_brackets() -> None:
    """The message names the server the way HOST:PORT is read back: ``[::1]:port``."""
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TurnConnectionError, match=rf"cannot reach TURN server \[::1\]:{port} "):
        await connect_turn(f"turn:[::1]:{port}?transport=tcp", "u", "p")


async def test_allocate_follows_300_to_the_alternate_server() -> None:
    async def alternate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        writer.write(allocate_ok(request, ("127.0.0.1", 40000)))
        await answer_the_rest(reader, writer)

    async with Scripted(alternate) as target:

        async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await read_request(reader)
            answer = error_response(
                request, 300, None, (Attr.ALTERNATE_SERVER, ("127.0.0.1", target.port))
            )
            writer.write(answer.encode())
            await reader.read()

        async with Scripted(redirect) as first:
            client = await connect_turn(first.uri, "u", "p")
            async with client:
                allocation = await asyncio.wait_for(client.allocate_tcp(), STEP)
                assert allocation.relayed_address == ("127.0.0.1", 40000)
                assert client.server_address == ("127.0.0.1", target.port)


async def test_300_without_alternate_server_is_raised() -> None:
    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        writer.write(error_response(request, 300).encode())
        await reader.read()

    async with Scripted(redirect) as first:
        client = await connect_turn(first.uri, "u", "p")
        async with client:
            with pytest.raises(TryAlternateError) as info:
                await asyncio.wait_for(client.allocate_tcp(), STEP)
            assert info.value.code == 300 and info.value.alternate is None


async def test_bytes_behind_the_connection_bind_response_reach_the_reader_first() -> None:
    bound = asyncio.Event()

    async def turn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if request.method == Method.CONNECTION_BIND:
            assert request.get(at.CONNECTION_ID) == 1234
            # the response and the first relayed bytes leave in one segment
            writer.write(success_response(request).encode() + b"relayed bytes")
            bound.set()
            await reader.read()
            return
        writer.write(allocate_ok(request, ("127.0.0.1", 40000)))
        attempt = Message(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION)
        attempt.add(at.XOR_PEER_ADDRESS, ("192.0.2.9", 777)).add(at.CONNECTION_ID, 1234)
        writer.write(attempt.encode())
        await answer_the_rest(reader, writer)

    async with Scripted(turn) as server:
        client = await connect_turn(server.uri, "u", "p")
        async with client, asyncio.timeout(STEP):
            allocation = await client.allocate_tcp()
            reader, _writer, peer = await allocation.accept()
            assert peer == ("192.0.2.9", 777)
            assert await reader.readexactly(13) == b"relayed bytes"
            assert bound.is_set()


async def test_lost_control_connection_fails_requests_and_ends_the_allocation() -> None:
    drop = asyncio.Event()

    async def turn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        writer.write(allocate_ok(request, ("127.0.0.1", 40000)))
        await read_request(reader)  # the CreatePermission: never answered
        await drop.wait()
        writer.close()

    async with Scripted(turn) as server:
        client = await connect_turn(server.uri, "u", "p")
        async with asyncio.timeout(STEP):
            allocation = await client.allocate_tcp()
            pending = asyncio.ensure_future(allocation.permit("192.0.2.1"))
            await asyncio.sleep(0.05)
            drop.set()
            with pytest.raises(TurnConnectionError):
                await pending
            with pytest.raises(TurnConnectionError):
                await allocation.accept()
            assert allocation.closed and client.closed
        await client.close()


async def test_second_allocation_on_one_client_is_refused_locally() -> None:
    async def turn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(allocate_ok(await read_request(reader), ("127.0.0.1", 40000)))
        await answer_the_rest(reader, writer)

    async with Scripted(turn) as server:
        client = await connect_turn(server.uri, "u", "p")
        async with client:
            await asyncio.wait_for(client.allocate_tcp(), STEP)
            with pytest.raises(AllocationError) as info:
                await client.allocate_tcp()
            assert info.value.code == 437


async def test_tcp_allocation_needs_a_stream_control_connection() -> None:
    client = await connect_turn("turn:127.0.0.1:9?transport=udp", "u", "p")
    async with client:
        with pytest.raises(ValueError, match="RFC 6062"):
            await client.allocate_tcp()
