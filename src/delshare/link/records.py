"""The asyncio half of a DEL link: the handshake over a fresh connection, then the record channel.

Theory of operation. :func:`handshake` runs the sans-IO :class:`~delshare.link.crypto.Handshake`
(two fixed-size exchanges; the wire format is in :mod:`delshare.link.crypto`) over the connected
stream, then hands the connection over instead of reading under the stream: the connection's socket
is duplicated, the stream's transport closed, and whatever the stream had already read (the
peer's first records may come right behind its CONFIRM) taken through the reader's public API.
:meth:`RecordChannel.open` builds a new transport on that socket with the channel's own protocol
(``loop.connect_accepted_socket``), fed those leftover bytes first: from then on the protocol owns
the connection, and no protocol is swapped under a live transport.

A TLS stream (a ``turns:`` TURN data connection, RFC 6062 over TLS) has no plain socket to hand
over: the TLS session lives in its transport. It is bridged to one end of a local socket pair
(:class:`_TlsBridge`), and the channel gets the other end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import mmap
import socket
from typing import Any, NoReturn, Protocol, cast

from delshare.link.crypto import (
    CONFIRM_SIZE,
    HEADER_SIZE,
    HELLO_SIZE,
    MAX_PAYLOAD,
    TAG_SIZE,
    Handshake,
    LinkAuthError,
    LinkClosedError,
    LinkError,
    LinkProtocolError,
    LinkTimeoutError,
    Record,
    RecordDecoder,
    RecordIntegrityError,
    RecordKind,
    RecordOpener,
    RecordSealer,
    Role,
    SessionKeys,
)
from delshare.portable import PORTABLE

__all__ = [  # the channel, and the sans-IO names its callers use with it
    "CONFIRM_SIZE",
    "HEADER_SIZE",
    "HELLO_SIZE",
    "MAX_PAYLOAD",
    "TAG_SIZE",
    "Handshake",
    "LinkAuthError",
    "LinkClosedError",
    "LinkError",
    "LinkProtocolError",
    "LinkTimeoutError",
    "Record",
    "RecordChannel",
    "RecordDecoder",
    "RecordIntegrityError",
    "RecordKind",
    "RecordOpener",
    "RecordSealer",
    "Role",
    "SessionKeys",
    "abort_stream",
    "handshake",
]

_RING = 4
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 20, 5, 4  # seconds, seconds, probes
USER_TIMEOUT_MS = 60_000
_RING_MIN = 64 << 10
_OUT_RING = 3
_BRIDGE_CHUNK = 1 << 16
_SPILL = 1 << 16


class _Socket(Protocol):
    """What socket options need: a ``socket.socket`` or a transport's socket view."""

    @property
    def family(self) -> int: ...

    @property
    def type(self) -> int: ...

    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...


