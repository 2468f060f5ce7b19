"""Asyncio TURN allocations: TCP (RFC 6062) with streams, UDP (RFC 8656) with datagrams.

Both keep themselves alive through ``RenewingAllocation`` (``delshare.aio.client_renewal``).

TCP data connections (RFC 6062 §4.3, §4.4): a new TCP/TLS connection to the server address,
a ConnectionBind carrying the allocation's credentials, then the connection *is* the stream: the
application gets an ``asyncio.StreamReader``/``StreamWriter`` pair built on that socket, with no
per-chunk Python code in between. The ConnectionBind response is read through the same reader,
so any peer bytes that arrived behind it are already in the reader's buffer and come first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import NamedTuple

from delshare.address import format_address
from delshare.aio.client_renewal import ControlConnection, RenewingAllocation
from delshare.errors import DelshareError, TransactionTimeout
from delshare.stun.attributes import (
    CONNECTION_ID,
    DATA,
    XOR_PEER_ADDRESS,
    Address,
)
from delshare.stun.constants import HEADER_LENGTH, Method
from delshare.stun.framing import ChannelData
from delshare.stun.message import Message
from delshare.turn.client import (
    ConnectionAttempted,
    PeerDataReceived,
    TransactionFailed,
    TransactionSucceeded,
    TurnClientCore,
)
from delshare.turn.client_errors import TurnConnectionError

log = logging.getLogger(__name__)

STREAM_LIMIT = 4 << 20  # StreamReader buffer limit: large, for >1 GB/s on loopback
BIND_TIMEOUT = 15.0  # open + ConnectionBind; the server gives up after 30 s (RFC 6062 §5.3)
MAX_PENDING_BINDS = 64  # ConnectionAttempts being bound at once
ACCEPT_BACKLOG = 256  # bound streams waiting for accept()
RECV_QUEUE = 1024  # datagrams waiting for recv()
_MAX_BIND_ROUNDS = 6  # ConnectionBind exchanges (401/438 retries) per data connection


class RelayedStream(NamedTuple):
    """An incoming stream through a TCP allocation: unpacks as ``reader, writer, peer``."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: Address


