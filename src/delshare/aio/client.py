"""Asyncio TURN client: a control connection over TCP, TLS or UDP (RFC 8656, RFC 6062).

``connect_turn(uri, ...)`` opens the control connection named by a TURN URI (RFC 7065) and returns
a ``TurnClient``. The client drives the sans-IO ``TurnClientCore`` with the loop's clock and one
re-armed timer; requests are awaited as futures. ``allocate_tcp()`` and ``allocate_udp()`` return
allocation objects (``delshare.aio.client_allocation``); ``binding()`` learns the
server-reflexive address (RFC 8489 STUN Binding).

Example::

    async with await connect_turn("turn:turn.example.org?transport=tcp", "u", "p") as client:
        allocation = await client.allocate_tcp()
        await allocation.permit(peer_ip)
        async for reader, writer, peer in allocation:
            ...
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl as _ssl
import time
from types import TracebackType
from typing import Any, Self

from delshare.address import format_address
from delshare.aio.client_allocation import RelayedStream, TcpAllocation, UdpAllocation
from delshare.aio.client_renewal import RenewingAllocation
from delshare.errors import DelshareError, StunDecodeError
from delshare.stun.attributes import (
    LIFETIME,
    MAPPED_ADDRESS,
    REQUESTED_ADDRESS_FAMILY,
    REQUESTED_TRANSPORT,
    XOR_MAPPED_ADDRESS,
    Address,
    Attribute,
)
from delshare.stun.constants import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    PROTO_TCP,
    PROTO_UDP,
    ErrorCode,
    Method,
)
from delshare.stun.credentials import rest_credentials
from delshare.stun.framing import StreamFramer
from delshare.stun.message import Message
from delshare.tls import client_context, describe_secure_connect_error, describe_tls_error
from delshare.turn.client import (
    ConnectionAttempted,
    PeerDataReceived,
    TransactionFailed,
    TransactionSucceeded,
    TurnClientCore,
)
from delshare.turn.client_errors import AllocationError, TryAlternateError, TurnConnectionError
from delshare.turn.uri import TurnUri, parse_turn_uri

__all__ = [
    "RelayedStream",
    "TcpAllocation",
    "TurnClient",
    "UdpAllocation",
    "connect_turn",
    "stun_binding",
]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # opening a TCP/TLS connection to the server
REST_TTL = 86400  # lifetime of credentials derived from a shared secret
MAX_EARLY_EVENTS = 64  # indications that arrive before the allocation object exists

SslArg = _ssl.SSLContext | bool | None


class _StreamControl(asyncio.Protocol):
    """Control connection over TCP/TLS: frames the byte stream (RFC 8656 §12.5)."""

    def __init__(self, client: TurnClient) -> None:
        self._client = client
        self._framer = StreamFramer()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # not always an asyncio.Transport subclass (uvloop)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._framer.feed(data)
        except StunDecodeError as exc:
            self._client._lost(TurnConnectionError(f"server sent garbage: {exc}"), self.transport)
            if self.transport is not None:
                self.transport.close()
            return
        for frame in frames:
            self._client._frame_received(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        error = TurnConnectionError(f"connection to TURN server lost ({exc or 'EOF'})")
        self._client._lost(error, self.transport)


class _DatagramControl(asyncio.DatagramProtocol):
    """Control "connection" over UDP: each datagram is one frame."""

    def __init__(self, client: TurnClient) -> None:
        self._client = client
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._client._frame_received(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error from TURN server: %s", exc)  # ICMP; retransmission copes

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._lost(TurnConnectionError("UDP socket closed"), self.transport)


class TurnClient:
    """One control connection to a TURN server; at most one allocation at a time (RFC 8656 §2.2)."""

    def __init__(self, uri: TurnUri, username: str, password: str, ssl: SslArg = None) -> None:
        self.uri = uri
        self.core = TurnClientCore(username, password, reliable=uri.stream)
        self.ssl = _ssl_context(uri, ssl)
        self.server_address: Address = (uri.host, uri.port)
        self.local_address: Address = ("", 0)
        self.allocation: RenewingAllocation | None = None
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.BaseTransport | None = None
        self._waiters: dict[bytes, asyncio.Future[Message]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._error: DelshareError | None = None
        self._early: list[ConnectionAttempted | PeerDataReceived] = []

    # -- connection -----------------------------------------------------------------------

    async def _open(self, host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> None:
        """Open the control connection; ``OSError`` becomes ``TurnConnectionError``."""
        try:
            async with asyncio.timeout(timeout):
                if self.uri.stream:
                    await self._open_stream(host, port)
                else:
                    await self._open_datagram(host, port)
        except (OSError, TimeoutError) as exc:
            reason = _reason(exc, self.uri.host, self.ssl is not None)
            where = format_address(host, port)
            raise TurnConnectionError(f"cannot reach TURN server {where} ({reason})") from exc
        self._error = None

    async def _open_stream(self, host: str, port: int) -> None:
        hostname = self.uri.host if self.ssl else None
        transport, _ = await self._loop.create_connection(
            lambda: _StreamControl(self), host, port, ssl=self.ssl, server_hostname=hostname
        )
        self._set_transport(transport)

    async def _open_datagram(self, host: str, port: int) -> None:
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _DatagramControl(self), remote_addr=(host, port)
        )
        self._set_transport(transport)

    def _set_transport(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
        self.server_address = (str(peer[0]), int(peer[1]))
        self.local_address = (str(local[0]), int(local[1]))

    @property
    def closed(self) -> bool:
        """Whether the control connection is gone."""
        return self._transport is None

    async def close(self) -> None:
        """Delete the allocation (best effort), close its streams and the control connection."""
        if self.allocation is not None:
            await self.allocation.close()
        if self._transport is not None:
            self._transport.close()
        self._lost(TurnConnectionError("client closed"))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- requests -------------------------------------------------------------------------

    async def request(
        self, method: int, attrs: list[Attribute], *, authenticate: bool = True
    ) -> Message:
        """Send a request and await its success response; errors raise typed exceptions."""
        if self._transport is None:
            raise self._error or TurnConnectionError("not connected")
        handle = self.core.request(method, attrs, self._loop.time(), authenticate=authenticate)
        future: asyncio.Future[Message] = self._loop.create_future()
        self._waiters[handle] = future
        self._pump()
        try:
            return await future
        finally:
            self._waiters.pop(handle, None)
            if not future.done():
                self.core.cancel(handle)

    def send_indication(self, method: int, attrs: list[Attribute]) -> None:
        """Send an indication (Send, RFC 8656 §11)."""
        self.core.indication(method, attrs)
        self._pump()

    def send_raw(self, frame: bytes) -> None:
        """Send one ready-made frame (ChannelData)."""
        self.core.queue_raw(frame)
        self._pump()

    async def binding(self) -> Address:
        """STUN Binding: the server-reflexive address of this connection (RFC 8489 §3)."""
        response = await self.request(Method.BINDING, [], authenticate=False)
        address = response.get(XOR_MAPPED_ADDRESS) or response.get(MAPPED_ADDRESS)
        if address is None:
            raise TurnConnectionError("Binding response without XOR-MAPPED-ADDRESS")
        return address

    # -- allocations ----------------------------------------------------------------------

    async def allocate_tcp(
        self, lifetime: int | None = None, family: int | None = None
    ) -> TcpAllocation:
        """Allocate a TCP relayed address (RFC 6062 §5.1); needs a TCP/TLS control connection.

        ``family`` 4 or 6 asks for that address family (REQUESTED-ADDRESS-FAMILY, RFC 8656
        §7.1); by default the server picks (usually IPv4).
        """
        if not self.uri.stream:
            raise ValueError("TCP allocations need a TCP or TLS control connection (RFC 6062)")
        response = await self._allocate(PROTO_TCP, lifetime, family)
        allocation = TcpAllocation(self, response, lifetime)
        self._adopt(allocation)
        return allocation

    async def allocate_udp(
        self, lifetime: int | None = None, family: int | None = None
    ) -> UdpAllocation:
        """Allocate a UDP relayed address (RFC 8656 §7.1); ``family`` as for ``allocate_tcp``."""
        response = await self._allocate(PROTO_UDP, lifetime, family)
        allocation = UdpAllocation(self, response, lifetime)
        self._adopt(allocation)
        return allocation

    async def _allocate(self, protocol: int, lifetime: int | None, family: int | None) -> Message:
        """Allocate, following one 300 Try Alternate to ALTERNATE-SERVER (RFC 8656 §7.4)."""
        if self.allocation is not None and not self.allocation.closed:
            raise AllocationError(
                "ALLOCATE", ErrorCode.ALLOCATION_MISMATCH, "this client already has an allocation"
            )
        self._early.clear()
        attrs = [REQUESTED_TRANSPORT(protocol)]
        if lifetime is not None:
            attrs.append(LIFETIME(lifetime))
        if family is not None:
            if family not in (4, 6):
                raise ValueError("family must be 4 or 6")
            attrs.append(REQUESTED_ADDRESS_FAMILY(FAMILY_IPV4 if family == 4 else FAMILY_IPV6))
        try:
            return await self.request(Method.ALLOCATE, attrs)
        except TryAlternateError as exc:
            if exc.alternate is None:
                raise
            await self._redirect(exc.alternate)
            return await self.request(Method.ALLOCATE, attrs)

    async def _redirect(self, alternate: Address) -> None:
        """Move the control connection to the alternate server, keeping credentials."""
        log.info("TURN server redirects to %s:%d", *alternate)
        if self._transport is not None:
            self._transport.close()
        self._transport = None
        await self._open(*alternate)

    # -- sans-IO plumbing -----------------------------------------------------------------

    def _frame_received(self, frame: bytes) -> None:
        self.core.receive(frame, self._loop.time())
        self._pump()

    def _pump(self) -> None:
        """Write what the core queued, dispatch its events, re-arm its one timer."""
        self._flush()
        while (event := self.core.next_event()) is not None:
            self._dispatch(event)
        self._flush()
        self._rearm()

    def _flush(self) -> None:
        transport = self._transport
        for data in self.core.data_to_send():
            if transport is None:
                continue
            if self.uri.stream:
                transport.write(data)  # type: ignore[attr-defined]
            else:  # a DatagramTransport (the selector loop's class does not inherit it)
                transport.sendto(data)  # type: ignore[attr-defined]

    def _dispatch(self, event: object) -> None:
        if isinstance(event, TransactionSucceeded | TransactionFailed):
            future = self._waiters.get(event.handle)
            if future is None or future.done():
                return
            if isinstance(event, TransactionSucceeded):
                future.set_result(event.response)
            else:
                future.set_exception(event.error)
        elif isinstance(event, ConnectionAttempted | PeerDataReceived):
            self._allocation_event(event)

    def _allocation_event(self, event: ConnectionAttempted | PeerDataReceived) -> None:
        """Hand over to the allocation; keep early ones (same read as the Allocate response)."""
        allocation = self.allocation
        if allocation is None or allocation.closed:
            if len(self._early) < MAX_EARLY_EVENTS:
                self._early.append(event)
        elif isinstance(event, ConnectionAttempted) and isinstance(allocation, TcpAllocation):
            allocation._connection_attempted(event)
        elif isinstance(event, PeerDataReceived) and isinstance(allocation, UdpAllocation):
            allocation._data_received(event)

    def _adopt(self, allocation: RenewingAllocation) -> None:
        self.allocation = allocation
        early, self._early = self._early, []
        for event in early:
            self._allocation_event(event)

    def _rearm(self) -> None:
        deadline = self.core.get_timer()
        if self._timer is not None and (deadline is None or self._timer.when() != deadline):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None and self._transport is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(self._loop.time())
        self._pump()

    def _lost(self, error: DelshareError, transport: asyncio.BaseTransport | None = None) -> None:
        """The control connection is gone: fail requests, end the allocation (RFC 6062 §5.5).

        ``transport`` names the connection that reported it; a report from one we already
        replaced (after a 300 redirect) is ignored.
        """
        if transport is not None and transport is not self._transport:
            return
        if self._transport is None and self._error is not None:
            return
        self._transport, self._error = None, error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(error)
        if self.allocation is not None:
            self.allocation._connection_lost()


def _reason(exc: OSError | TimeoutError, host: str = "", secure: bool = False) -> str:
    """A short human reason for a failed connect, TLS failures by cause (``delshare.tls``)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    tls = describe_secure_connect_error(exc, host) if secure else describe_tls_error(exc, host)
    if tls is not None:
        return tls
    return os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__


