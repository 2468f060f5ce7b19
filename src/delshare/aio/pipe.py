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

Closing (RFC 6062 §5.5, and the lesson of relays that lose the tail of a stream):

- On EOF from a source, the direction first writes out everything buffered, then shuts down the
  destination's write half (``SHUT_WR`` / ``write_eof``); the other direction keeps flowing.
- Sockets are closed only once both directions have seen EOF, so their receive queues are empty
  and ``close()`` is a graceful FIN after the kernel has sent every queued byte. ``SO_LINGER`` is
  left off: a close with unread data turns into a RST that discards the send queue.
- A reset (any socket error) on one side S is a teardown, but not a reason to lose bytes that side
  S sent before it failed: the direction *from* S keeps reading what S's kernel still queues
  (after a RST, Linux still hands out queued data), delivers it to the other side O, then FIN.
  The direction *into* S becomes a sink that reads and discards O's bytes, so that O's receive
  queue stays empty, until O's kernel has had every byte acknowledged (``SIOCOUTQ`` = 0), O
  closes, or ``LINGER_TIMEOUT`` passes. Then both are closed and the stats say ``reset=True``.
- Cancellation closes both at once and re-raises ``CancelledError``.

Bandwidth caps (``limits``, coturn's ``max-bps``): a direction given a ``TokenBucket`` reads at
most what the bucket holds (splice still moves the bytes, just in measured lengths); when the
bucket is empty it stops watching its source and sets one timer for when the bucket has refilled
a quarter of its burst. Unread bytes stay in the kernel, so the sender is held back by TCP flow
control and nothing is buffered beyond the usual one buffer per direction. Several bridges may
share one bucket (all data connections of an allocation). Without a bucket nothing changes.

Live counts: ``BridgeMeter`` reads a running bridge's per-direction totals at any moment (e.g. a
metrics scrape from another thread) at no cost to the byte path, which already keeps them.

Limits: a splice bridge holds 6 fds (2 sockets, 2 pipes), so size ``RLIMIT_NOFILE`` for the
number of relays; pipes past ``fs.pipe-user-pages-soft`` cannot grow and those directions copy
instead. With asyncio streams the reset rescue is best effort: a ``StreamReader`` whose
transport fails raises at once and drops what it had buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import struct
import sys
from dataclasses import dataclass, field
from typing import TypeAlias

from delshare.portable import PORTABLE
from delshare.turn.ratelimit import TokenBucket

if sys.platform == "linux":
    import fcntl
    import termios

    SPLICE_SUPPORTED: bool = hasattr(os, "splice") and not PORTABLE
    _SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if SPLICE_SUPPORTED else 0
else:  # pragma: no cover - exercised only off Linux
    SPLICE_SUPPORTED = False

__all__ = [
    "COPY_CHUNK",
    "LINGER_TIMEOUT",
    "PIPE_SIZE",
    "SPLICE_SUPPORTED",
    "STREAM_CHUNK",
    "BridgeMeter",
    "BridgeStats",
    "BridgeTuning",
    "Endpoint",
    "bridge",
]

Endpoint: TypeAlias = socket.socket | tuple[asyncio.StreamReader, asyncio.StreamWriter]
_Stream: TypeAlias = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Limits: TypeAlias = tuple[TokenBucket | None, TokenBucket | None]
"""Bandwidth caps of the a→b and b→a directions (``None``: uncapped)."""
_NO_LIMITS: Limits = (None, None)

PIPE_SIZE = 1 << 20
"""Requested capacity of each splice pipe (the kernel may grant less: ``pipe-user-pages-soft``)."""
COPY_CHUNK = 256 << 10
"""Buffer per direction when sockets are copied through user space."""
STREAM_CHUNK = 256 << 10
"""Read size and write-buffer high-water mark per direction for stream endpoints."""
LINGER_TIMEOUT = 5.0
"""After a reset, the longest the surviving side gets to take in the bytes still owed to it."""
_LINGER_POLL = 0.02  # seconds between SIOCOUTQ checks while lingering (teardown only)
_MIN_PIPE_SIZE = 64 << 10
_MAX_ROUNDS = 16  # fill/drain rounds per callback, so one busy bridge cannot starve the loop
_SINK_CHUNK = 64 << 10


