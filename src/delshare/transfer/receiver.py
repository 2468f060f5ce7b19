"""Receive an offer into an output folder, safely and resumably: the session.

Theory of operation: :func:`receive_files` reads the offer, has it planned
(:mod:`delshare.transfer.receive_plan`: destinations, conflicts, resumable ``.part`` prefixes,
free space; a hostile or impossible offer is rejected with nothing on disk), accepts it, then
receives the files in the offer's order: each arrives as DATA records into its ``.part``, hashed
as it arrives, is checked against the sender's BLAKE3 digest and put in place
(:mod:`delshare.transfer.install`: fsync, mode, mtime, rename without clobbering). A broken
link leaves the .part for resume; a .part whose sidecar names another source version (size or
mtime changed) starts over from 0.

Speed: records are decrypted on the event loop into page-aligned units of several records; one
worker thread writes each unit (whole blocks with O_DIRECT: the disk reads the buffer, no CPU
copy; see :mod:`delshare.transfer.diskio`) while another hashes it (BLAKE3, GIL released), so
the disk, the hash and the network overlap. (With page-cache writes the copy already pulled every
byte through the CPU and hashing right after it in the same thread was cheaper; with direct I/O
the writer mostly waits for the disk, and hashing in its thread left the disk idle meanwhile.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from delshare.link.records import MAX_PAYLOAD, LinkClosedError, RecordChannel, RecordKind
from delshare.transfer.digest import Hasher, new_hasher
from delshare.transfer.diskio import PartWriter, aligned_buffer, open_direct
from delshare.transfer.errors import (
    DeclinedError,
    IntegrityError,
    LocalIOError,
    ManifestError,
    OutputDirError,
    PeerProtocolError,
    RefusedByPeerError,
    StreamInterruptedError,
    TransferInterruptedError,
    stalled,
)
from delshare.transfer.events import (
    FileReceived,
    FileStarted,
    OfferArrived,
    ReceiveEvent,
    ReceiveEventCallback,
)
from delshare.transfer.install import (
    close_part,
    discard_part,
    finish_dirs,
    install_file,
    make_dirs,
    open_part,
)
from delshare.transfer.manifest import MAX_FILE_SIZE, Manifest, display_name
from delshare.transfer.progress import ProgressCallback, ProgressThrottle
from delshare.transfer.protocol import (
    STALL_TIMEOUT,
    Done,
    ErrorMessage,
    FileBegin,
    FileEnd,
    MessageAssembler,
    Offer,
    Timeouts,
    Wait,
    keepalive,
    keepalive_interval,
    peer_timeout,
    recv_message,
    send_last_word,
    send_message,
)
from delshare.transfer.receive_plan import (
    AskOverwrite,
    Policy,
    Target,
    accept_for,
    plan_or_reject,
    reject_offer,
)
from delshare.transfer.resume import remove_quietly
from delshare.transfer.states import Conversation, Side

__all__ = ["ReceiveStats", "ReceivedFile", "receive_files"]

_RING = 4
_UNIT = 4 * MAX_PAYLOAD
Confirm = Callable[[Manifest], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """One file of the offer: where it went, where this run resumed it, whether it was skipped."""

    path: str
    destination: Path
    resumed_at: int
    skipped: bool


@dataclass(frozen=True, slots=True)
class ReceiveStats:
    """What one run received: file bytes in DATA records and every file's outcome."""

    bytes_received: int
    files: tuple[ReceivedFile, ...]

    @property
    def resumed_at(self) -> dict[str, int]:
        """Manifest path -> offset this run started writing at (0 = from scratch)."""
        return {f.path: f.resumed_at for f in self.files if not f.skipped}


