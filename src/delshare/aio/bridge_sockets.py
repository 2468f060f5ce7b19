"""The socket engine of ``delshare.aio.pipe.bridge``: readiness callbacks, splice or copy.

Plain sockets are driven by event-loop readiness callbacks (``add_reader``/``add_writer``), with no
task or thread per connection. Each direction owns one bounded buffer: on Linux a pipe enlarged to
``PIPE_SIZE`` that ``os.splice`` fills from the source socket and empties into the destination
(the bytes never enter user space); elsewhere a ``COPY_CHUNK`` ``bytearray`` for
``recv_into``/``send``. The closing rules, reset rescue and bandwidth caps are described in
``delshare.aio.pipe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys

from delshare.aio.bridge_common import (
    COPY_CHUNK,
    LINGER_POLL,
    NO_LIMITS,
    PIPE_SIZE,
    SPLICE_SUPPORTED,
    BridgeStats,
    BridgeTuning,
    Limits,
    unsent,
)
from delshare.turn.ratelimit import TokenBucket

if sys.platform == "linux":
    import fcntl

    _SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if SPLICE_SUPPORTED else 0

__all__ = ["SocketBridge"]

_MAX_ROUNDS = 16  # fill/drain rounds per callback, so one busy bridge cannot starve the loop
_SINK_CHUNK = 64 << 10


class _Direction:
    """One way of a socket bridge: source socket → bounded buffer → destination socket.

    States: flowing → (source EOF, buffer flushed) → destination shut down → finished; or, once
    the destination has failed, a sink that discards the source until EOF or the linger ends.
    """

    path = ""

    def __init__(
        self, owner: SocketBridge, src: socket.socket, dst: socket.socket, prefix: bytes
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

    # The subclass moves bytes. _fill: one read of at most ``room`` bytes into the buffer, how
    # many (0: end of stream; EAGAIN raises, _read_source does the bookkeeping for both).
    # _drain: how many went out of the buffer, 0 when the kernel says EAGAIN.
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
        except BlockingIOError:
            got = 0
        except OSError:  # the source failed: deliver what was read before it, then FIN
            self._eof = True
            self._owner.socket_failed(self.src)
            return 0
        else:
            if got == 0:
                self._eof = True
            self.buffered += got
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
    _view = memoryview(b"")  # the instance's own buffer is allocated on first use: idle bridges
    _start = 0  # stay small; both become instance attributes when first assigned

    def _room(self) -> int:
        return COPY_CHUNK - self._start - self.buffered

    def _fill(self, room: int) -> int:
        if not self._view:
            self._view = memoryview(bytearray(COPY_CHUNK))
        return self.src.recv_into(self._view[self._start + self.buffered :])

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
        self, owner: SocketBridge, src: socket.socket, dst: socket.socket, prefix: bytes
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
        # BlockingIOError: source empty, or pipe slots full of partial pages
        return os.splice(self._src_fd, self._pipe_w, room, flags=_SPLICE_FLAGS)

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
    owner: SocketBridge, src: socket.socket, dst: socket.socket, prefix: bytes
) -> _Direction:
    """A splice direction when the pipe quota allows a useful pipe, else a copy direction."""
    if SPLICE_SUPPORTED and owner.tuning.splice:
        direction = _SpliceDirection(owner, src, dst, prefix)
        if direction.capacity >= owner.tuning.min_pipe_size:
            return direction
        direction.close()  # past fs.pipe-user-pages-soft a pipe holds 2 pages: copy instead
    return _CopyDirection(owner, src, dst, prefix)


class SocketBridge:
    """Two directions over two raw sockets, and the teardown rules between them."""

    def __init__(
        self,
        a: socket.socket,
        b: socket.socket,
        a_to_b_prefix: bytes,
        b_to_a_prefix: bytes,
        tuning: BridgeTuning,
        limits: Limits = NO_LIMITS,
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
            if all(d.finished or d.sink for d in owed) and unsent(sink.src.fileno()) == 0:
                sink.end()
        if not self._ended.done():
            self._timer = self.loop.call_later(LINGER_POLL, self._linger)