@dataclass(frozen=True)
class BridgeTuning:
    """How one bridge moves bytes; the defaults are the module's constants."""

    splice: bool = SPLICE_SUPPORTED
    """Splice socket pairs through pipes where the platform can (else copy through user space)."""
    linger: float = LINGER_TIMEOUT
    """After a reset, the longest the surviving side gets to take in the bytes still owed to it."""
    min_pipe_size: int = _MIN_PIPE_SIZE
    """A pipe the kernel will not grow this far (``pipe-user-pages-soft``) means copy instead."""


DEFAULT_TUNING = BridgeTuning()


@dataclass
class BridgeStats:
    """What a finished bridge moved; equality compares only the byte counts."""

    a_to_b: int
    """Bytes delivered from a to b, prefix included (handed to b's kernel, or its transport)."""
    b_to_a: int
    """Bytes delivered from b to a, prefix included."""
    reset: bool = field(default=False, compare=False)
    """The bridge ended on a socket error (reset) rather than EOF on both sides."""
    peak_buffered: int = field(default=0, compare=False)
    """Most bytes held between reading and writing in either direction (pipe or user buffer)."""
    path: str = field(default="", compare=False)
    """``"splice"``, ``"copy"`` or ``"stream"``: how the bytes were moved."""


class BridgeMeter:
    """The byte counts of a running bridge, readable at any time and from any thread."""

    def __init__(self) -> None:
        self._runner: _SocketBridge | _StreamBridge | None = None

    def moved(self) -> tuple[int, int]:
        """Bytes delivered so far, (a→b, b→a), prefixes included."""
        runner = self._runner
        if runner is None:
            return 0, 0
        done = runner.snapshot()
        return done.a_to_b, done.b_to_a


async def bridge(
    a: Endpoint,
    b: Endpoint,
    *,
    a_to_b_prefix: bytes = b"",
    b_to_a_prefix: bytes = b"",
    stats: BridgeStats | None = None,
    tuning: BridgeTuning = DEFAULT_TUNING,
    limits: Limits = _NO_LIMITS,
    meter: BridgeMeter | None = None,
) -> BridgeStats:
    """Move bytes both ways between ``a`` and ``b`` until both directions end; close both.

    The prefixes are written before anything read from the other side (e.g. bytes read past a
    STUN frame, RFC 6062 §5.3). The bridge owns the endpoints: it makes sockets non-blocking and
    closes everything when it returns or is cancelled. A reset on either side ends the bridge
    (RFC 6062 §5.5) with ``reset=True`` after the other side got every byte owed to it (bounded
    by ``LINGER_TIMEOUT``). A reset is noticed when the bridge next reads or writes that socket,
    so a bridge stalled on a peer that never reads waits as TCP would: cancel it to end it.
    ``stats``, when given, is filled in as the bridge ends, even when it is cancelled.
    ``tuning`` overrides the splice/copy choice and the linger bound for this bridge.
    ``limits`` caps each direction's rate (token buckets, shareable between bridges);
    ``meter`` shows the counts while the bridge runs.
    """
    _check_endpoint(a)
    _check_endpoint(b)
    if isinstance(a, socket.socket) and isinstance(b, socket.socket) and _loop_watches_fds():
        runner = _SocketBridge(a, b, a_to_b_prefix, b_to_a_prefix, tuning, limits)
        return await _run_reporting(runner, stats, meter)
    streams: list[_Stream] = []
    try:
        for endpoint in (a, b):
            streams.append(await _as_stream(endpoint))
    except BaseException:
        for stream in streams:
            stream[1].transport.abort()
        for endpoint in (a, b)[len(streams) :]:
            _close_endpoint(endpoint)
        raise
    streamer = _StreamBridge(
        streams[0], streams[1], a_to_b_prefix, b_to_a_prefix, tuning.linger, limits
    )
    return await _run_reporting(streamer, stats, meter)


async def _run_reporting(
    runner: _SocketBridge | _StreamBridge, out: BridgeStats | None, meter: BridgeMeter | None
) -> BridgeStats:
    if meter is not None:
        meter._runner = runner
    try:
        return await runner.run()
    finally:
        if out is not None:
            done = runner.snapshot()
            out.a_to_b, out.b_to_a, out.reset = done.a_to_b, done.b_to_a, done.reset
            out.peak_buffered, out.path = done.peak_buffered, done.path