async def receive_files(
    channel: RecordChannel,
    output_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    rename: bool = False,
    confirm: Confirm | None = None,
    progress_cb: ProgressCallback | None = None,
    verify: bool = True,
    ask_overwrite: AskOverwrite | None = None,
    stall_timeout: float = STALL_TIMEOUT,
    wait_timeout: float | None = None,
    on_event: ReceiveEventCallback | None = None,
) -> ReceiveStats:
    """Receive one offer into ``output_dir``; return once every file is verified and in place.

    Raises ManifestError/UnsafePathError (hostile offer), DestinationExistsError,
    InsufficientSpaceError, DeclinedError (``confirm`` said no) — all after rejecting the offer and
    writing nothing — and IntegrityError, RefusedByPeerError, TransferInterruptedError later on.
    ``verify=False`` waives the whole-file digest on both sides (see the protocol module).
    Without ``overwrite`` or ``rename``, ``ask_overwrite`` (if given) is asked once with the
    printable names of the offered files that already exist; yes replaces them as ``overwrite``
    would, no raises DestinationExistsError. A sender that moves no data for ``stall_timeout``
    seconds mid-file is given up on with TransferInterruptedError (the .part stays, resumable);
    one that sends no message for ``wait_timeout`` seconds (default :func:`peer_timeout`) when
    one is due, with PeerTimeoutError. A destination file of the offered size is skipped only if
    its content hash equals the sender's; otherwise it is a conflict like any existing file.
    ``on_event`` gets an :class:`~delshare.transfer.events.OfferArrived` before the offer is
    planned (before ``ask_overwrite`` and ``confirm``), then a
    :class:`~delshare.transfer.events.FileStarted` and a
    :class:`~delshare.transfer.events.FileReceived` for every file received.
    """
    out = Path(output_dir)
    streaming = False
    if not os.path.isdir(out):  # noqa: ASYNC240 (one stat, before any network wait)
        raise OutputDirError(f"output folder {display_name(str(out))!r} does not exist")
    try:
        with (
            concurrent.futures.ThreadPoolExecutor(1, "delshare-write") as pool,
            concurrent.futures.ThreadPoolExecutor(1, "delshare-hash") as hash_pool,
        ):
            timeout = peer_timeout() if wait_timeout is None else wait_timeout
            talk = Conversation(Side.RECEIVER)
            offer = await _receive_offer(channel, talk, timeout)
            streaming = offer.manifest.streaming
            report = on_event or _ignore
            report(OfferArrived(offer.manifest, offer.skipped, offer.skipped_count))
            async with keepalive(channel, keepalive_interval(timeout)):
                policy = Policy(overwrite, rename, ask_overwrite)
                targets, overwrite = await plan_or_reject(
                    channel, talk, pool, out, offer, policy, timeout
                )
                if confirm is not None and not await confirm(offer.manifest):
                    await reject_offer(channel, talk, "declined by the receiver")
                    raise DeclinedError("offer declined")
                await asyncio.get_running_loop().run_in_executor(pool, make_dirs, targets)
                await send_message(channel, accept_for(targets, verify), timeout, talk=talk)
                progress = ProgressThrottle(progress_cb)
                timeouts = Timeouts(stall_timeout, timeout)
                session = _ReceiveSession(
                    channel,
                    talk,
                    pool,
                    hash_pool,
                    targets,
                    progress,
                    overwrite,
                    verify,
                    timeouts,
                    report,
                )
                return await session.run()
    except LinkClosedError as exc:
        raise _interrupted(f"link lost while receiving: {exc}", streaming) from exc
    except TransferInterruptedError as exc:
        if streaming and not isinstance(exc, StreamInterruptedError):
            raise StreamInterruptedError(str(exc)) from exc
        raise


def _interrupted(reason: str, streaming: bool) -> TransferInterruptedError:
    if streaming:
        return StreamInterruptedError(reason.replace("receiving", "receiving a stream"))
    return TransferInterruptedError(reason)


