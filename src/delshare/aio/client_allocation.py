"""Asyncio TURN allocations: TCP (RFC 6062) with streams, UDP (RFC 8656) with datagrams.

An allocation keeps itself alive: one maintenance task sleeps until the sans-IO
``AllocationSchedule`` says a Refresh, permission or channel is due, renews it and sleeps again.

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
import ssl as _ssl
from typing import NamedTuple, Protocol, Self

from delshare.errors import DelshareError, TransactionError, TransactionTimeout
from delshare.stun.attributes import (
    CHANNEL_NUMBER,
    CONNECTION_ID,
    DATA,
    LIFETIME,
    XOR_MAPPED_ADDRESS,
    XOR_PEER_ADDRESS,
    XOR_RELAYED_ADDRESS,
    Address,
    Attribute,
)
from delshare.stun.constants import DEFAULT_LIFETIME, HEADER_LENGTH, Method
from delshare.stun.framing import ChannelData
from delshare.stun.message import Message
from delshare.turn.client import (
    ConnectionAttempted,
    PeerDataReceived,
    TransactionFailed,
    TransactionSucceeded,
    TurnClientCore,
)
from delshare.turn.client_allocation import AllocationSchedule, RenewalsDue
from delshare.turn.client_errors import AllocationError, TurnConnectionError
from delshare.turn.uri import TurnUri

log = logging.getLogger(__name__)

STREAM_LIMIT = 4 << 20  # StreamReader buffer limit: large, for >1 GB/s on loopback
BIND_TIMEOUT = 15.0  # open + ConnectionBind; the server gives up after 30 s (RFC 6062 §5.3)
MAX_PENDING_BINDS = 64  # ConnectionAttempts being bound at once
ACCEPT_BACKLOG = 256  # bound streams waiting for accept()
RETRY_DELAY = 2.0  # after a failed renewal that is not fatal
RECV_QUEUE = 1024  # datagrams waiting for recv()
_MAX_BIND_ROUNDS = 6  # ConnectionBind exchanges (401/438 retries) per data connection


class RelayedStream(NamedTuple):
    """An incoming stream through a TCP allocation: unpacks as ``reader, writer, peer``."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: Address


class ControlConnection(Protocol):
    """What an allocation needs from its control connection (``delshare.aio.client.TurnClient``).

    A protocol rather than an import, so that the client module depends on this one and not the
    other way round.
    """

    uri: TurnUri
    core: TurnClientCore
    ssl: _ssl.SSLContext | None
    server_address: Address

    @property
    def closed(self) -> bool: ...

    async def request(
        self, method: int, attrs: list[Attribute], *, authenticate: bool = True
    ) -> Message: ...

    def send_indication(self, method: int, attrs: list[Attribute]) -> None: ...

    def send_raw(self, frame: bytes) -> None: ...


