"""Receive an offer into an output folder, safely and resumably.

Theory of operation: the offer is validated (paths, duplicates, bounds) and planned (destinations
through :func:`safe_destination`, conflicts, ``.part`` prefixes to resume, free space) before
anything is written; a hostile or impossible offer is rejected with nothing on disk. Each file
is written to a short hidden ``.delshare-<hex>.part`` next to its final name, with a state file
naming the final name and the source's size and mtime (so any legal name, up to 255 bytes, can
be received: :func:`delshare.transfer.resume.temp_paths`), hashed as it arrives, checked against
the sender's BLAKE3 digest, fsynced, given its mode (``& 0o755`` and the receiver's umask: no
setuid/setgid/sticky, no group/other write) and mtime, then renamed into place (never over an
existing file unless ``overwrite``). A broken link leaves the .part for resume;
a .part whose sidecar names another source version (size or mtime changed) starts over from 0.
Folders: an existing folder is used as it is (its mode and mtime are never changed: receiving a
``Documents`` of mode 0777 into a folder that has one must not open it up); a folder this run
creates gets the sender's mode masked like a file's (``& 0o755``, the umask), plus ``0o700``.

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
import contextlib
import functools
import os
import shutil
import stat
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from delshare.link.records import MAX_PAYLOAD, LinkClosedError, RecordChannel, RecordKind
from delshare.portable import metadata_on_descriptors
from delshare.transfer.digest import Hasher, hash_file, new_hasher
from delshare.transfer.diskio import PartWriter, aligned_buffer, open_direct, preallocate
from delshare.transfer.errors import (
    DeclinedError,
    DestinationExistsError,
    InsufficientSpaceError,
    IntegrityError,
    LocalIOError,
    ManifestError,
    OutputDirError,
    PeerProtocolError,
    RefusedByPeerError,
    StreamInterruptedError,
    TransferInterruptedError,
    UnsafePathError,
    stalled,
)
from delshare.transfer.manifest import (
    MAX_FILE_SIZE,
    Destinations,
    Entry,
    Manifest,
    display_name,
)
from delshare.transfer.progress import ProgressCallback, ProgressThrottle
from delshare.transfer.protocol import (
    STALL_TIMEOUT,
    Accept,
    Done,
    ErrorMessage,
    FileBegin,
    FileEnd,
    Hashes,
    HashRequest,
    MessageAssembler,
    Offer,
    Reject,
    ResumeOffer,
    Timeouts,
    Wait,
    keepalive,
    keepalive_interval,
    peer_timeout,
    recv_message,
    send_message,
)
from delshare.transfer.resume import (
    PartState,
    hash_part,
    read_sidecar,
    remove_quietly,
    sidecar_matches,
    temp_paths,
    write_sidecar,
)
from delshare.transfer.states import Conversation, Side

__all__ = ["AskOverwrite", "ReceiveStats", "ReceivedFile", "existing_files", "receive_files"]

_RING = 4
_UNIT = 4 * MAX_PAYLOAD
_MAX_RENAME = 1000
_FILE_MODE_MASK = 0o755
Confirm = Callable[[Manifest], Awaitable[bool]]
AskOverwrite = Callable[[tuple[str, ...]], Awaitable[bool]]
"""Asked with the printable names of offered files that exist: replace them?"""


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


@dataclass(slots=True)
class _Target:
    index: int
    entry: Entry
    final: Path
    chunk: int = 0
    state: PartState | None = None
    skip: bool = False
    created: bool = False  # a folder this run made (only those get the sender's mode and mtime)

    @property
    def part(self) -> Path:
        return temp_paths(self.final)[0]

    @property
    def sidecar(self) -> Path:
        return temp_paths(self.final)[1]


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
            async with keepalive(channel, keepalive_interval(timeout)):
                policy = _Policy(overwrite, rename, ask_overwrite)
                targets, overwrite = await _plan_or_reject(
                    channel, talk, pool, out, offer, policy, timeout
                )
                if confirm is not None and not await confirm(offer.manifest):
                    await _reject(channel, talk, "declined by the receiver")
                    raise DeclinedError("offer declined")
                await asyncio.get_running_loop().run_in_executor(pool, _make_dirs, targets)
                await send_message(channel, _accept_for(targets, verify), timeout, talk=talk)
                progress = ProgressThrottle(progress_cb)
                timeouts = Timeouts(stall_timeout, timeout)
                session = _ReceiveSession(
                    channel, talk, pool, hash_pool, targets, progress, overwrite, verify, timeouts
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
        await _reject(channel, talk, f"invalid offer: {exc}")
        raise
    if isinstance(message, ErrorMessage):
        raise RefusedByPeerError(message.reason)
    if not isinstance(message, Offer):
        raise PeerProtocolError(f"expected offer, got {type(message).__name__}")
    return message


async def _reject(channel: RecordChannel, talk: Conversation, reason: str) -> None:
    """Refuse the offer, unless the conversation has ended already (the sender aborted)."""
    if talk.ended:
        return
    with contextlib.suppress(LinkClosedError):
        await send_message(channel, Reject(reason), talk=talk)


@dataclass(frozen=True, slots=True)
class _Policy:
    """What may happen to existing destination files."""

    overwrite: bool
    rename: bool
    ask: AskOverwrite | None


async def _plan_or_reject(
    channel: RecordChannel,
    talk: Conversation,
    pool: concurrent.futures.Executor,
    out: Path,
    offer: Offer,
    policy: _Policy,
    timeout: float,
) -> tuple[list[_Target], bool]:
    """Plan every destination (asking before replacing files); return it and ``overwrite``."""
    loop = asyncio.get_running_loop()
    manifest, chunk, rename = offer.manifest, offer.chunk, policy.rename
    try:
        dest = Destinations(out)
        candidates = await loop.run_in_executor(pool, same_size_files, dest, manifest)
        same = await _same_content(channel, talk, pool, candidates, timeout)
        try:
            targets = await loop.run_in_executor(
                pool, plan_targets, dest, manifest, chunk, policy.overwrite, rename, same
            )
            overwrite = policy.overwrite
        except DestinationExistsError:
            if policy.overwrite or rename or policy.ask is None:
                raise
            names = await loop.run_in_executor(pool, existing_files, dest, manifest, same)
            if not names or not await policy.ask(tuple(display_name(n) for n in names)):
                raise
            targets = await loop.run_in_executor(
                pool, plan_targets, dest, manifest, chunk, True, False, same
            )
            overwrite = True
        _check_space(out, targets)
    except (ManifestError, DestinationExistsError, InsufficientSpaceError) as exc:
        await _reject(channel, talk, str(exc))
        raise
    except PeerProtocolError as exc:
        await _reject(channel, talk, f"protocol error: {exc}")
        raise
    except OSError as exc:
        await _reject(channel, talk, "receiver cannot prepare the output folder")
        raise LocalIOError(f"cannot prepare output folder: {exc}") from exc
    return targets, overwrite


def same_size_files(dest: Destinations, manifest: Manifest) -> dict[int, Path]:
    """Offered files whose destination is a regular file of the same size (maybe the same
    content: :func:`_same_content` compares hashes); checks every offered path on the way."""
    found: dict[int, Path] = {}
    for index, entry in enumerate(manifest.entries):
        final = dest(entry.path)
        if entry.kind != "file" or entry.stream:
            continue
        if not dest.folder_exists(entry.path.rpartition("/")[0]):
            continue
        try:
            st = os.lstat(final)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == entry.size:
            found[index] = final
    return found


async def _same_content(
    channel: RecordChannel,
    talk: Conversation,
    pool: concurrent.futures.Executor,
    candidates: dict[int, Path],
    timeout: float,
) -> frozenset[int]:
    """Ask the sender for the BLAKE3 of ``candidates``, hash ours meanwhile; the equal ones."""
    if not candidates:
        return frozenset()
    indexes = tuple(sorted(candidates))
    await send_message(channel, HashRequest(indexes), timeout, talk=talk)
    loop = asyncio.get_running_loop()
    local = loop.run_in_executor(pool, _hash_all, [candidates[i] for i in indexes])
    try:
        reply = await recv_message(channel, timeout, "the sender's content hashes", talk=talk)
    finally:
        mine = await local
    if isinstance(reply, ErrorMessage):
        raise RefusedByPeerError(reply.reason)
    if not isinstance(reply, Hashes) or tuple(i for i, _ in reply.files) != indexes:
        raise PeerProtocolError("the sender's hashes do not answer the request")
    pairs = zip(reply.files, mine, strict=True)
    return frozenset(i for (i, theirs), ours in pairs if theirs == ours)


def _hash_all(paths: list[Path]) -> list[bytes]:
    digests = []
    for path in paths:
        try:
            digests.append(hash_file(path))
        except OSError:
            digests.append(b"")  # unreadable: not the same
    return digests


def existing_files(
    dest: Destinations, manifest: Manifest, same: frozenset[int] = frozenset()
) -> list[str]:
    """Offered files whose destination holds something else (what ``overwrite`` replaces)."""
    names = []
    for index, entry in enumerate(manifest.entries):
        if entry.kind == "file" and index not in same:
            final = dest(entry.path)
            if _taken(final, False):
                names.append(entry.path)
    return names


def plan_targets(
    dest: Destinations,
    manifest: Manifest,
    chunk: int,
    overwrite: bool,
    rename: bool,
    same: frozenset[int] = frozenset(),
) -> list[_Target]:
    """Decide every entry's destination and resume state; raise before anything is written.

    ``same``: indexes of files whose destination already has the offered content (skipped).
    """
    claimed: set[Path] = set()
    targets: list[_Target] = []
    for index, entry in enumerate(manifest.entries):
        final = dest(entry.path)
        if not dest.folder_exists(entry.path.rpartition("/")[0]):  # in a new folder: all free
            targets.append(_Target(index, entry, final, chunk))
            continue
        if entry.kind == "dir":
            if final.exists() and not final.is_dir():
                raise DestinationExistsError(f"{display_name(entry.path)} exists and is a file")
            targets.append(_Target(index, entry, final))
            continue
        target = _plan_file(dest, index, entry, claimed, overwrite, rename, index in same)
        target.chunk = chunk
        if not target.skip and not entry.stream:  # a stream is never resumed
            target.state = _resume_state(target, chunk)
        claimed.add(target.final)
        targets.append(target)
    return targets


def _plan_file(
    dest: Destinations,
    index: int,
    entry: Entry,
    claimed: set[Path],
    overwrite: bool,
    rename: bool,
    same: bool,
) -> _Target:
    rel = entry.path
    final = dest(rel)
    if final not in claimed and same:
        return _Target(index, entry, final, skip=True)
    if final in claimed or _taken(final, overwrite):
        if not rename:
            raise DestinationExistsError(f"{display_name(rel)} already exists")
        rel = _free_name(dest, rel, claimed, overwrite)
        final = dest(rel)
    for temp in temp_paths(final):
        if temp.is_symlink() or (temp.exists() and not temp.is_file()):
            raise UnsafePathError(f"{display_name(rel)}: its temporary file is not a plain file")
    return _Target(index, entry, final)


def _taken(final: Path, overwrite: bool) -> bool:
    """Whether writing ``final`` would clobber something not ours."""
    part, sidecar = temp_paths(final)
    foreign_part = part.exists() and read_sidecar(sidecar) is None
    if overwrite:
        return final.is_dir()
    return final.exists() or foreign_part


def _free_name(dest: Destinations, rel: str, claimed: set[Path], overwrite: bool) -> str:
    folder, _, name = rel.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    for n in range(1, _MAX_RENAME):
        candidate = f"{stem} ({n}){dot}{ext}"
        candidate_rel = f"{folder}/{candidate}" if folder else candidate
        path = dest(candidate_rel)
        if path not in claimed and not _taken(path, False):
            return candidate_rel
    raise DestinationExistsError(f"no free name for {display_name(rel)}")


def _resume_state(target: _Target, chunk: int) -> PartState | None:
    if not target.part.is_file() or target.part.is_symlink():
        return None
    sidecar = read_sidecar(target.sidecar)
    if sidecar is None or not sidecar_matches(sidecar, target.entry, chunk, target.final):
        return None  # another source version (or not ours): start over
    return hash_part(target.part, chunk)


def _check_space(out: Path, targets: list[_Target]) -> None:
    needed = sum(
        max(0, t.entry.size - (t.state.length if t.state else 0))
        for t in targets
        if t.entry.kind == "file" and not t.skip
    )
    free = shutil.disk_usage(out).free
    if needed > free:
        raise InsufficientSpaceError(f"need {needed} bytes, only {free} free", needed, free)


def _make_dirs(targets: list[_Target]) -> None:
    """Create the offered folders (parents come first in a manifest); keep existing ones as is."""
    for target in targets:
        if target.entry.kind != "dir":
            continue
        try:
            os.mkdir(target.final, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(target.final).st_mode):
                raise LocalIOError(f"{display_name(target.entry.path)} is not a folder") from None
        else:
            target.created = True


@functools.cache
def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def file_mode(sender_mode: int) -> int:
    """A received file's mode: the sender's, without setuid/setgid/sticky, group/other write or
    what the receiver's umask removes."""
    return sender_mode & _FILE_MODE_MASK & ~_umask()


