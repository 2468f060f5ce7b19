"""The TURN client the relay cases drive, the same against every server: ``delshare.aio.client``.

The client runs on an event loop in a background thread; the bench calls it through
``run_coroutine_threadsafe``. Once a stream is bound, the pump takes a duplicate of the data
socket's descriptor (reading paused on the asyncio side) so that the bytes move through the same
blocking pump as the plain-loopback baseline; the asyncio objects stay open until ``close``.
Either way the data moves on raw sockets with the same pump code, so only the server differs
between rows.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from bench.servers import PASSWORD, USER
from delshare.aio.client import connect_turn
from delshare.stun.framing import ChannelData

Address = tuple[str, int]
T = TypeVar("T")
TIMEOUT = 30.0


@dataclass
class TcpStream:
    """A relayed TCP stream: the raw data socket plus whatever must stay open for it."""

    data: socket.socket
    close: Callable[[], None]


@dataclass
class UdpChannel:
    """A UDP allocation with a channel to one peer; ``send`` relays one payload."""

    sock: socket.socket
    channel: int
    close: Callable[[], None]

    def frame(self, payload: bytes) -> bytes:
        """ChannelData header + payload (RFC 8656 §12.4; no padding needed on UDP)."""
        return ChannelData(self.channel, payload).encode(pad=False)


def _dup(transport: asyncio.BaseTransport) -> socket.socket:
    sock = transport.get_extra_info("socket")
    fd = os.dup(sock.fileno())
    raw = socket.socket(fileno=fd)
    raw.setblocking(True)
    return raw


class OursBackend:
    """``delshare.aio.client`` on a private event loop thread.

    The default asyncio loop: the control plane is not on the measured data path.
    """

    name = "delshare.aio.client"

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def shutdown(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)

    def _uri(self, server: Address, transport: str) -> str:
        return f"turn:{server[0]}:{server[1]}?transport={transport}"

    def open_stream(self, server: Address, peer: Address) -> TcpStream:
        """allocate_tcp, permit, connect (RFC 6062 §4.3) with our client."""

        async def go() -> tuple[Any, Any, socket.socket]:
            client = await connect_turn(self._uri(server, "tcp"), USER, PASSWORD)
            try:
                alloc = await client.allocate_tcp()
                await alloc.permit(peer[0])
                _reader, writer = await alloc.connect(peer)
            except BaseException:
                await client.close()
                raise
            transport = writer.transport
            assert isinstance(transport, asyncio.ReadTransport)
            transport.pause_reading()
            return client, writer, _dup(writer.transport)

        client, writer, raw = self._run(go())

        def close() -> None:
            raw.close()

            async def shut() -> None:
                writer.close()
                await client.close()

            self._run(shut())

        return TcpStream(raw, close)

    def allocate_once(self, server: Address) -> None:
        """One authenticated TCP allocation on a fresh control connection, then close."""

        async def go() -> None:
            client = await connect_turn(self._uri(server, "tcp"), USER, PASSWORD)
            try:
                await client.allocate_tcp()
            finally:
                await client.close()

        self._run(go())

    def open_udp_channel(self, server: Address, peer: Address) -> UdpChannel:
        """allocate_udp + bind_channel (RFC 8656 §12) with our client; raw sends on a dup."""

        async def go() -> tuple[Any, int, socket.socket]:
            client = await connect_turn(self._uri(server, "udp"), USER, PASSWORD)
            try:
                alloc = await client.allocate_udp()
                channel = await alloc.bind_channel(peer)
            except BaseException:
                await client.close()
                raise
            assert client._transport is not None
            return client, channel, _dup(client._transport)

        client, channel, raw = self._run(go())

        def close() -> None:
            raw.close()
            self._run(client.close())

        return UdpChannel(raw, channel, close)


@cache
def backend() -> OursBackend:
    """The one client every relay case uses (a private loop thread, started once)."""
    return OursBackend()