def _loop_watches_fds() -> bool:
    """False on Windows' proactor loop, which has no ``add_reader``: use streams there."""
    proactor = getattr(asyncio, "ProactorEventLoop", None)
    return proactor is None or not isinstance(asyncio.get_running_loop(), proactor)


def _check_endpoint(endpoint: Endpoint) -> None:
    if isinstance(endpoint, ssl.SSLSocket):
        raise TypeError("bridge needs TLS as an asyncio stream pair, not an ssl.SSLSocket")
    if isinstance(endpoint, socket.socket) and endpoint.type != socket.SOCK_STREAM:
        raise TypeError(f"bridge needs a stream socket, got {endpoint.type!r}")


async def _as_stream(endpoint: Endpoint) -> _Stream:
    if isinstance(endpoint, socket.socket):
        return await asyncio.open_connection(sock=endpoint, limit=STREAM_CHUNK)
    return endpoint


def _close_endpoint(endpoint: Endpoint) -> None:
    if isinstance(endpoint, socket.socket):
        endpoint.close()
    else:
        endpoint[1].transport.abort()


def _unsent(fd: int) -> int:
    """Bytes in a TCP socket's send queue not yet acknowledged by the peer (Linux ``SIOCOUTQ``)."""
    if sys.platform != "linux":  # pragma: no cover - no portable equivalent
        return 0
    try:
        queued: int = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, bytes(4)))[0]
    except OSError:
        return 0
    return queued


# --- raw sockets: readiness callbacks -----------------------------------------------------------


