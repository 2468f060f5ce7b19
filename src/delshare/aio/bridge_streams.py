"""The stream engine of ``delshare.aio.pipe.bridge``: one copy task per direction.

``asyncio`` stream pairs (TLS, or anything that is not a raw socket) use one copy task per
direction with ``STREAM_CHUNK`` reads and ``drain()`` for back-pressure, under the same closing
rules as the socket engine (see ``delshare.aio.pipe``). The reset rescue is best effort: a
``StreamReader`` whose transport fails raises at once and drops what it had buffered.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from delshare.aio.bridge_common import (
    LINGER_POLL,
    NO_LIMITS,
    STREAM_CHUNK,
    BridgeStats,
    Limits,
    Stream,
    unsent,
)
from delshare.turn.ratelimit import TokenBucket

__all__ = ["StreamBridge"]


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


class StreamBridge:
    """Two copy tasks over asyncio streams, with the same teardown rules as ``SocketBridge``."""

    def __init__(
        self,
        a: Stream,
        b: Stream,
        a_to_b_prefix: bytes,
        b_to_a_prefix: bytes,
        linger: float,
        limits: Limits = NO_LIMITS,
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
                data = await asyncio.wait_for(d.reader.read(STREAM_CHUNK), LINGER_POLL)
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
        return sock is None or unsent(sock.fileno()) == 0