async def _receive_offer(channel: RecordChannel, talk: Conversation, timeout: float) -> Offer:
    try:
        message = await recv_message(channel, timeout, "the sender's offer", talk=talk)
    except (ManifestError, PeerProtocolError) as exc:  # malformed, too big, too many entries
        await reject_offer(channel, talk, f"invalid offer: {exc}")
        raise
    if isinstance(message, ErrorMessage):
        raise RefusedByPeerError(message.reason)
    if not isinstance(message, Offer):
        raise PeerProtocolError(f"expected offer, got {type(message).__name__}")
    return message


class _ReceiveSession:
    def __init__(
        self,
        channel: RecordChannel,
        talk: Conversation,
        pool: concurrent.futures.Executor,
        hash_pool: concurrent.futures.Executor,
        targets: list[Target],
        progress: ProgressThrottle,
        overwrite: bool,
        verify: bool,
        timeouts: Timeouts,
        on_event: ReceiveEventCallback,
    ) -> None:
        self._channel = channel
        self._talk = talk
        self.timeouts = timeouts
        self._pool = pool
        self._hash_pool = hash_pool
        self._targets = targets
        self._overwrite = overwrite
        self._progress = progress
        self._bytes = 0
        self._total_done = sum(t.entry.size for t in targets if t.skip)
        self._resumed: dict[int, int] = {}
        self._verify = verify
        self._buffers = [aligned_buffer(_UNIT) for _ in range(_RING)]  # O_DIRECT-ready
        self._on_event = on_event

    async def run(self) -> ReceiveStats:
        try:
            await self._receive_all()
            await asyncio.get_running_loop().run_in_executor(self._pool, finish_dirs, self._targets)
            await send_message(self._channel, Done(), self.timeouts.wait, talk=self._talk)
        except (IntegrityError, PeerProtocolError, LocalIOError) as exc:
            await send_last_word(self._channel, ErrorMessage(str(exc)), self._talk)
            raise
        except OSError as exc:
            reason = ErrorMessage("receiver could not write a file")
            await send_last_word(self._channel, reason, self._talk)
            raise LocalIOError(f"cannot write: {exc}") from exc
        return self._stats()

    def _stats(self) -> ReceiveStats:
        files = tuple(
            ReceivedFile(t.entry.path, t.final, self._resumed.get(t.index, 0), t.skip)
            for t in self._targets
            if t.entry.kind == "file"
        )
        return ReceiveStats(self._bytes, files)

    async def _receive_all(self) -> None:
        order = [t for t in self._targets if t.entry.kind == "file" and not t.skip]
        position = 0
        while True:
            message = await recv_message(
                self._channel, self.timeouts.wait, "the next file", talk=self._talk
            )
            if isinstance(message, FileBegin) and position < len(order):
                if message.index != order[position].index:
                    raise PeerProtocolError(f"file {message.index} out of order")
                await self._receive_file(order[position], message.offset)
                position += 1
            elif isinstance(message, Done) and position == len(order):
                return
            elif isinstance(message, ErrorMessage):
                raise RefusedByPeerError(message.reason)
            else:
                raise PeerProtocolError(f"unexpected {type(message).__name__}")

    async def _receive_file(self, target: Target, offset: int) -> None:
        if target.entry.stream and offset:
            raise PeerProtocolError(f"{display_name(target.entry.path)}: a stream starts at 0")
        hasher = _hasher_for(target, offset)
        self._on_event(FileStarted(target.index, offset))
        self._resumed[target.index] = offset
        self._total_done += offset
        loop = asyncio.get_running_loop()
        fd = await loop.run_in_executor(self._pool, open_part, target, offset)
        part = PartWriter(fd, offset, open_direct(fd))
        try:
            end, size = await self._receive_body(target, part, offset, hasher)
        except BaseException:
            await loop.run_in_executor(self._pool, close_part, part)
            if target.entry.stream:  # no resume: nothing worth keeping
                remove_quietly(target.part)
            raise
        part.close()
        if self._verify and hasher.digest() != end.digest:
            await loop.run_in_executor(self._pool, discard_part, target, fd)
            raise IntegrityError(f"{display_name(target.entry.path)}: content hash mismatch")
        await loop.run_in_executor(self._pool, install_file, target, fd, self._overwrite)
        self._on_event(FileReceived(target.index, end.digest, target.final))
        self._progress.update(target.index, size, self._total_done, final=True)

    async def _receive_body(
        self, target: Target, part: PartWriter, offset: int, hasher: Hasher
    ) -> tuple[FileEnd, int]:
        """Decrypt DATA records into ``_UNIT``-byte units; write and hash full units in workers.

        Units hold several records so that threads hand off rarely; a unit is reused once both
        its write and its hash are done. A partly filled unit is written out on any exit.
        """
        pending: deque[tuple[_Jobs, memoryview]] = deque()
        free = list(self._buffers)
        assembler = MessageAssembler()
        size = MAX_FILE_SIZE if target.entry.stream else target.entry.size
        unit, fill = free.pop(), 0
        try:
            while True:
                if fill + MAX_PAYLOAD > len(unit):
                    pending.append((self._flush(part, unit[:fill], hasher), unit))
                    fill = 0
                    unit = await _next_unit(free, pending)
                kind, length = await self._recv_into(unit[fill : fill + MAX_PAYLOAD])
                if kind is RecordKind.CONTROL:
                    message = assembler.feed(bytes(unit[fill : fill + length]))
                    if isinstance(message, Wait) and target.entry.stream:
                        continue  # the sender's source is slow, not gone
                    if message is not None:
                        self._talk.received(message)
                        break
                    continue
                offset += length
                if offset > size:
                    raise PeerProtocolError(f"{display_name(target.entry.path)}: too much data")
                fill += length
                self._bytes += length
                self._total_done += length
                self._progress.update(target.index, offset, self._total_done)
        finally:  # authenticated bytes reach the .part even if the link broke mid-unit
            if fill:
                pending.append((self._flush(part, unit[:fill], hasher), unit))
            concurrent.futures.wait([job for jobs, _ in pending for job in jobs])
        for jobs, _ in pending:
            await _finished(jobs)
        return _expect_end(message, target, offset), offset

    async def _recv_into(self, buffer: memoryview) -> tuple[RecordKind, int]:
        stall = self.timeouts.stall
        try:
            async with asyncio.timeout(stall):
                return await self._channel.recv_into(buffer)
        except TimeoutError:
            raise stalled(stall) from None

    def _flush(self, part: PartWriter, data: memoryview, hasher: Hasher) -> _Jobs:
        jobs = [self._pool.submit(part.write, data)]
        if self._verify:
            jobs.append(self._hash_pool.submit(_hash_unit, hasher, data))
        return jobs