class _Allocation:
    """What TCP and UDP allocations share: addresses, lifetime, permissions, keep-alive."""

    def __init__(self, client: ControlConnection, response: Message, lifetime: int | None) -> None:
        relayed = response.get(XOR_RELAYED_ADDRESS)
        if relayed is None:
            raise AllocationError("ALLOCATE", 0, "response without XOR-RELAYED-ADDRESS")
        self.relayed_address: Address = relayed
        self.mapped_address: Address | None = response.get(XOR_MAPPED_ADDRESS)
        self.lifetime = response.get(LIFETIME) or DEFAULT_LIFETIME
        self.refreshes = 0
        self.closed = False
        self._client = client
        self._requested_lifetime = lifetime
        self._loop = asyncio.get_running_loop()
        self._schedule = AllocationSchedule(self.lifetime, self._loop.time())
        self._wake = asyncio.Event()
        self._maintainer = self._loop.create_task(self._maintain())

    # -- public ---------------------------------------------------------------------------

    async def permit(self, *ips: str) -> None:
        """Install permissions for peer IPs and keep them refreshed (RFC 8656 §9)."""
        ips = tuple(dict.fromkeys(ips))
        await self._create_permission(ips)
        self._wake.set()

    def unpermit(self, ip: str) -> None:
        """Stop refreshing the permission for ``ip``; it lapses within 300 s (RFC 8656 §9)."""
        self._schedule.forget_permission(ip)

    async def refresh(self, lifetime: int | None = None) -> int:
        """Refresh now; return the granted lifetime (RFC 8656 §7.3). Lifetime 0 is ``close()``."""
        attrs: list[Attribute] = []
        if lifetime is not None:
            attrs.append(LIFETIME(lifetime))
        if lifetime == 0:
            await self.close()
            return 0
        response = await self._client.request(Method.REFRESH, attrs)
        granted = response.get(LIFETIME)
        if not granted:  # LIFETIME is mandatory in the response (§7.3); keep ours if absent
            granted = self.lifetime
        self.lifetime = granted
        self._schedule.refreshed(granted, self._loop.time())
        self.refreshes += 1
        return granted

    async def close(self) -> None:
        """Delete the allocation (Refresh LIFETIME 0, best effort) and close everything."""
        if self.closed:
            return
        self._shut_down()
        if not self._client.closed:
            with contextlib.suppress(DelshareError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._client.request(Method.REFRESH, [LIFETIME(0)])

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- keep-alive -----------------------------------------------------------------------

    async def _create_permission(self, ips: tuple[str, ...]) -> None:
        attrs = [XOR_PEER_ADDRESS((ip, 0)) for ip in ips]
        await self._client.request(Method.CREATE_PERMISSION, attrs)
        self._schedule.permitted(list(ips), self._loop.time())

    async def _maintain(self) -> None:
        """The one keep-alive loop: sleep to the next deadline, renew what is due."""
        while not self.closed:
            delay = self._schedule.next_deadline() - self._loop.time()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            try:
                await self._renew(self._schedule.due(self._loop.time()))
            except (AllocationError, TurnConnectionError) as exc:
                log.warning("TURN allocation lost: %s", exc)
                self._shut_down()
            except DelshareError as exc:  # a timeout: try again soon, until expiry
                if self._loop.time() >= self._schedule.expires:
                    self._shut_down()
                log.warning("TURN renewal failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_DELAY)

    async def _renew(self, due: RenewalsDue) -> None:
        """Refresh, then permissions, then channels; a refused permission or channel is dropped."""
        if due.refresh:
            await self.refresh(self._requested_lifetime)
        if due.permissions:
            try:
                await self._create_permission(due.permissions)
            except TransactionError as exc:
                log.warning("TURN permission renewal refused, dropping it: %s", exc)
                for ip in due.permissions:
                    self._schedule.forget_permission(ip)
        for channel, peer in due.channels:
            try:
                await self._channel_bind(channel, peer)
            except TransactionError as exc:
                log.warning("TURN channel renewal refused, dropping it: %s", exc)
                self._schedule.forget_channel(channel)
                self._channel_dropped(channel)

    def _channel_dropped(self, channel: int) -> None:
        """A channel will lapse; UDP allocations stop sending on it."""

    async def _channel_bind(self, channel: int, peer: Address) -> None:
        attrs = [CHANNEL_NUMBER(channel), XOR_PEER_ADDRESS(peer)]
        await self._client.request(Method.CHANNEL_BIND, attrs)
        self._schedule.channel_bound(channel, peer, self._loop.time())

    def _shut_down(self) -> None:
        """Stop keep-alive and close local resources; subclasses close their streams."""
        self.closed = True
        current = asyncio.current_task()
        if self._maintainer is not current:
            self._maintainer.cancel()

    def _connection_lost(self) -> None:
        if not self.closed:
            self._shut_down()


class TcpAllocation(_Allocation):
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
            raise TurnConnectionError(f"data connection to {host}:{port} failed: {exc}") from exc

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


class UdpAllocation(_Allocation):
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
