"""Send a manifest's files over a RecordChannel (protocol in :mod:`delshare.transfer.protocol`).

Speed: one worker thread reads the source into a small ring of preallocated units and updates
the whole-file BLAKE3 digest piece by piece, each piece right after reading it while it is still in
that core's cache (both release the GIL); meanwhile the event loop encrypts the previous unit
and writes it to the socket, so reading, hashing and sending overlap on two cores. (Hashing in a
separate thread made every byte cross cores once more: measurably slower.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
from collections import deque
from dataclasses import dataclass, field
from typing import IO

from delshare.link.records import MAX_PAYLOAD, LinkClosedError, RecordChannel
from delshare.transfer.digest import Hasher, hash_file, new_hasher
from delshare.transfer.diskio import aligned_buffer
from delshare.transfer.errors import (
    PeerProtocolError,
    PeerTimeoutError,
    RefusedByPeerError,
    SourceChangedError,
    StreamInterruptedError,
    TransferInterruptedError,
    stalled,
)
from delshare.transfer.events import FileSent, FileStarted, SendEvent, SendEventCallback
from delshare.transfer.manifest import BuiltManifest, Entry, display_name
from delshare.transfer.progress import ProgressCallback, ProgressThrottle
from delshare.transfer.protocol import (
    DEFAULT_CHUNK,
    MAX_SKIPPED_NAMES,
    STALL_TIMEOUT,
    Accept,
    Done,
    ErrorMessage,
    FileBegin,
    FileEnd,
    Hashes,
    HashRequest,
    Message,
    Offer,
    Reject,
    ResumeOffer,
    Timeouts,
    Wait,
    busy_error,
    busy_limit,
    keepalive,
    keepalive_interval,
    peer_timeout,
    recv_message,
    send_last_word,
    send_message,
)
from delshare.transfer.resume import verify_prefix
from delshare.transfer.states import Conversation, Side

__all__ = ["SendStats", "send_files"]

_RING = 3
_UNIT = 4 * MAX_PAYLOAD
_PIECE = 1 << 20  # read, then hash while cached


@dataclass(frozen=True, slots=True)
class SendStats:
    """One run: file bytes sent in DATA records, files sent/skipped, resume offset by index."""

    bytes_sent: int
    files_sent: int
    files_skipped: int
    resumed_at: dict[int, int] = field(default_factory=dict)
    skipped: tuple[int, ...] = ()
    """Manifest indexes the receiver already had with the same content."""


async def send_files(
    channel: RecordChannel,
    manifest: BuiltManifest,
    progress_cb: ProgressCallback | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
    stall_timeout: float = STALL_TIMEOUT,
    wait_timeout: float | None = None,
    on_event: SendEventCallback | None = None,
) -> SendStats:
    """Offer ``manifest``, then send what the receiver accepted; return once it confirmed all.

    Raises RefusedByPeerError if the peer rejects or aborts, SourceChangedError if a file changed
    since the manifest was built, TransferInterruptedError if the link breaks or the receiver
    takes nothing for ``stall_timeout`` seconds while data waits (resumable), PeerTimeoutError
    if it says nothing for ``wait_timeout`` seconds (default :func:`peer_timeout`) when an answer
    is due (to the offer, or ``done`` after the last byte). ``on_event`` gets a
    :class:`~delshare.transfer.events.FileStarted` and a :class:`~delshare.transfer.events.FileSent`
    for every file sent (not for those the receiver skips).
    """
    timeout = peer_timeout() if wait_timeout is None else wait_timeout
    talk = Conversation(Side.SENDER)
    try:
        with concurrent.futures.ThreadPoolExecutor(1, "delshare-read") as reader:
            skipped = manifest.skipped
            offer = Offer(manifest.manifest, chunk, skipped[:MAX_SKIPPED_NAMES], len(skipped))
            await send_message(channel, offer, timeout, talk=talk)
            accept = await _negotiate(channel, talk, manifest, reader, timeout)
            session = _SendSession(
                channel,
                talk,
                manifest,
                accept,
                chunk,
                reader,
                progress_cb,
                Timeouts(stall_timeout, timeout),
                on_event or _ignore,
            )
            return await session.run()
    except PeerProtocolError as exc:  # e.g. a bad resume chunk list: tell the receiver why
        await _send_error(channel, talk, f"protocol error: {exc}")
        raise
    except LinkClosedError as exc:
        if manifest.manifest.streaming:
            raise StreamInterruptedError(f"link lost while sending a stream: {exc}") from exc
        raise TransferInterruptedError(f"link lost while sending: {exc}") from exc
    except TransferInterruptedError as exc:
        if manifest.manifest.streaming and not isinstance(exc, StreamInterruptedError):
            raise StreamInterruptedError(str(exc)) from exc
        raise


async def _negotiate(
    channel: RecordChannel,
    talk: Conversation,
    manifest: BuiltManifest,
    reader: concurrent.futures.Executor,
    timeout: float,
) -> Accept:
    """Wait for the accept, answering one ``hash-request`` (hashing with keepalives) first."""
    waiting_for = "the receiver's answer to the offer"
    reply = await recv_message(channel, timeout, waiting_for, talk=talk)
    if isinstance(reply, HashRequest):
        indexes = _check_indexes(reply.indexes, manifest)
        loop = asyncio.get_running_loop()
        async with keepalive(channel, keepalive_interval(timeout)):
            try:
                digests = await loop.run_in_executor(reader, _hash_sources, manifest, indexes)
            except (SourceChangedError, OSError) as exc:
                await _send_error(channel, talk, str(exc))
                if isinstance(exc, OSError):
                    raise SourceChangedError(f"cannot read source: {exc}") from exc
                raise
        hashes = Hashes(tuple(zip(indexes, digests, strict=True)))
        await send_message(channel, hashes, timeout, talk=talk)
        reply = await recv_message(channel, timeout, waiting_for, talk=talk)
    return _expect_accept(reply, manifest)


def _check_indexes(indexes: tuple[int, ...], manifest: BuiltManifest) -> tuple[int, ...]:
    entries = manifest.manifest.entries
    if len(set(indexes)) != len(indexes):
        raise PeerProtocolError("hash request names a file twice")
    for index in indexes:
        if index >= len(entries) or entries[index].kind != "file" or entries[index].stream:
            raise PeerProtocolError(f"hash request names unknown file index {index}")
    return indexes


def _hash_sources(manifest: BuiltManifest, indexes: tuple[int, ...]) -> list[bytes]:
    """BLAKE3 of the requested sources (reader thread), each checked unchanged."""
    digests = []
    for index in indexes:
        entry, source = manifest.manifest.entries[index], manifest.sources[index]
        digest = hash_file(source)
        st = os.stat(source)
        if st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
            raise SourceChangedError(f"{display_name(entry.path)} changed since it was offered")
        digests.append(digest)
    return digests


async def _send_error(channel: RecordChannel, talk: Conversation, reason: str) -> None:
    """Abort with ``reason``, unless the conversation has ended already (nothing to abort)."""
    await send_last_word(channel, ErrorMessage(reason), talk)


def _expect_accept(message: Message, manifest: BuiltManifest) -> Accept:
    if isinstance(message, Reject | ErrorMessage):
        raise RefusedByPeerError(message.reason)
    if not isinstance(message, Accept):
        raise PeerProtocolError(f"expected accept, got {type(message).__name__}")
    entries = manifest.manifest.entries
    for index in [*message.skip, *(r.index for r in message.resume)]:
        if index >= len(entries) or entries[index].kind != "file" or entries[index].stream:
            raise PeerProtocolError(f"accept names unknown file index {index}")
    return message


class _SendSession:
    def __init__(
        self,
        channel: RecordChannel,
        talk: Conversation,
        manifest: BuiltManifest,
        accept: Accept,
        chunk: int,
        reader: concurrent.futures.Executor,
        progress_cb: ProgressCallback | None,
        timeouts: Timeouts,
        on_event: SendEventCallback,
    ) -> None:
        self._channel = channel
        self._on_event = on_event
        self._talk = talk
        self._built = manifest
        self._skip = set(accept.skip)
        self._verify = accept.verify
        self._resume = {r.index: r for r in accept.resume}
        self._chunk = chunk
        self._reader = reader
        # units no bigger than the largest file (a 1 KiB send allocates next to nothing)
        largest = max((e.size for e in manifest.manifest.entries), default=0)
        if manifest.manifest.streaming:
            largest = _UNIT
        unit = max(min(_UNIT, largest), 1)
        self._unit = unit
        self._buffers = [aligned_buffer(unit) for _ in range(_RING)]
        self._progress = ProgressThrottle(progress_cb)
        self._total_done = 0
        self._bytes_sent = 0
        self._resumed_at: dict[int, int] = {}
        self._stall_timeout = timeouts.stall
        self.wait_timeout = timeouts.wait
        self._peer: asyncio.Task[Message] | None = None
        self._heard = 0.0

    async def _listen(self) -> Message:
        """The receiver's next message but ``wait`` keepalives, noting when it last spoke."""
        loop = asyncio.get_running_loop()
        while True:
            message = await recv_message(self._channel, keep_waits=True, talk=self._talk)
            self._heard = loop.time()
            if not isinstance(message, Wait):
                return message

    async def run(self) -> SendStats:
        self._peer = asyncio.create_task(self._listen())
        try:
            sent = 0
            for index, entry in enumerate(self._built.manifest.entries):
                if entry.kind != "file":
                    continue
                if index in self._skip:
                    self._total_done += entry.size
                    continue
                if entry.stream:
                    await self._send_stream(index)
                else:
                    await self._send_file(index, entry)
                sent += 1
            await send_message(self._channel, Done(), self.wait_timeout, talk=self._talk)
            await self._expect_done()
        except (SourceChangedError, OSError) as exc:
            await self._abort(str(exc))
            if isinstance(exc, OSError):
                raise SourceChangedError(f"cannot read source: {exc}") from exc
            raise
        finally:
            _discard(self._peer)
        skipped = tuple(sorted(self._skip))
        return SendStats(self._bytes_sent, sent, len(self._skip), self._resumed_at, skipped)

    async def _expect_done(self) -> None:
        """The receiver's ``done``; it must say something every ``wait_timeout`` seconds, and
        its ``wait`` keepalives hold the sender for :func:`busy_limit` at most."""
        assert self._peer is not None
        loop = asyncio.get_running_loop()
        self._heard = started = loop.time()
        limit = busy_limit(self.wait_timeout)
        while not self._peer.done():
            now = loop.time()
            if now - started > limit:
                raise busy_error(limit, "the receiver's confirmation")
            quiet_until = self._heard + self.wait_timeout
            if quiet_until <= now:
                raise PeerTimeoutError(
                    f"the receiver confirmed nothing for {self.wait_timeout:g} s after the last "
                    "byte (it may have quit or lost its link)"
                )
            await asyncio.wait({self._peer}, timeout=min(quiet_until, started + limit) - now)
        reply = self._peer.result()
        if isinstance(reply, ErrorMessage):
            raise RefusedByPeerError(reply.reason)
        if not isinstance(reply, Done):
            raise PeerProtocolError(f"expected done, got {type(reply).__name__}")

    def _check_peer(self) -> None:
        """Surface an early error message (or broken link) from the receiver."""
        if self._peer is not None and self._peer.done():
            reply = self._peer.result()
            if isinstance(reply, ErrorMessage):
                raise RefusedByPeerError(reply.reason)
            raise PeerProtocolError(f"unexpected {type(reply).__name__} during transfer")

    async def _abort(self, reason: str) -> None:
        await _send_error(self._channel, self._talk, reason)

    async def _send_file(self, index: int, entry: Entry) -> None:
        source = self._built.sources[index]
        with open(source, "rb", buffering=0) as f:  # noqa: ASYNC230 (open is cheap)
            _check_unchanged(f, entry, source.name)
            whole = new_hasher()
            offset = await self._resume_offset(f, index, entry, whole)
            begin = FileBegin(index, offset)
            await send_message(self._channel, begin, self.wait_timeout, talk=self._talk)
            self._on_event(FileStarted(index, offset))
            self._total_done += offset
            await self._pump(f, index, entry, offset, whole)
            _check_unchanged(f, entry, source.name)
        digest = whole.digest() if self._verify else b""
        end = FileEnd(index, digest)
        await send_message(self._channel, end, self.wait_timeout, talk=self._talk)
        self._on_event(FileSent(index, digest))
        self._progress.update(index, entry.size, self._total_done, final=True)

    async def _send_stream(self, index: int) -> None:
        """Send what the stream gives until its end, then ``file-end`` with the digest of it all.

        Each read takes what the source has (up to a unit), so bytes leave as they come.
        """
        source = self._built.stream
        if source is None:
            raise SourceChangedError("no stream to read from")
        whole = new_hasher() if self._verify else None  # as _pump: no digest asked, none made
        await send_message(self._channel, FileBegin(index, 0), self.wait_timeout, talk=self._talk)
        self._on_event(FileStarted(index, 0))
        offset, buf = 0, self._buffers[0]
        loop = asyncio.get_running_loop()
        read = functools.partial(loop.run_in_executor, self._reader, _read_some, source, buf, whole)
        # a slow source (a command still working) keeps the receiver waiting, not giving up
        async with keepalive(self._channel, keepalive_interval(self._stall_timeout)):
            while got := await read():
                for start in range(0, got, MAX_PAYLOAD):
                    record = buf[start : min(got, start + MAX_PAYLOAD)]
                    offset = await self._send_record(index, record, offset)
        end = FileEnd(index, b"" if whole is None else whole.digest())
        await send_message(self._channel, end, self.wait_timeout, talk=self._talk)
        self._on_event(FileSent(index, end.digest))
        self._progress.update(index, offset, self._total_done, final=True)

    async def _resume_offset(self, f: IO[bytes], index: int, entry: Entry, whole: Hasher) -> int:
        offer: ResumeOffer | None = self._resume.get(index)
        if offer is None:
            return 0
        loop = asyncio.get_running_loop()
        async with keepalive(self._channel, keepalive_interval(self.wait_timeout)):
            offset = await loop.run_in_executor(
                self._reader,
                verify_prefix,
                f,
                entry.size,
                offer.offset,
                offer.chunks,
                self._chunk,
                whole,
            )
        self._resumed_at[index] = offset
        return offset

    async def _pump(
        self, f: IO[bytes], index: int, entry: Entry, offset: int, whole: Hasher
    ) -> None:
        """Read and hash in the worker, encrypt and send here; ``_RING`` units cycle.

        A unit is ``_UNIT`` bytes (several records), so threads hand off rarely; a unit is
        reused once sent (the channel copies what it sends while encrypting).
        """
        hasher = whole if self._verify else None
        remaining = entry.size - offset
        reads: deque[tuple[concurrent.futures.Future[int], memoryview, int]] = deque()
        free = list(self._buffers)
        try:
            while remaining or reads:
                while free and remaining:
                    want = min(self._unit, remaining)
                    buf = free.pop()
                    job = self._reader.submit(_read_unit, f, buf[:want], hasher)
                    reads.append((job, buf, want))
                    remaining -= want
                future, buf, want = reads.popleft()
                got = await asyncio.wrap_future(future)
                if got != want:
                    raise SourceChangedError(f"{display_name(entry.path)} shrank while sending")
                unit = buf[:got]
                for start in range(0, got, MAX_PAYLOAD):
                    record = unit[start : start + MAX_PAYLOAD]
                    offset = await self._send_record(index, record, offset)
                free.append(buf)
        finally:
            concurrent.futures.wait([r[0] for r in reads])

    async def _send_record(self, index: int, data: memoryview, offset: int) -> int:
        self._check_peer()
        self._channel.write(data)
        self._bytes_sent += len(data)
        self._total_done += len(data)
        try:
            async with asyncio.timeout(self._stall_timeout):
                await self._channel.drain()
        except TimeoutError:
            raise stalled(self._stall_timeout) from None
        self._progress.update(index, offset + len(data), self._total_done)
        return offset + len(data)


