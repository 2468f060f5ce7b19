"""``delshare send``: build the manifest, pair with a code, connect, send, report the hashes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Sequence
from typing import BinaryIO

from delshare.app.common import (
    CODE_VALID_FOR,
    RENDEZVOUS_CONNECT_TIMEOUT,
    SessionOptions,
    UsageProblem,
    notice_reporter,
    progress_reporter,
    reach_rendezvous,
)
from delshare.app.connect import (
    Connection,
    HandedTurn,
    connect_peer,
    pair_and_gather,
    wants_handed_turn,
)
from delshare.app.events import (
    LEFT_OUT,
    SAME_CONTENT,
    CodeAllocated,
    FileSkipped,
    FileVerified,
    NoticeIssued,
    OfferPrepared,
    PeerConnected,
    Reporter,
    ResumeStarted,
    TransferFinished,
    TransferStarted,
)
from delshare.app.lan import check_lan_route, lan_rendezvous
from delshare.app.session import (
    Healer,
    ResumeAnnouncer,
    rendezvous_healer,
    run_rounds,
    with_handed_turn,
)
from delshare.app.text import check_text, deliver_text
from delshare.errors import PairingError
from delshare.pairing import Code, PairedChannel, generate_code, pair, parse_code
from delshare.transfer.errors import ManifestError, UnsafePathError
from delshare.transfer.events import FileSent, FileStarted, SendEvent
from delshare.transfer.manifest import (
    BuiltManifest,
    Manifest,
    build_manifest,
    check_rel_path,
    display_name,
    stream_manifest,
)
from delshare.transfer.protocol import STALL_TIMEOUT
from delshare.transfer.sender import SendStats, send_files

__all__ = ["build", "offer_summary", "run_send", "send_over"]


def build(paths: Sequence[str]) -> BuiltManifest:
    """The manifest of what to send; UsageProblem if the inputs cannot be sent."""
    if not paths:
        raise UsageProblem("nothing to send: give at least one file or folder")
    try:
        return build_manifest(paths)
    except UnsafePathError as exc:
        raise UsageProblem(_unsendable(paths) or str(exc)) from exc
    except ManifestError as exc:
        if isinstance(exc.__cause__, UnsafePathError):
            raise UsageProblem(_unsendable(paths) or str(exc)) from exc
        raise UsageProblem(str(exc)) from exc


def streamed(paths: Sequence[str], stream: BinaryIO) -> BuiltManifest:
    """The offer of one stream named ``paths[0]`` (``stdin`` for ``-``)."""
    name = paths[0] if paths and paths[0] != "-" else "stdin"
    try:
        return stream_manifest(stream, name)
    except ManifestError as exc:
        raise UsageProblem(str(exc)) from exc


def _unsendable(paths: Sequence[str]) -> str:
    """Every name under ``paths`` that no receiver would accept (control characters, ...),
    listed in one message, so that one run shows them all; "" if none is found."""
    bad: list[str] = []
    for raw in paths:
        top = os.path.abspath(raw)
        base = os.path.dirname(top)
        for folder, dirs, files in os.walk(top):
            for name in sorted([*dirs, *files]):
                rel = os.path.relpath(os.path.join(folder, name), base).replace(os.sep, "/")
                try:
                    check_rel_path(rel)
                except UnsafePathError:
                    bad.append(display_name(rel))
    if not bad:
        return ""
    shown = ", ".join(f"'{b}'" for b in bad[:10]) + (
        f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    )
    return (
        f"cannot send {len(bad)} name{'s' * (len(bad) != 1)} that receivers refuse (control "
        f"characters, backslashes or colons): {shown}; rename them, or send the rest without them"
    )


def _checked_code(code: str) -> Code:
    try:
        return parse_code(code)
    except PairingError as exc:
        raise UsageProblem(f"bad code: {exc}") from exc


def started(manifest: Manifest, direction: str) -> TransferStarted:
    """The progress display's plan: printable names and sizes of the files, in order."""
    files = [(i, e) for i, e in enumerate(manifest.entries) if e.kind == "file"]
    return TransferStarted(
        tuple(i for i, _ in files),
        tuple(display_name(e.path) for _, e in files),
        tuple(e.size for _, e in files),
        direction,
        manifest.streaming,
    )


def report_hashes(
    manifest: Manifest,
    hashes: dict[int, bytes],
    report: Reporter,
    renamed: dict[str, str] | None = None,
) -> None:
    """One ``FileVerified`` per file whose ``file-end`` passed (manifest order); ``renamed``:
    manifest path -> the path it was saved under, when that differs."""
    for index, entry in enumerate(manifest.entries):
        if index in hashes:
            saved = (renamed or {}).get(entry.path)
            name, digest = display_name(entry.path), hashes[index].hex()
            report(FileVerified(name, entry.size, digest, display_name(saved) if saved else None))


def offer_summary(manifest: Manifest) -> OfferPrepared:
    """What is offered: counts and the top-level names."""
    names = tuple(display_name(e.path) for e in manifest.entries if "/" not in e.path)
    return OfferPrepared(manifest.file_count, manifest.total_bytes, names, manifest.streaming)


async def _expiring(pairing: Awaitable[PairedChannel]) -> PairedChannel:
    """``pairing``, bounded by the code's validity; a clear PairingError when it expires."""
    expired = PairingError(
        "the code expired before a receiver used it; run `delshare send` again for a new code "
        "(and check that the receiver uses the same rendezvous server)"
    )
    try:
        async with asyncio.timeout(CODE_VALID_FOR):
            return await pairing
    except TimeoutError:
        raise expired from None
    except PairingError as exc:
        if "expired" in str(exc):
            raise expired from exc
        raise


