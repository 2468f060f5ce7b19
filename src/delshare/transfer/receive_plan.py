"""Plan where an offer goes, before anything is written: targets, names, resume state, space.

Theory of operation: the offer is validated (paths, duplicates, bounds) and planned before
anything is written — every destination through :class:`~delshare.transfer.manifest.Destinations`
(:func:`plan_targets`), conflicts with existing files (refused, renamed with ``--rename``, or
replaced after asking), the ``.part`` prefixes this run can resume (their state file names the
same source version: :mod:`delshare.transfer.resume`), and free space for what is still to come
(:func:`plan_or_reject`). A destination file of the offered size is compared by content: the
receiver asks the sender for its BLAKE3 (``hash-request``) while hashing its own copy, and an
equal file is skipped (:func:`same_size_files`). A hostile or impossible offer is rejected with
nothing on disk. What the plan decides for each entry is a :class:`Target`; the session
(:mod:`delshare.transfer.receiver`) writes them and :mod:`delshare.transfer.install` puts them
in place.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from delshare.link.records import RecordChannel
from delshare.transfer.digest import hash_file
from delshare.transfer.errors import (
    DestinationExistsError,
    InsufficientSpaceError,
    LocalIOError,
    ManifestError,
    PeerProtocolError,
    RefusedByPeerError,
    UnsafePathError,
)
from delshare.transfer.manifest import Destinations, Entry, Manifest, display_name
from delshare.transfer.protocol import (
    Accept,
    ErrorMessage,
    Hashes,
    HashRequest,
    Offer,
    Reject,
    ResumeOffer,
    recv_message,
    send_last_word,
    send_message,
)
from delshare.transfer.resume import (
    PartState,
    hash_part,
    read_sidecar,
    sidecar_matches,
    temp_paths,
)
from delshare.transfer.states import Conversation

__all__ = [
    "AskOverwrite",
    "Policy",
    "Target",
    "accept_for",
    "existing_files",
    "plan_or_reject",
    "plan_targets",
    "reject_offer",
    "same_size_files",
]

_MAX_RENAME = 1000
AskOverwrite = Callable[[tuple[str, ...]], Awaitable[bool]]
"""Asked with the printable names of offered files that exist: replace them?"""


@dataclass(slots=True)
class Target:
    """One entry of the offer as planned: its destination, resume state, skipped or not."""

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


async def reject_offer(channel: RecordChannel, talk: Conversation, reason: str) -> None:
    """Refuse the offer, unless the conversation has ended already (the sender aborted)."""
    await send_last_word(channel, Reject(reason), talk)


@dataclass(frozen=True, slots=True)
class Policy:
    """What may happen to existing destination files."""

    overwrite: bool
    rename: bool
    ask: AskOverwrite | None


async def plan_or_reject(
    channel: RecordChannel,
    talk: Conversation,
    pool: concurrent.futures.Executor,
    out: Path,
    offer: Offer,
    policy: Policy,
    timeout: float,
) -> tuple[list[Target], bool]:
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
        await reject_offer(channel, talk, str(exc))
        raise
    except PeerProtocolError as exc:
        await reject_offer(channel, talk, f"protocol error: {exc}")
        raise
    except OSError as exc:
        await reject_offer(channel, talk, "receiver cannot prepare the output folder")
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
) -> list[Target]:
    """Decide every entry's destination and resume state; raise before anything is written.

    ``same``: indexes of files whose destination already has the offered content (skipped).
    """
    claimed: set[Path] = set()
    targets: list[Target] = []
    for index, entry in enumerate(manifest.entries):
        final = dest(entry.path)
        if not dest.folder_exists(entry.path.rpartition("/")[0]):  # in a new folder: all free
            targets.append(Target(index, entry, final, chunk))
            continue
        if entry.kind == "dir":
            if final.exists() and not final.is_dir():
                raise DestinationExistsError(f"{display_name(entry.path)} exists and is a file")
            targets.append(Target(index, entry, final))
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
) -> Target:
    rel = entry.path
    final = dest(rel)
    if final not in claimed and same:
        return Target(index, entry, final, skip=True)
    if final in claimed or _taken(final, overwrite):
        if not rename:
            raise DestinationExistsError(f"{display_name(rel)} already exists")
        rel = _free_name(dest, rel, claimed, overwrite)
        final = dest(rel)
    for temp in temp_paths(final):
        if temp.is_symlink() or (temp.exists() and not temp.is_file()):
            raise UnsafePathError(f"{display_name(rel)}: its temporary file is not a plain file")
    return Target(index, entry, final)


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


def _resume_state(target: Target, chunk: int) -> PartState | None:
    if not target.part.is_file() or target.part.is_symlink():
        return None
    sidecar = read_sidecar(target.sidecar)
    if sidecar is None or not sidecar_matches(sidecar, target.entry, chunk, target.final):
        return None  # another source version (or not ours): start over
    return hash_part(target.part, chunk)


def _check_space(out: Path, targets: list[Target]) -> None:
    needed = sum(
        max(0, t.entry.size - (t.state.length if t.state else 0))
        for t in targets
        if t.entry.kind == "file" and not t.skip
    )
    free = shutil.disk_usage(out).free
    if needed > free:
        raise InsufficientSpaceError(f"need {needed} bytes, only {free} free", needed, free)


def accept_for(targets: list[Target], verify: bool) -> Accept:
    resume = tuple(
        ResumeOffer(t.index, t.state.length, t.state.chunks)
        for t in targets
        if t.state is not None and t.state.length
    )
    return Accept(resume, tuple(t.index for t in targets if t.skip), verify)