def _ignore(event: SendEvent) -> None:
    pass


def _read_unit(f: IO[bytes], buf: memoryview, whole: Hasher | None) -> int:
    """Fill ``buf`` from the file, hashing each piece while cached; runs in the reader thread."""
    got = 0
    for start in range(0, len(buf), _PIECE):
        piece = buf[start : start + _PIECE]
        n = _read_full(f, piece)
        if whole is not None:
            whole.update(piece[:n])
        got += n
        if n < len(piece):
            break
    return got


def _read_some(source: IO[bytes], buf: memoryview, whole: Hasher | None) -> int:
    """One read of what ``source`` has (0 at its end), hashed unless ``whole`` is None; runs in
    the reader thread."""
    read1 = getattr(source, "readinto1", None)
    n: int = (read1 or source.readinto)(buf)  # type: ignore[attr-defined]
    if whole is not None:
        whole.update(buf[:n])
    return n


def _read_full(f: IO[bytes], buf: memoryview) -> int:
    """Fill ``buf`` from the file (short only at EOF)."""
    got = 0
    while got < len(buf):
        n = f.readinto(buf[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _discard(task: asyncio.Task[Message]) -> None:
    """Cancel the peer reader, or mark its outcome as seen."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


def _check_unchanged(f: IO[bytes], entry: Entry, name: str) -> None:
    st = os.fstat(f.fileno())
    if st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
        raise SourceChangedError(f"{display_name(name)} changed since the transfer was prepared")