async def run_send(
    paths: Sequence[str],
    code: str | None,
    options: SessionOptions,
    report: Reporter,
    *,
    text: str | None = None,
    stream: BinaryIO | None = None,
) -> None:
    """Send ``paths`` (or the message ``text``, or what ``stream`` gives until its end, as one
    file named ``paths[0]``) to whoever types the code; return once the receiver confirmed
    every file (or the text). A stream is sent as it is read; it is never resumed.

    Everything checkable (paths, code, rendezvous reachable, LAN announcements possible) is
    checked before the code is printed. Raises UsageProblem before anything is sent,
    PairingError, LinkError or TransferError later.
    """
    built = (
        None if text is not None else build(paths) if stream is None else streamed(paths, stream)
    )
    for skipped in built.skipped if built else ():
        report(NoticeIssued(f"skipping {display_name(skipped)} ({LEFT_OUT})"))
    if text is not None and (problem := check_text(text)) is not None:
        raise UsageProblem(problem)
    chosen = None if code is None else _checked_code(code)
    offered = offer_summary(built.manifest) if built is not None else None

    def show_code(shown: Code) -> None:
        report(CodeAllocated(str(shown), CODE_VALID_FOR))
        if offered is not None:
            report(offered)

    async with contextlib.AsyncExitStack() as stack:
        rendezvous = options.rendezvous
        if rendezvous is None:
            check_lan_route()
            # Our own rendezvous (LAN mode): every number is free.
            chosen = chosen or parse_code(generate_code())
            nameplate = chosen.nameplate
            rendezvous = await stack.enter_async_context(lan_rendezvous(nameplate))
            show_code(chosen)
            report(NoticeIssued(f"no rendezvous server set: announcing code {nameplate} on the "
                                "local network"))  # fmt: skip
        elif chosen is not None:
            await reach_rendezvous(rendezvous, ca=options.ca)  # the code shows once it can work
            show_code(chosen)
        notice = notice_reporter(report)
        # Without a chosen code the server allocates the number (no one else holds it), which
        # is shown once the rendezvous answered.
        wants_turn = built is not None and wants_handed_turn(options.connect)
        handed = HandedTurn() if wants_turn else None
        pairing = pair(
            rendezvous,
            chosen,
            "sender",
            timeout=options.pair_timeout,
            connect_timeout=RENDEZVOUS_CONNECT_TIMEOUT,
            ca=options.ca,
            on_code=show_code,
            on_turn=handed.offer if handed else None,
        )
        if built is None:
            async with await _expiring(pairing) as paired:
                await deliver_text(paired, text or "", report)
            return
        paired, gathered = await pair_and_gather(
            _expiring(pairing), options.connect, notice, handed
        )
        async with paired:
            connection = await connect_peer(paired, "sender", options.connect, notice, gathered)
        healer = None
        if (
            options.reconnect_timeout > 0 and not built.manifest.streaming
        ):  # the LAN rendezvous then stays up for reconnecting
            healing = await with_handed_turn(options, handed)
            healer = rendezvous_healer(rendezvous, paired.key, "sender", healing, report)
        else:
            await stack.aclose()
        await send_over(connection, built, report, healer, options.stall_timeout)


async def send_over(
    connection: Connection,
    built: BuiltManifest,
    report: Reporter,
    healer: Healer | None = None,
    stall_timeout: float = STALL_TIMEOUT,
) -> None:
    """Report the path, send ``built`` over the connection's link, report the hashes; close.

    With ``healer``, a broken link is replaced and the transfer resumes on the new one.
    """
    report(PeerConnected(connection.link.path.kind, connection.link.path.address))
    hashes: dict[int, bytes] = {}
    entries = built.manifest.entries
    announcer = ResumeAnnouncer(report, built.manifest)
    moved = [0]

    def on_event(event: SendEvent) -> None:
        match event:
            case FileStarted(index, offset):
                announcer.file_begins(index, offset)
                if offset > 0:
                    entry = entries[index]
                    report(ResumeStarted(display_name(entry.path), offset, entry.size))
            case FileSent(index, digest):
                hashes[index] = digest

    async def one_round(link: Connection, number: int) -> tuple[SendStats, set[int]]:
        if number:
            announcer.new_link(link)
        earlier = set(hashes)
        channel = link.link.channel
        progress = progress_reporter(report)
        try:
            stats = await send_files(
                channel, built, progress, stall_timeout=stall_timeout, on_event=on_event
            )
        finally:  # the bytes a round moved count even if it fails
            moved[0] += channel.data_sent + channel.data_received
        announcer.finished()
        return stats, earlier

    report(started(built.manifest, "send"))
    begin = time.monotonic()
    stats, earlier = await run_rounds(connection, healer, one_round)
    for index in stats.skipped:
        if index not in earlier:  # not a file finished before a reconnection
            report(FileSkipped(display_name(entries[index].path), SAME_CONTENT))
    report_hashes(built.manifest, hashes, report)
    manifest = built.manifest
    elapsed = time.monotonic() - begin
    total = moved[0] if manifest.streaming else manifest.total_bytes
    report(TransferFinished(manifest.file_count, total, moved[0], elapsed, "send"))