class TcpAllocation(RenewingAllocation):
    """A TCP relayed address (RFC 6062): accept incoming streams, connect to peers."""

    def __init__(self, client: ControlConnection, response: Message, lifetime: int | None) -> None:
        super().__init__(client, response, lifetime)
        self._accepted: asyncio.Queue[RelayedStream | None] = asyncio.Queue(ACCEPT_BACKLOG)
        self._binds: set[asyncio.Task[None]] = set()
        # Strong references: a StreamWriter closes its socket when garbage-collected, and an
        # app that keeps only the reader (``reader, _, peer = await accept()``) must still get
        # its bytes. Closed ones are pruned on each new bind.
        self._writers: set[asyncio.StreamWriter] = set()

    async def accept(self) -> RelayedStream:
        """The next incoming stream (ConnectionAttempt → ConnectionBind, RFC 6062 §5.3-5.4)."""
        item = await self._accepted.get()
        if item is None:
            self._accepted.put_nowait(None)  # wake other waiters too
            raise TurnConnectionError("TURN allocation closed")
        return item

    def __aiter__(self) -> TcpAllocation:
        return self

    async def __anext__(self) -> RelayedStream:
        try:
            return await self.accept()
        except TurnConnectionError:
            raise StopAsyncIteration from None

    async def connect(
        self, peer: Address, timeout: float = 35.0
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a stream to ``peer`` through the relay (RFC 6062 §5.2, §5.4).

        The peer's IP needs a permission (``permit``) first, else 403.
        """
        async with asyncio.timeout(timeout):
            response = await self._client.request(Method.CONNECT, [XOR_PEER_ADDRESS(peer)])
            connection_id = response.get(CONNECTION_ID)
            if connection_id is None:
                raise TurnConnectionError("Connect response without CONNECTION-ID")
            return await self._bind(connection_id)

    # -- data connections -----------------------------------------------------------------

    def _connection_attempted(self, event: ConnectionAttempted) -> None:
        if self.closed or len(self._binds) >= MAX_PENDING_BINDS:
            log.warning("dropping ConnectionAttempt from %s:%d", *event.peer)
            return
        task = self._loop.create_task(self._bind_incoming(event))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)

    async def _bind_incoming(self, event: ConnectionAttempted) -> None:
        try:
            reader, writer = await self._bind(event.connection_id)
        except (DelshareError, TimeoutError) as exc:
            log.warning("ConnectionBind for %s:%d failed: %s", *event.peer, exc)
            return
        try:
            self._accepted.put_nowait(RelayedStream(reader, writer, event.peer))
        except asyncio.QueueFull:
            writer.close()

    async def _bind(self, connection_id: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a client data connection and bind it (RFC 6062 §5.4)."""
        if self.closed:
            raise TurnConnectionError("TURN allocation closed")
        reader, writer = await self._open_data_connection()
        try:
            async with asyncio.timeout(BIND_TIMEOUT):
                core = self._client.core.fork()
                await _connection_bind(core, reader, writer, connection_id, self._loop)
        except BaseException:
            writer.close()
            raise
        if self.closed:
            writer.close()
            raise TurnConnectionError("TURN allocation closed")
        self._writers = {w for w in self._writers if not w.transport.is_closing()}
        self._writers.add(writer)
        return reader, writer

    async def _open_data_connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self._client.server_address
        ssl = self._client.ssl
        try:
            async with asyncio.timeout(BIND_TIMEOUT):
                return await asyncio.open_connection(
                    host,
                    port,
                    limit=STREAM_LIMIT,
                    ssl=ssl,
                    server_hostname=self._client.uri.host if ssl else None,
                )
        except (OSError, TimeoutError) as exc:
            where = format_address(host, port)
            raise TurnConnectionError(f"data connection to {where} failed: {exc}") from exc

    def _shut_down(self) -> None:
        """Closing the allocation closes its streams (RFC 6062 §5.5)."""
        super()._shut_down()
        for task in list(self._binds):
            task.cancel()
        for writer in list(self._writers):
            writer.close()
        while not self._accepted.empty():
            item = self._accepted.get_nowait()
            if item is not None:
                item.writer.close()
        self._accepted.put_nowait(None)


async def _connection_bind(
    core: TurnClientCore,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    connection_id: int,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Run ConnectionBind on a fresh data connection, answering 401/438 challenges."""
    handle = core.request(Method.CONNECTION_BIND, [CONNECTION_ID(connection_id)], loop.time())
    for _ in range(_MAX_BIND_ROUNDS):
        for data in core.data_to_send():
            writer.write(data)
        await writer.drain()
        core.receive(await _read_stun(reader), loop.time())
        while (event := core.next_event()) is not None:
            if isinstance(event, TransactionSucceeded) and event.handle == handle:
                return
            if isinstance(event, TransactionFailed) and event.handle == handle:
                raise event.error
    raise TransactionTimeout("ConnectionBind: too many challenge rounds")


async def _read_stun(reader: asyncio.StreamReader) -> bytes:
    """Read exactly one STUN message; bytes behind it stay in the reader."""
    try:
        head = await reader.readexactly(HEADER_LENGTH)
        if head[0] >> 6:
            raise TurnConnectionError("data connection: expected a STUN response")
        return head + await reader.readexactly(int.from_bytes(head[2:4], "big"))
    except (asyncio.IncompleteReadError, OSError) as exc:
        raise TurnConnectionError(f"data connection closed during ConnectionBind: {exc}") from exc


class UdpAllocation(RenewingAllocation):
    """A UDP relayed address (RFC 8656): datagrams to and from peers, channels."""

    def __init__(self, client: ControlConnection, response: Message, lifetime: int | None) -> None:
        super().__init__(client, response, lifetime)
        self._received: asyncio.Queue[tuple[bytes, Address] | None] = asyncio.Queue(RECV_QUEUE)
        self._channels: dict[Address, int] = {}

    async def bind_channel(self, peer: Address) -> int:
        """Bind a channel to ``peer`` (RFC 8656 §12); kept refreshed. Also permits its IP."""
        channel = self._schedule.channel_for(peer)
        await self._channel_bind(channel, peer)
        self._channels[peer] = channel
        self._wake.set()
        return channel

    def send(self, peer: Address, data: bytes) -> None:
        """Send a datagram to ``peer``: ChannelData if bound, else a Send indication (§11, §12)."""
        if self.closed:
            raise TurnConnectionError("TURN allocation closed")
        channel = self._channels.get(peer)
        if channel is not None:
            self._client.send_raw(ChannelData(channel, data).encode(pad=self._client.uri.stream))
        else:
            self._client.send_indication(Method.SEND, [XOR_PEER_ADDRESS(peer), DATA(data)])

    async def recv(self) -> tuple[bytes, Address]:
        """The next datagram from a peer, as ``(data, peer)``."""
        item = await self._received.get()
        if item is None:
            self._received.put_nowait(None)
            raise TurnConnectionError("TURN allocation closed")
        return item

    def _channel_dropped(self, channel: int) -> None:
        self._channels = {peer: ch for peer, ch in self._channels.items() if ch != channel}

    def _data_received(self, event: PeerDataReceived) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # UDP semantics: drop when nobody reads
            self._received.put_nowait((event.data, event.peer))

    def _shut_down(self) -> None:
        super()._shut_down()
        with contextlib.suppress(asyncio.QueueFull):
            self._received.put_nowait(None)