def folder_mode(sender_mode: int) -> int:
    """A folder this run created: masked like a file, and always usable by its owner."""
    return file_mode(sender_mode) | 0o700


def _accept_for(targets: list[_Target], verify: bool) -> Accept:
    resume = tuple(
        ResumeOffer(t.index, t.state.length, t.state.chunks)
        for t in targets
        if t.state is not None and t.state.length
    )
    return Accept(resume, tuple(t.index for t in targets if t.skip), verify)


class _ReceiveSession:
    def __init__(
        self,
        channel: RecordChannel,
        talk: Conversation,
        pool: concurrent.futures.Executor,
        hash_pool: concurrent.futures.Executor,
        targets: list[_Target],
        progress: ProgressThrottle,
        overwrite: bool,
        verify: bool,
        timeouts: Timeouts,
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

    async def run(self) -> ReceiveStats:
        try:
            await self._receive_all()
            await asyncio.get_running_loop().run_in_executor(
                self._pool, _finish_dirs, self._targets
            )
            await send_message(self._channel, Done(), self.timeouts.wait, talk=self._talk)
        except (IntegrityError, PeerProtocolError, LocalIOError) as exc:
            await _abort(self._channel, self._talk, str(exc))
            raise
        except OSError as exc:
            await _abort(self._channel, self._talk, "receiver could not write a file")
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

    async def _receive_file(self, target: _Target, offset: int) -> None:
        if target.entry.stream and offset:
            raise PeerProtocolError(f"{display_name(target.entry.path)}: a stream starts at 0")
        hasher = _hasher_for(target, offset)
        self._resumed[target.index] = offset
        self._total_done += offset
        loop = asyncio.get_running_loop()
        fd = await loop.run_in_executor(self._pool, _open_part, target, offset)
        part = PartWriter(fd, offset, open_direct(fd))
        try:
            end, size = await self._receive_body(target, part, offset, hasher)
        except BaseException:
            await loop.run_in_executor(self._pool, _close_part, part)
            if target.entry.stream:  # no resume: nothing worth keeping
                remove_quietly(target.part)
            raise
        part.close()
        if self._verify and hasher.digest() != end.digest:
            await loop.run_in_executor(self._pool, _discard_part, target, fd)
            raise IntegrityError(f"{display_name(target.entry.path)}: content hash mismatch")
        await loop.run_in_executor(self._pool, _install, target, fd, self._overwrite)
        self._progress.update(target.index, size, self._total_done, final=True)

    async def _receive_body(
        self, target: _Target, part: PartWriter, offset: int, hasher: Hasher
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


def _expect_end(message: object, target: _Target, received: int) -> FileEnd:
    if isinstance(message, ErrorMessage):
        raise RefusedByPeerError(message.reason)
    if not isinstance(message, FileEnd) or message.index != target.index:
        raise PeerProtocolError(f"expected file-end for {display_name(target.entry.path)}")
    if received != target.entry.size and not target.entry.stream:
        raise PeerProtocolError(f"{display_name(target.entry.path)}: size mismatch")
    return message


async def _abort(channel: RecordChannel, talk: Conversation, reason: str) -> None:
    """Abort with ``reason``, unless the conversation has ended already."""
    if talk.ended:
        return
    with contextlib.suppress(LinkClosedError):
        await send_message(channel, ErrorMessage(reason), talk=talk)


def _hasher_for(target: _Target, offset: int) -> Hasher:
    if offset == 0:
        return new_hasher()
    if target.state is None or offset > target.state.length:
        raise PeerProtocolError(f"resume offset {offset} beyond the offered .part")
    return target.state.hasher_at(offset)


_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_part(target: _Target, offset: int) -> int:
    """Write the sidecar, open the .part without following symlinks, cut it at ``offset``."""
    if offset == 0:
        remove_quietly(target.part, target.sidecar)
    if not target.entry.stream:  # a stream is never resumed: no state file
        _write_new(target.sidecar, target)
    fd = os.open(target.part, _OPEN_FLAGS, 0o600)
    os.ftruncate(fd, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    if not target.entry.stream:
        preallocate(fd, offset, target.entry.size - offset)
    return fd


def _write_new(path: Path, target: _Target) -> None:
    if path.is_symlink():
        raise LocalIOError(f"{display_name(str(path))} is a symlink")
    write_sidecar(path, target.entry, target.chunk, target.final)


def _close_part(part: PartWriter) -> None:
    part.close()
    os.close(part.fd)


def _hash_unit(hasher: Hasher, data: memoryview) -> None:
    hasher.update(data)


def _discard_part(target: _Target, fd: int) -> None:
    os.close(fd)
    remove_quietly(target.part, target.sidecar)


def _install(target: _Target, fd: int, overwrite: bool) -> None:
    """fsync, set mode and mtime, rename into place without clobbering, drop the sidecar."""
    by_descriptor = metadata_on_descriptors()
    try:
        os.fsync(fd)
        if by_descriptor:
            os.fchmod(fd, file_mode(target.entry.mode))
            os.utime(fd, ns=(target.entry.mtime_ns, target.entry.mtime_ns))
    finally:
        os.close(fd)
    if not by_descriptor:  # Windows has neither on a descriptor: by path, once closed
        os.chmod(target.part, file_mode(target.entry.mode))
        no_follow = os.utime in os.supports_follow_symlinks
        ns = (target.entry.mtime_ns, target.entry.mtime_ns)
        os.utime(target.part, ns=ns, follow_symlinks=not no_follow)
    if overwrite:
        os.replace(target.part, target.final)
    else:
        _rename_no_clobber(target.part, target.final)
    remove_quietly(target.sidecar)
    _fsync_dir(target.final.parent)


def _rename_no_clobber(source: Path, destination: Path) -> None:
    try:
        os.link(source, destination, follow_symlinks=False)
    except FileExistsError:
        raise DestinationExistsError(
            f"{display_name(destination.name)} appeared meanwhile"
        ) from None
    except OSError:  # no hard links on this filesystem
        if destination.exists() or destination.is_symlink():
            raise DestinationExistsError(f"{display_name(destination.name)} exists") from None
        os.rename(source, destination)
        return
    os.unlink(source)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _finish_dirs(targets: list[_Target]) -> None:
    """Give created folders their mode and mtime, deepest first (writing files changed them)."""
    for target in reversed(targets):
        if target.entry.kind == "dir" and target.created:
            os.chmod(target.final, folder_mode(target.entry.mode))
            os.utime(target.final, ns=(target.entry.mtime_ns,) * 2, follow_symlinks=False)