def _ssl_context(uri: TurnUri, ssl: SslArg) -> _ssl.SSLContext | None:
    if not uri.secure or ssl is False:
        return None
    if isinstance(ssl, _ssl.SSLContext):
        return ssl
    return client_context()  # the system's CAs, or DELSHARE_CA


async def connect_turn(
    uri: str | TurnUri,
    username: str | None = None,
    password: str | None = None,
    *,
    secret: str | None = None,
    ssl: SslArg = None,
    timeout: float = CONNECT_TIMEOUT,
) -> TurnClient:
    """Open a control connection to the TURN server named by ``uri`` (RFC 7065).

    Credentials are ``username``/``password`` or a REST ``secret`` from which ephemeral ones
    are derived (``<expiry>:<username or "del">``). For ``turns:`` pass an ``ssl.SSLContext``
    to trust a private CA; the default context verifies the host name.
    """
    parsed = parse_turn_uri(uri) if isinstance(uri, str) else uri
    if secret is not None:
        username, password = rest_credentials(secret, time.time(), REST_TTL, username or "del")
    client = TurnClient(parsed, username or "", password or "", ssl)
    await client._open(parsed.host, parsed.port, timeout)
    return client


async def stun_binding(uri: str | TurnUri, *, timeout: float = CONNECT_TIMEOUT) -> Address:
    """The server-reflexive address seen by a TURN/STUN server (RFC 8489 Binding, no auth).

    Opens a control connection of the URI's transport, asks once, closes. Over TCP the port is
    that of this short-lived connection; the IP is what the app usually needs.
    """
    client = await connect_turn(uri, timeout=timeout)
    try:
        async with asyncio.timeout(timeout):
            return await client.binding()
    except TimeoutError as exc:
        raise TurnConnectionError("STUN Binding timed out") from exc
    finally:
        await client.close()