async def _next_unit(
    free: list[memoryview], pending: deque[tuple[_Jobs, memoryview]]
) -> memoryview:
    if not free:
        jobs, unit = pending.popleft()
        await _finished(jobs)
        free.append(unit)
    return free.pop()


_Jobs = list["concurrent.futures.Future[None]"]


async def _finished(jobs: _Jobs) -> None:
    for job in jobs:
        if job.done():
            job.result()
        else:
            await asyncio.wrap_future(job)


def _expect_end(message: object, target: Target, received: int) -> FileEnd:
    if isinstance(message, ErrorMessage):
        raise RefusedByPeerError(message.reason)
    if not isinstance(message, FileEnd) or message.index != target.index:
        raise PeerProtocolError(f"expected file-end for {display_name(target.entry.path)}")
    if received != target.entry.size and not target.entry.stream:
        raise PeerProtocolError(f"{display_name(target.entry.path)}: size mismatch")
    return message


def _hasher_for(target: Target, offset: int) -> Hasher:
    if offset == 0:
        return new_hasher()
    if target.state is None or offset > target.state.length:
        raise PeerProtocolError(f"resume offset {offset} beyond the offered .part")
    return target.state.hasher_at(offset)


def _ignore(event: ReceiveEvent) -> None:
    pass


def _hash_unit(hasher: Hasher, data: memoryview) -> None:
    hasher.update(data)