class _Direction:
    """One way of a socket bridge: source socket → bounded buffer → destination socket.

    States: flowing → (source EOF, buffer flushed) → destination shut down → finished; or, once
    the destination has failed, a sink that discards the source until EOF or the linger ends.
    """

    path = ""

    def __init__(
        self, owner: _SocketBridge, src: socket.socket, dst: socket.socket, prefix: bytes
    ) -> None:
        self._owner = owner
        self._loop = owner.loop
        self.src = src
        self.dst = dst
        self._src_fd = src.fileno()
        self._dst_fd = dst.fileno()
        self._prefix = memoryview(prefix)
        self.buffered = 0
        self.delivered = 0
        self.peak = 0
        self.sink = False
        self.finished = False
        self._eof = False
        self._reading = False
        self._writing = False
        self._closed = False
        self.limit: TokenBucket | None = None  # set by the bridge before start()
        self._throttle: asyncio.TimerHandle | None = None  # set while the bucket refills

    def start(self) -> None:
        self._pump()

    def close(self) -> None:
        """Stop watching both sockets (the bridge closes them)."""
        self._closed = True
        self._watch(read=False, write=False)
        if self._throttle is not None:
            self._throttle.cancel()
            self._throttle = None

    def become_sink(self) -> None:
        """The destination failed: from now on read the source and discard it."""
        if self.finished or self.sink:
            return
        self.sink = True
        self._prefix = memoryview(b"")
        self._watch(read=False, write=False)
        self._settle()

    def end(self) -> None:
        self.finished = True
        self._watch(read=False, write=False)
        self._owner.direction_ended()

    # The subclass moves bytes: each returns how many moved, 0 when the kernel says EAGAIN.
    def _room(self) -> int:
        raise NotImplementedError

    def _fill(self, room: int) -> int:
        raise NotImplementedError

    def _drain(self) -> int:
        raise NotImplementedError

    def _pump(self) -> None:
        if self._closed or self.finished:
            return
        try:
            if self.sink:
                self._discard()
            else:
                self._move()
            self._settle()
        except OSError:  # writing to, or shutting down, the destination failed
            self._owner.socket_failed(self.dst)
        except Exception as exc:  # a bug: end the bridge with it
            self._owner.crashed(exc)

    def _move(self) -> None:
        for _ in range(_MAX_ROUNDS):
            if self._prefix and not self._send_prefix():
                return
            got = put = 0
            room = self._room()
            if not self._eof and room > 0:
                got = self._read_source(room)
            if self.buffered:
                put = self._drain()
            if not got and not put:
                return

    def _read_source(self, room: int) -> int:
        if self.limit is not None:
            room = self._allowance(self.limit, room)
            if room == 0:
                return 0
        try:
            got = self._fill(room)
        except OSError:  # the source failed: deliver what was read before it, then FIN
            self._eof = True
            self._owner.socket_failed(self.src)
            return 0
        self.peak = max(self.peak, self.buffered)
        if self.limit is not None:
            self.limit.spend(got, self._loop.time())
        return got

    def _allowance(self, limit: TokenBucket, room: int) -> int:
        """How much the cap lets this read take; 0 (and a wake-up timer) when it must wait."""
        if self._throttle is not None:
            return 0
        now = self._loop.time()
        enough = min(room, int(limit.burst) // 4)
        allowed = limit.available(now)
        if allowed >= enough:
            return min(room, allowed)
        self._throttle = self._loop.call_later(limit.delay(enough, now), self._unthrottle)
        return 0

    def _unthrottle(self) -> None:
        self._throttle = None
        self._pump()

    def _send_prefix(self) -> bool:
        with contextlib.suppress(BlockingIOError):
            sent = self.dst.send(self._prefix)
            self._prefix = self._prefix[sent:]
            self.delivered += sent
        return not self._prefix

    def _discard(self) -> None:
        scratch = bytearray(_SINK_CHUNK)
        for _ in range(_MAX_ROUNDS):
            try:
                if self.src.recv_into(scratch) == 0:
                    self._eof = True
                    return
            except BlockingIOError:
                return
            except OSError:
                self._eof = True
                self._owner.socket_failed(self.src)
                return

    def _settle(self) -> None:
        """Watch what the state needs next, or finish (shutting down the destination)."""
        if self.finished:
            return
        pending = bool(self._prefix) or (self.buffered > 0 and not self.sink)
        if self._eof and not pending:
            self._watch(read=False, write=False)
            if not self.sink:
                self.dst.shutdown(socket.SHUT_WR)
            self.end()
        else:
            self._watch(read=not pending and self._throttle is None, write=pending)

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
        self, owner: _SocketBridge, src: socket.socket, dst: socket.socket, prefix: bytes
    ) -> None:
        super().__init__(owner, src, dst, prefix)
        self._view = memoryview(b"")  # allocated on first use: idle bridges stay small
        self._start = 0

    def _room(self) -> int:
        return COPY_CHUNK - self._start - self.buffered

    def _fill(self, room: int) -> int:
        if not self._view:
            self._view = memoryview(bytearray(COPY_CHUNK))
        end = self._start + self.buffered
        try:
            got = self.src.recv_into(self._view[end:])
        except BlockingIOError:
            return 0
        if got == 0:
            self._eof = True
        self.buffered += got
        return got

    def _drain(self) -> int:
        try:
            put = self.dst.send(self._view[self._start : self._start + self.buffered])
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
        self, owner: _SocketBridge, src: socket.socket, dst: socket.socket, prefix: bytes
    ) -> None:
        super().__init__(owner, src, dst, prefix)
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self.capacity = _enlarge_pipe(self._pipe_w, owner.tuning.min_pipe_size)
        except BaseException:
            self._close_pipe()
            raise

    def close(self) -> None:
        was_closed = self._closed
        super().close()
        if not was_closed:
            self._close_pipe()

    def _close_pipe(self) -> None:
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


def _enlarge_pipe(fd: int, minimum: int) -> int:
    """Grow a pipe towards ``PIPE_SIZE``; unprivileged users past their quota get less."""
    size = PIPE_SIZE
    while size >= minimum:
        try:
            return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
        except OSError:
            size //= 2
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def _make_direction(
    owner: _SocketBridge, src: socket.socket, dst: socket.socket, prefix: bytes
) -> _Direction:
    """A splice direction when the pipe quota allows a useful pipe, else a copy direction."""
    if SPLICE_SUPPORTED and owner.tuning.splice:
        direction = _SpliceDirection(owner, src, dst, prefix)
        if direction.capacity >= owner.tuning.min_pipe_size:
            return direction
        direction.close()  # past fs.pipe-user-pages-soft a pipe holds 2 pages: copy instead
    return _CopyDirection(owner, src, dst, prefix)


