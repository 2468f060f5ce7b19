"""Our asyncio TURN client (``delshare.aio.client``) behind the bench's blocking backend API.

The client runs on an event loop in a background thread; the bench calls it through
``run_coroutine_threadsafe``. Once a stream is bound, the pump takes a duplicate of the data
socket's descriptor (reading paused on the asyncio side) so that the bytes move through the same
blocking pump as the plain-loopback baseline; the asyncio objects stay open until ``close``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from bench.servers import PASSWORD, USER
from bench.turnclients import Address, TcpStream, UdpChannel
from delshare.aio.client import connect_turn  # ImportError while not built: caller falls back

T = TypeVar("T")
TIMEOUT = 30.0


def _dup(transport: asyncio.BaseTransport) -> socket.socket:
    sock = transport.get_extra_info("socket")
    fd = os.dup(sock.fileno())
    raw = socket.socket(fileno=fd)
    raw.setblocking(True)
    return raw


class OursBackend:
    """``delshare.aio.client`` on a private event loop thread.

    The default asyncio loop: the control plane is not on the measured data path, and the
    client's ``connection_made`` asserts ``asyncio.Transport``, which uvloop's TCP transport is not.
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
