"""Bidirectional byte pump between two stream endpoints: the data plane of RFC 6062 TCP relays.

Theory of operation
-------------------
``bridge(a, b)`` runs two independent directions, a→b and b→a, until both have finished.

Plain sockets are driven by event-loop readiness callbacks (``add_reader``/``add_writer``), with no
task or thread per connection. Each direction owns one bounded buffer: on Linux a pipe enlarged to
``PIPE_SIZE`` that ``os.splice`` fills from the source socket and empties into the destination
(the bytes never enter user space); elsewhere a ``COPY_CHUNK`` ``bytearray`` for
``recv_into``/``send``. A direction watches its source only while its buffer is empty and its
destination only while it is not, so a slow reader stops reads from the sender and the kernel's
TCP windows push back on it: memory per direction never exceeds one buffer. Each callback moves
data until the kernel says EAGAIN (bounded by ``_MAX_ROUNDS``) to amortise loop overhead.

``asyncio`` stream pairs (TLS, or anything that is not a raw socket) use one copy task per
direction with ``STREAM_CHUNK`` reads and ``drain()`` for the same back-pressure.

Closing (RFC 6062 §5.5, and the lesson of relays that lose a stream's tail):

- On EOF from a source, the direction first writes out everything buffered, then shuts down the
  destination's write half (``SHUT_WR`` / ``write_eof``); the other direction keeps flowing.
- Sockets are closed only once both directions have seen EOF, so their receive queues are empty
  and ``close()`` is a graceful FIN after the kernel has sent every queued byte (``SO_LINGER`` is
  left off; a close with unread data would turn into a RST that discards the send queue).
- A reset or other socket error on either side tears both down and returns the stats with
  ``reset=True``; cancellation closes both and re-raises ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

if sys.platform == "linux":
    import fcntl

    SPLICE_SUPPORTED: bool = hasattr(os, "splice")
    _SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if SPLICE_SUPPORTED else 0
else:  # pragma: no cover - exercised only off Linux
    SPLICE_SUPPORTED = False

__all__ = [
    "COPY_CHUNK",
    "PIPE_SIZE",
    "SPLICE_SUPPORTED",
    "STREAM_CHUNK",
    "BridgeStats",
    "Endpoint",
    "bridge",
]

Endpoint: TypeAlias = socket.socket | tuple[asyncio.StreamReader, asyncio.StreamWriter]

PIPE_SIZE = 1 << 20
"""Requested capacity of each splice pipe (the kernel may grant less: ``pipe-user-pages-soft``)."""
COPY_CHUNK = 256 << 10
"""Buffer per direction when sockets are copied through user space."""
STREAM_CHUNK = 256 << 10
"""Read size and write-buffer high-water mark per direction for stream endpoints."""
_MIN_PIPE_SIZE = 64 << 10
_MAX_ROUNDS = 16  # fill/drain rounds per callback, so one busy bridge cannot starve the loop


@dataclass
class BridgeStats:
    """What a finished bridge moved; equality compares only the byte counts."""

    a_to_b: int
    """Bytes delivered from a to b, prefix included."""
    b_to_a: int
    """Bytes delivered from b to a, prefix included."""
    reset: bool = field(default=False, compare=False)
    """The bridge ended on a socket error (reset) rather than EOF on both sides."""
    peak_buffered: int = field(default=0, compare=False)
    """Most bytes held between reading and writing in either direction (pipe or user buffer)."""
    path: str = field(default="", compare=False)
    """``"splice"``, ``"copy"`` or ``"stream"``: how the bytes were moved."""


async def bridge(
    a: Endpoint, b: Endpoint, *, a_to_b_prefix: bytes = b"", b_to_a_prefix: bytes = b""
) -> BridgeStats:
    """Move bytes both ways between ``a`` and ``b`` until both directions end; close both.

    The prefixes are written before anything read from the other side (e.g. bytes read past a
    STUN frame, RFC 6062 §5.3). The bridge owns the endpoints: it makes sockets non-blocking and
    closes everything when it returns or is cancelled.
    """
    _check_endpoint(a)
    _check_endpoint(b)
    if isinstance(a, socket.socket) and isinstance(b, socket.socket):
        return await _bridge_sockets(a, b, a_to_b_prefix, b_to_a_prefix)
    try:
        sa = await _as_stream(a)
        sb = await _as_stream(b)
    except BaseException:
        _close_endpoint(a)
        _close_endpoint(b)
        raise
    return await _bridge_streams(sa, sb, a_to_b_prefix, b_to_a_prefix)


def _check_endpoint(endpoint: Endpoint) -> None:
    if isinstance(endpoint, ssl.SSLSocket):
        raise TypeError("bridge needs TLS as an asyncio stream pair, not an ssl.SSLSocket")
    if isinstance(endpoint, socket.socket) and endpoint.type != socket.SOCK_STREAM:
        raise TypeError(f"bridge needs a stream socket, got {endpoint.type!r}")


async def _as_stream(endpoint: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if isinstance(endpoint, socket.socket):
        return await asyncio.open_connection(sock=endpoint, limit=STREAM_CHUNK)
    return endpoint


def _close_endpoint(endpoint: Endpoint) -> None:
    if isinstance(endpoint, socket.socket):
        endpoint.close()
    else:
        endpoint[1].transport.abort()


# --- raw sockets: readiness callbacks -----------------------------------------------------------


class _Direction:
    """One way of a socket bridge: source socket → bounded buffer → destination socket."""

    path = ""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: socket.socket,
        dst: socket.socket,
        prefix: bytes,
        on_end: Callable[[BaseException | None], None],
    ) -> None:
        self._loop = loop
        self._src = src
        self._dst = dst
        self._src_fd = src.fileno()
        self._dst_fd = dst.fileno()
        self._prefix = memoryview(prefix)
        self._on_end = on_end
        self.buffered = 0
        self.delivered = 0
        self.peak = 0
        self.finished = False
        self._eof = False
        self._reading = False
        self._writing = False
        self._closed = False

    def start(self) -> None:
        self._pump()

    def close(self) -> None:
        """Stop watching both sockets (they are closed by the bridge)."""
        self._closed = True
        self._watch(read=False, write=False)

    # The subclass moves bytes: each returns how many moved, 0 when the kernel says EAGAIN.
    def _room(self) -> int:
        raise NotImplementedError

    def _fill(self, room: int) -> int:
        raise NotImplementedError

    def _drain(self) -> int:
        raise NotImplementedError

    def _pump(self) -> None:
        if self._closed:
            return
        try:
            self._move()
            pending = bool(self._prefix) or self.buffered > 0
            if self._eof and not pending:
                self._finish()
            else:
                self._watch(read=not pending, write=pending)
        except Exception as exc:
            self.close()
            self._on_end(exc)

    def _move(self) -> None:
        for _ in range(_MAX_ROUNDS):
            if self._prefix and not self._send_prefix():
                return
            got = put = 0
            room = self._room()
            if not self._eof and room > 0:
                got = self._fill(room)
                self.peak = max(self.peak, self.buffered)
            if self.buffered:
                put = self._drain()
            if not got and not put:
                return

    def _send_prefix(self) -> bool:
        with contextlib.suppress(BlockingIOError):
            sent = self._dst.send(self._prefix)
            self._prefix = self._prefix[sent:]
            self.delivered += sent
        return not self._prefix

    def _finish(self) -> None:
        self._watch(read=False, write=False)
        self._dst.shutdown(socket.SHUT_WR)
        self.finished = True
        self._on_end(None)

    def _watch(self, *, read: bool, write: bool) -> None:
        if read != self._reading:
            if read:
                self._loop.add_reader(self._src_fd, self._pump)
            else:
                self._loop.remove_reader(self._src_fd)
            self._reading = read
        if write != self._writing:
            if write:
                self._loop.add_writer(self._dst_fd, self._pump)
            else:
                self._loop.remove_writer(self._dst_fd)
            self._writing = write


class _CopyDirection(_Direction):
    """Portable direction: ``recv_into`` a fixed buffer, ``send`` from it."""

    path = "copy"

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: socket.socket,
        dst: socket.socket,
        prefix: bytes,
        on_end: Callable[[BaseException | None], None],
    ) -> None:
        super().__init__(loop, src, dst, prefix, on_end)
        self._view = memoryview(bytearray(COPY_CHUNK))
        self._start = 0

    def _room(self) -> int:
        return COPY_CHUNK - self._start - self.buffered

    def _fill(self, room: int) -> int:
        end = self._start + self.buffered
        try:
            got = self._src.recv_into(self._view[end:])
        except BlockingIOError:
            return 0
        if got == 0:
            self._eof = True
        self.buffered += got
        return got

    def _drain(self) -> int:
        try:
            put = self._dst.send(self._view[self._start : self._start + self.buffered])
        except BlockingIOError:
            return 0
        self.buffered -= put
        self.delivered += put
        self._start = self._start + put if self.buffered else 0
        return put


class _SpliceDirection(_Direction):
    """Linux zero-copy direction: ``splice`` socket → pipe → socket."""

    path = "splice"

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: socket.socket,
        dst: socket.socket,
        prefix: bytes,
        on_end: Callable[[BaseException | None], None],
    ) -> None:
        super().__init__(loop, src, dst, prefix, on_end)
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.capacity = _enlarge_pipe(self._pipe_w)

    def close(self) -> None:
        was_closed = self._closed
        super().close()
        if not was_closed:
            os.close(self._pipe_r)
            os.close(self._pipe_w)

    def _room(self) -> int:
        return self.capacity - self.buffered

    def _fill(self, room: int) -> int:
        try:
            got = os.splice(self._src_fd, self._pipe_w, room, flags=_SPLICE_FLAGS)
        except BlockingIOError:  # source empty, or pipe slots full of partial pages
            return 0
        if got == 0:
            self._eof = True
        self.buffered += got
        return got

    def _drain(self) -> int:
        try:
            put = os.splice(self._pipe_r, self._dst_fd, self.buffered, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            return 0
        self.buffered -= put
        self.delivered += put
        return put


def _enlarge_pipe(fd: int) -> int:
    """Grow a pipe towards ``PIPE_SIZE``; unprivileged users past their quota get less."""
    size = PIPE_SIZE
    while size >= _MIN_PIPE_SIZE:
        try:
            return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
        except OSError:
            size //= 2
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def _make_direction(
    loop: asyncio.AbstractEventLoop,
    src: socket.socket,
    dst: socket.socket,
    prefix: bytes,
    on_end: Callable[[BaseException | None], None],
) -> _Direction:
    """A splice direction when the pipe quota allows a useful pipe, else a copy direction."""
    if SPLICE_SUPPORTED:
        direction = _SpliceDirection(loop, src, dst, prefix, on_end)
        if direction.capacity >= _MIN_PIPE_SIZE:
            return direction
        direction.close()  # past fs.pipe-user-pages-soft a pipe holds 2 pages: copy instead
    return _CopyDirection(loop, src, dst, prefix, on_end)


async def _bridge_sockets(
    a: socket.socket, b: socket.socket, a_to_b_prefix: bytes, b_to_a_prefix: bytes
) -> BridgeStats:
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[bool] = loop.create_future()
    directions: list[_Direction] = []

    def on_end(exc: BaseException | None) -> None:
        if ended.done():
            return
        if exc is None:
            if all(d.finished for d in directions):
                ended.set_result(False)
        elif isinstance(exc, OSError):
            ended.set_result(True)
        else:
            ended.set_exception(exc)

    try:
        a.setblocking(False)
        b.setblocking(False)
        directions.append(_make_direction(loop, a, b, a_to_b_prefix, on_end))
        directions.append(_make_direction(loop, b, a, b_to_a_prefix, on_end))
        for direction in directions:
            direction.start()
        reset = await ended
    finally:
        for direction in directions:
            direction.close()
        a.close()
        b.close()
    ab, ba = directions
    path = "splice" if ab.path == ba.path == "splice" else "copy"
    return BridgeStats(ab.delivered, ba.delivered, reset, max(ab.peak, ba.peak), path)


# --- asyncio streams: one copy task per direction -------------------------------------------------


@dataclass
class _StreamCounter:
    delivered: int = 0
    peak: int = 0


async def _copy_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, prefix: bytes, count: _StreamCounter
) -> None:
    """Copy until EOF, then half-close ``writer`` (or close it if it cannot, e.g. TLS)."""
    writer.transport.set_write_buffer_limits(high=STREAM_CHUNK)
    if prefix:
        writer.write(prefix)
        count.delivered += len(prefix)
        await writer.drain()
    while data := await reader.read(STREAM_CHUNK):
        writer.write(data)
        count.delivered += len(data)
        count.peak = max(count.peak, writer.transport.get_write_buffer_size())
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    else:
        # No half-close on this transport: a graceful close flushes, then ends the other way too.
        writer.close()


async def _bridge_streams(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    a_to_b_prefix: bytes,
    b_to_a_prefix: bytes,
) -> BridgeStats:
    ab, ba = _StreamCounter(), _StreamCounter()
    tasks = [
        asyncio.ensure_future(_copy_stream(a[0], b[1], a_to_b_prefix, ab)),
        asyncio.ensure_future(_copy_stream(b[0], a[1], b_to_a_prefix, ba)),
    ]
    reset = True
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        reset = _stream_failure(tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, writer in (a, b):
            if reset:
                writer.transport.abort()
            else:
                writer.close()  # graceful: the transport flushes its buffer before closing
    return BridgeStats(ab.delivered, ba.delivered, reset, max(ab.peak, ba.peak), "stream")


def _stream_failure(tasks: Sequence[asyncio.Future[None]]) -> bool:
    """True if a copy task ended on a socket error; re-raise anything else (a bug)."""
    failed = False
    for task in tasks:
        if not task.done():
            continue
        exc = task.exception()
        if isinstance(exc, OSError):
            failed = True
        elif exc is not None:
            raise exc
    return failed