class _SocketBridge:
    """Two directions over two raw sockets, and the teardown rules between them."""

    def __init__(
        self,
        a: socket.socket,
        b: socket.socket,
        a_to_b_prefix: bytes,
        b_to_a_prefix: bytes,
        tuning: BridgeTuning,
        limits: Limits = _NO_LIMITS,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.tuning = tuning
        self._limits = limits
        self._sockets = (a, b)
        self._prefixes = (a_to_b_prefix, b_to_a_prefix)
        self._ended: asyncio.Future[None] = self.loop.create_future()
        self._directions: list[_Direction] = []
        self._failed: set[socket.socket] = set()
        self._linger_deadline = 0.0
        self._timer: asyncio.Handle | None = None

    async def run(self) -> BridgeStats:
        a, b = self._sockets
        try:
            a.setblocking(False)
            b.setblocking(False)
            self._directions.append(_make_direction(self, a, b, self._prefixes[0]))
            self._directions.append(_make_direction(self, b, a, self._prefixes[1]))
            for direction, limit in zip(self._directions, self._limits, strict=True):
                direction.limit = limit
            for direction in self._directions:
                direction.start()
            await self._ended
        finally:
            self._teardown()
        return self.snapshot()

    def snapshot(self) -> BridgeStats:
        """What has been moved so far."""
        directions = tuple(self._directions)  # may be read from a metrics thread while starting
        if len(directions) < 2:
            return BridgeStats(0, 0, bool(self._failed))
        ab, ba = directions
        path = "splice" if ab.path == ba.path == "splice" else "copy"
        peak = max(ab.peak, ba.peak)
        return BridgeStats(ab.delivered, ba.delivered, bool(self._failed), peak, path)

    def _teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for direction in self._directions:
            direction.close()
        for sock in self._sockets:
            sock.close()

    def direction_ended(self) -> None:
        if all(d.finished for d in self._directions) and not self._ended.done():
            self._ended.set_result(None)

    def crashed(self, exc: Exception) -> None:
        if not self._ended.done():
            self._ended.set_exception(exc)

    def socket_failed(self, sock: socket.socket) -> None:
        """RFC 6062 §5.5 teardown, without dropping what the other side is still owed."""
        first = not self._failed
        self._failed.add(sock)
        for direction in self._directions:
            if direction.dst is sock:
                direction.become_sink()
        if first:
            self._linger_deadline = self.loop.time() + self.tuning.linger
            self._timer = self.loop.call_soon(self._linger)

    def _linger(self) -> None:
        """End sinks once their source's peer has acknowledged all it is owed, or time is up."""
        self._timer = None
        if self._ended.done():
            return
        if self.loop.time() >= self._linger_deadline:
            self._ended.set_result(None)
            return
        for sink in [d for d in self._directions if d.sink and not d.finished]:
            owed = [d for d in self._directions if d.dst is sink.src]
            if all(d.finished or d.sink for d in owed) and _unsent(sink.src.fileno()) == 0:
                sink.end()
        if not self._ended.done():
            self._timer = self.loop.call_later(_LINGER_POLL, self._linger)


# --- asyncio streams: one copy task per direction -------------------------------------------------


class _DestinationFailed(Exception):
    pass


@dataclass
class _StreamDirection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    prefix: bytes
    limit: TokenBucket | None = None
    delivered: int = 0
    peak: int = 0
    sink: bool = False
    finished: bool = False


class _StreamBridge:
    """Two copy tasks over asyncio streams, with the same teardown rules as ``_SocketBridge``."""

    def __init__(
        self,
        a: _Stream,
        b: _Stream,
        a_to_b_prefix: bytes,
        b_to_a_prefix: bytes,
        linger: float,
        limits: Limits = _NO_LIMITS,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._linger_timeout = linger
        self._writers = (a[1], b[1])
        self._directions = (
            _StreamDirection(a[0], b[1], a_to_b_prefix, limits[0]),
            _StreamDirection(b[0], a[1], b_to_a_prefix, limits[1]),
        )
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._failed: set[asyncio.StreamWriter] = set()
        self._failure: asyncio.Future[None] = self._loop.create_future()
        self._linger_deadline = 0.0

    async def run(self) -> BridgeStats:
        for i, d in enumerate(self._directions):
            self._tasks[i] = asyncio.ensure_future(self._run_direction(d))
        clean = False
        try:
            clean = await self._wait()
        finally:
            for task in self._tasks.values():
                task.cancel()
            for writer in self._writers:
                if clean and writer not in self._failed:
                    writer.close()  # graceful: the transport flushes its buffer before closing
                else:
                    writer.transport.abort()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        return self.snapshot()

    def snapshot(self) -> BridgeStats:
        """What has been moved so far."""
        ab, ba = self._directions
        peak = max(ab.peak, ba.peak)
        return BridgeStats(ab.delivered, ba.delivered, bool(self._failed), peak, "stream")

    async def _wait(self) -> bool:
        """Wait for both directions; after a failure, for at most the linger bound."""
        while pending := {t for t in self._tasks.values() if not t.done()}:
            if self._failed:
                timeout = max(0.0, self._linger_deadline - self._loop.time())
                done, _ = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    return False
            else:
                waiters: set[asyncio.Future[None]] = {*pending, self._failure}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for task in self._tasks.values():
                if task.done():
                    task.result()  # re-raise a bug
        return True

    def _source_of(self, d: _StreamDirection) -> asyncio.StreamWriter:
        return self._writers[0] if d.writer is self._writers[1] else self._writers[1]

    def _socket_failed(self, writer: asyncio.StreamWriter) -> None:
        """RFC 6062 §5.5 teardown: the direction into ``writer`` turns into a sink."""
        if writer in self._failed:
            return
        if not self._failed:
            self._linger_deadline = self._loop.time() + self._linger_timeout
            self._failure.set_result(None)
        self._failed.add(writer)
        for i, d in enumerate(self._directions):
            if d.writer is not writer or d.finished or d.sink:
                continue
            d.sink = True
            if self._tasks[i] is not asyncio.current_task():
                self._tasks[i].cancel()
                self._tasks[i] = asyncio.ensure_future(self._discard(d))

    async def _run_direction(self, d: _StreamDirection) -> None:
        try:
            await self._copy(d)
        except _DestinationFailed:
            self._socket_failed(d.writer)
            await self._discard(d)

    async def _copy(self, d: _StreamDirection) -> None:
        """Copy until EOF, then half-close (or close, where the transport cannot, e.g. TLS)."""
        try:
            d.writer.transport.set_write_buffer_limits(high=STREAM_CHUNK)
            await self._write(d, d.prefix)
            while True:
                try:
                    data = await self._read(d)
                except OSError:  # the source failed: deliver what came before, then FIN
                    self._socket_failed(self._source_of(d))
                    data = b""
                if not data:
                    break
                await self._write(d, data)
            if d.writer.can_write_eof():
                d.writer.write_eof()
            else:  # graceful close flushes, then also ends the direction reading this transport
                d.writer.close()
            d.finished = True
        except OSError as exc:
            raise _DestinationFailed from exc

    async def _read(self, d: _StreamDirection) -> bytes:
        """Up to ``STREAM_CHUNK`` bytes, or what the direction's cap allows (waiting for it)."""
        if d.limit is None:
            return await d.reader.read(STREAM_CHUNK)
        enough = min(STREAM_CHUNK, int(d.limit.burst) // 4)
        wait = d.limit.delay(enough, self._loop.time())
        if wait > 0:
            await asyncio.sleep(wait)
        # Another bridge sharing the bucket may have spent it meanwhile: take ``enough`` anyway;
        # the bucket goes into debt and the next wait is longer, so the rate still holds.
        allowed = max(enough, d.limit.available(self._loop.time()))
        data = await d.reader.read(min(STREAM_CHUNK, allowed))
        d.limit.spend(len(data), self._loop.time())
        return data

    @staticmethod
    async def _write(d: _StreamDirection, data: bytes) -> None:
        if not data:
            return
        d.writer.write(data)
        d.delivered += len(data)
        d.peak = max(d.peak, d.writer.transport.get_write_buffer_size())
        await d.writer.drain()

    async def _discard(self, d: _StreamDirection) -> None:
        """Read and drop the source until it ends or has been sent all it is owed."""
        source = self._source_of(d)
        owed = next(o for o in self._directions if o.writer is source)
        while not (owed.sink or self._flushed(owed)):
            try:
                data = await asyncio.wait_for(d.reader.read(STREAM_CHUNK), _LINGER_POLL)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return

    @staticmethod
    def _flushed(owed: _StreamDirection) -> bool:
        """Has the direction finished and the peer acknowledged every byte of it?"""
        if not owed.finished or owed.writer.transport.get_write_buffer_size():
            return False
        sock = owed.writer.get_extra_info("socket")
        return sock is None or _unsent(sock.fileno()) == 0