class _RecordProtocol(asyncio.BufferedProtocol):
    """Receives records straight into a ring of preallocated buffers (``recv_into``, no copies).

    Each record's header and ciphertext are read into place and queued; decryption happens when
    the consumer takes the record (into its own buffer with :meth:`RecordChannel.recv_into`).
    Reading pauses while all ``_RING`` ciphertext buffers wait for the consumer. Write flow
    control is tracked for :meth:`RecordChannel.drain`. Bytes read before this protocol had its
    transport (the handshake's leftovers) are :meth:`feed` first.
    """

    def __init__(self, opener: RecordOpener) -> None:
        self.opener = opener
        self._header = bytearray(HEADER_SIZE)
        self._bodies = [_lazy_buffer(MAX_PAYLOAD + TAG_SIZE) for _ in range(_RING)]
        self._free: collections.deque[int] = collections.deque(range(1, _RING))
        self._current: int | None = 0
        self._in_body = False
        self._have = 0
        self._body_len = 0
        self._queue: collections.deque[tuple[bytes, int, int]] = collections.deque()
        self._backlog = bytearray()
        self._spill = memoryview(bytearray(_SPILL))
        self._spilling = False
        self._broken = False
        self._end: LinkError | None = None
        self._reader_waiter: asyncio.Future[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self._broken:
            self._transport.abort()
        elif self.backlogged or self._current is None:
            self._transport.pause_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        # Bytes go into the ring only behind every byte already waiting, and only while a
        # buffer is free; otherwise they spill to the backlog and reading pauses (a transport
        # may read before it honours a pause, e.g. uvloop right after ``connection_made``).
        self._spilling = bool(self._backlog) or self._current is None
        return self._spill if self._spilling else self._target()

    def _target(self) -> memoryview:
        """Where the next bytes of the stream go in the ring."""
        if self._in_body and self._current is not None:
            return self._bodies[self._current][self._have : self._body_len]
        return memoryview(self._header)[self._have :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._spilling:
            self._backlog += self._spill[:nbytes]
            if self._transport is not None:
                self._transport.pause_reading()
            return
        self._advance(nbytes)

    def _advance(self, nbytes: int) -> None:
        """``nbytes`` more arrived at :meth:`_target`: complete a header or a record."""
        self._have += nbytes
        try:
            if not self._in_body and self._have == HEADER_SIZE:
                self._body_len = self.opener.parse_header(bytes(self._header))
                self._in_body, self._have = True, 0
            elif self._in_body and self._have == self._body_len:
                self._queue.append((bytes(self._header), self._take_body(), self._body_len))
                self._in_body, self._have = False, 0
                self._wake_reader()
        except LinkError as exc:
            self._broken = True
            self._end = exc
            self._wake_reader()
            if self._transport is not None:
                self._transport.abort()

    def _take_body(self) -> int:
        assert self._current is not None
        full, self._current = self._current, self._free.popleft() if self._free else None
        if self._current is None and self._transport is not None:
            self._transport.pause_reading()
        return full

    def release(self, index: int) -> None:
        """The consumer is done with ciphertext buffer ``index``."""
        if self._current is not None:
            self._free.append(index)
            return
        self._current = index
        self._drain_backlog()
        transport = self._transport
        if self.backlogged or transport is None or transport.is_closing():
            return
        transport.resume_reading()

    @property
    def backlogged(self) -> bool:
        """Bytes from before the transport still wait for a free buffer (keep reading paused)."""
        return bool(self._backlog)

    def feed(self, data: bytes) -> None:
        """Queue bytes that arrived before this protocol had its transport."""
        self._backlog += data
        self._drain_backlog()

    def _drain_backlog(self) -> None:
        while self._backlog and not self._broken and self._current is not None:
            target = self._target()
            n = min(len(target), len(self._backlog))
            target[:n] = self._backlog[:n]
            del self._backlog[:n]
            self._advance(n)

    def _finish(self, error: LinkError) -> None:
        if self._end is None:
            self._end = error
        self._wake_reader()

    def stop(self, error: LinkError, *, abort: bool) -> None:
        """End reading: later reads raise ``error``; ``abort`` drops the connection too."""
        self._end = error
        self._broken = True
        self._backlog.clear()
        self._queue.clear()
        if abort and self._transport is not None:
            self._transport.abort()

    def _wake_reader(self) -> None:
        waiter, self._reader_waiter = self._reader_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_ciphertext(self) -> tuple[bytes, memoryview, int]:
        """The next queued record: (header, its ciphertext, buffer index to release)."""
        while not self._queue:
            if self._end is not None and not self._backlog:
                raise self._end
            self._reader_waiter = asyncio.get_running_loop().create_future()
            await self._reader_waiter
        header, index, length = self._queue.popleft()
        return header, self._bodies[index][:length], index

    def eof_received(self) -> bool:
        self._finish(LinkClosedError("connection closed without CLOSE record", clean=False))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        detail = f": {exc}" if exc else ""
        self._finish(LinkClosedError(f"connection lost{detail}", clean=False))
        self._write_paused = False
        self._wake_drain()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        if self.closed.done():
            raise LinkClosedError("connection lost", clean=False)
        if self._write_paused:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter
            if self.closed.done():
                raise LinkClosedError("connection lost", clean=False)


class RecordChannel:
    """Authenticated, encrypted records over a connection it owns from the start.

    Made by :func:`handshake` (or :meth:`open` from a socket and the bytes already read from
    it); the channel's protocol is the connection's only protocol.
    """

    def __init__(
        self, transport: asyncio.Transport, protocol: _RecordProtocol, keys: SessionKeys
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._sealer = RecordSealer(keys.send_key)
        self._closed = False
        record_size = HEADER_SIZE + MAX_PAYLOAD + TAG_SIZE
        self._out = [_lazy_buffer(record_size) for _ in range(_OUT_RING)]
        self._out_end = [0] * len(self._out)
        self._out_next = 0
        self._written = 0
        self.data_sent = 0
        """Payload bytes of the DATA records written on this channel."""
        self.data_received = 0
        """Payload bytes of the DATA records received on this channel."""

    @classmethod
    async def open(cls, sock: socket.socket, leftover: bytes, keys: SessionKeys) -> RecordChannel:
        """A channel on connected ``sock`` whose first incoming bytes are ``leftover``."""
        protocol = _RecordProtocol(RecordOpener(keys.recv_key))
        protocol.feed(leftover)
        _detect_dead_peer(sock)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
        return cls(transport, protocol, keys)

    def get_extra_info(self, name: str, default: object = None) -> Any:
        """The connection's transport information (``"socket"``, ``"peername"``, ...)."""
        return self._transport.get_extra_info(name, default)

    def write_buffer_size(self) -> int:
        """Bytes written to the channel that the kernel has not taken yet."""
        return self._transport.get_write_buffer_size()

    async def send(self, data: bytes | memoryview, kind: RecordKind = RecordKind.DATA) -> None:
        """Send one record (``len(data) <= MAX_PAYLOAD``) and wait for buffer room."""
        self.write(data, kind)
        await self.drain()

    def write(self, data: bytes | memoryview, kind: RecordKind = RecordKind.DATA) -> None:
        """Queue one record without waiting; call :meth:`drain` for back-pressure.

        ``data`` is encrypted at once, so the caller may reuse its buffer right away. Big records
        are sealed into a small ring of output buffers, each reused only once the transport has
        handed all of its bytes to the kernel (asyncio may keep a view of unsent data).
        """
        if self._closed:
            raise LinkClosedError("channel already closed", clean=True)
        if self._protocol.closed.done():
            raise LinkClosedError("connection lost", clean=False)
        slot = self._out_next
        flushed = self._written - self._transport.get_write_buffer_size()
        if len(data) >= _RING_MIN and flushed >= self._out_end[slot]:
            size = self._sealer.seal_into(kind, data, self._out[slot])
            self._transport.write(self._out[slot][:size])
            self._out_end[slot] = self._written + size
            self._out_next = (slot + 1) % len(self._out)
        else:  # small record, or the ring slot still has unsent bytes
            header, ciphertext = self._sealer.seal(kind, data)
            size = len(header) + len(ciphertext)
            self._transport.write(header + ciphertext)
        self._written += size
        if kind is RecordKind.DATA:
            self.data_sent += len(data)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self._protocol.drain()

    async def send_control(self, data: bytes) -> None:
        """Send one CONTROL record."""
        await self.send(data, RecordKind.CONTROL)

    async def recv_record(self) -> Record:
        """Receive the next DATA or CONTROL record.

        Raises LinkClosedError (``clean`` after the peer's CLOSE), RecordIntegrityError or
        LinkProtocolError; the link is unusable after any of them.
        """
        header, ciphertext, index = await self._protocol.next_ciphertext()
        try:
            record = self._protocol.opener.open(header, ciphertext)
        except LinkError as exc:
            self._protocol.stop(exc, abort=True)
            raise
        finally:
            self._protocol.release(index)
        if record.kind is RecordKind.CLOSE:
            self._peer_closed()
        if record.kind is RecordKind.DATA:
            self.data_received += len(record.payload)
        return record

    async def recv_into(self, buffer: memoryview) -> tuple[RecordKind, int]:
        """Receive the next record, decrypting it into ``buffer``; return (kind, length).

        ``buffer`` must hold ``MAX_PAYLOAD`` bytes. Same errors as :meth:`recv_record`.
        """
        header, ciphertext, index = await self._protocol.next_ciphertext()
        try:
            kind = self._protocol.opener.open_into(header, ciphertext, buffer)
        except LinkError as exc:
            self._protocol.stop(exc, abort=True)
            raise
        finally:
            self._protocol.release(index)
        if kind is RecordKind.CLOSE:
            self._peer_closed()
        length = len(ciphertext) - TAG_SIZE
        if kind is RecordKind.DATA:
            self.data_received += length
        return kind, length

    def _peer_closed(self) -> NoReturn:
        error = LinkClosedError("peer closed the link", clean=True)
        self._protocol.stop(error, abort=False)
        raise error

    async def recv(self) -> bytes:
        """Receive the payload of the next record of any kind but CLOSE."""
        return (await self.recv_record()).payload

    async def close(self, timeout: float = 5.0) -> None:
        """Send an authenticated CLOSE (best effort), flush, and close the connection."""
        if self._closed:
            return
        with contextlib.suppress(LinkError):
            self.write(b"", RecordKind.CLOSE)
        self._closed = True
        self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._protocol.closed), timeout)
        except TimeoutError:
            self._transport.abort()

    def abort(self) -> None:
        """Drop the connection at once, without CLOSE (the peer sees a lost link)."""
        self._closed = True
        self._transport.abort()


def _lazy_buffer(size: int) -> memoryview:
    """A writable buffer whose pages the kernel supplies (zeroed) only when first touched.

    ``bytearray(size)`` zero-fills at once: ~4.5 MiB per channel, and a race opens several
    channels, which cost ~10 ms before a tiny transfer; anonymous mmap costs nothing up front.
    """
    return memoryview(mmap.mmap(-1, size))


def _detect_dead_peer(sock: _Socket) -> None:
    """TCP keepalive and a user timeout, so a link that silently stops (a NAT mapping or a
    network gone, no FIN or RST) fails in about a minute instead of hanging both ends:
    keepalive probes catch an idle one, ``TCP_USER_TIMEOUT`` (RFC 5482) data left unacknowledged.
    A peer that is merely slow still acknowledges, so it is never cut off."""
    if sock.type != socket.SOCK_STREAM:
        return
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    tuned = (
        ()
        if PORTABLE
        else (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
            ("TCP_KEEPCNT", KEEPALIVE_COUNT),
            ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
        )
    )
    for name, value in tuned:
        if hasattr(socket, name):  # Linux has all; others keep their defaults
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, option, value in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


async def _hand_over(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[socket.socket, bytes]:
    """Take the connection from its stream: a socket of our own and the bytes already read.

    Our CONFIRM is flushed first; after ``abort`` the transport reads nothing more, so EOF can
    be fed to the reader and everything it holds read at once, without waiting.
    """
    if writer.get_extra_info("sslcontext") is not None:
        return _TlsBridge.start(reader, writer), b""
    writer.transport.set_write_buffer_limits(high=0)
    await writer.drain()
    view = writer.get_extra_info("socket")
    if view is None:
        raise TypeError("the link needs a socket stream")
    sock: socket.socket = view.dup()
    writer.transport.abort()
    reader.feed_eof()
    try:
        return sock, await reader.read()
    except BaseException:
        sock.close()
        raise


class _TlsBridge:
    """Copies between a TLS stream and one end of a local socket pair, both ways.

    Either side ending ends the other: the peer's close reaches the channel as end of stream,
    the channel's close or abort closes the TLS stream. Running bridges are kept referenced.
    """

    _running: set[asyncio.Task[None]] = set()

    @classmethod
    def start(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> socket.socket:
        """Bridge the TLS stream; return the socket the channel takes."""
        raw = writer.get_extra_info("socket")
        if raw is not None:
            _detect_dead_peer(raw)
        ours, theirs = socket.socketpair()
        task = asyncio.ensure_future(cls._run(reader, writer, theirs))
        cls._running.add(task)
        task.add_done_callback(cls._running.discard)
        return ours

    @staticmethod
    async def _run(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock: socket.socket
    ) -> None:
        local_reader, local_writer = await asyncio.open_connection(sock=sock)
        pumps = [
            asyncio.ensure_future(_pump(reader, local_writer)),
            asyncio.ensure_future(_pump(local_reader, writer)),
        ]
        try:
            await asyncio.gather(*pumps)
        finally:
            for pump in pumps:
                pump.cancel()
            local_writer.close()
            writer.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream or a broken connection, then close ``writer``."""
    try:
        while data := await reader.read(_BRIDGE_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def abort_stream(writer: asyncio.StreamWriter) -> None:
    """Close a stream writer, ignoring errors from an already-broken connection."""
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, size: int
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(size)


async def _authenticate(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes, role: Role
) -> RecordChannel:
    state = Handshake(key, role)
    peer_hello = await _exchange(reader, writer, state.hello(), HELLO_SIZE)
    confirm = state.receive_hello(peer_hello)
    keys = state.receive_confirm(await _exchange(reader, writer, confirm, CONFIRM_SIZE))
    sock, leftover = await _hand_over(reader, writer)
    try:
        return await RecordChannel.open(sock, leftover, keys)
    except BaseException:
        sock.close()
        raise


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    key: bytes,
    role: Role,
    timeout: float = 10.0,
) -> RecordChannel:
    """Prove knowledge of ``key`` to the peer and check its proof; return the record channel.

    The channel then owns the connection (the stream is closed without closing it). Raises
    :class:`LinkAuthError` if the peer does not know the key, :class:`LinkTimeoutError` or
    :class:`LinkClosedError` if it stalls or disconnects. The stream is closed on failure.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _authenticate(reader, writer, key, role)
    except TimeoutError:
        await abort_stream(writer)
        raise LinkTimeoutError(f"handshake did not finish in {timeout:g} s") from None
    except asyncio.IncompleteReadError:
        await abort_stream(writer)
        raise LinkClosedError("peer closed during handshake", clean=False) from None
    except (ConnectionError, OSError) as exc:
        await abort_stream(writer)
        raise LinkClosedError(f"connection lost during handshake: {exc}", clean=False) from exc
    except LinkError:
        await abort_stream(writer)
        raise
