"""``delshare send``: build the manifest, pair with a code, connect, send, report the hashes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

from delshare.app.common import (
    SessionOptions,
    UsageProblem,
    notice_reporter,
    progress_reporter,
)
from delshare.app.connect import Connection, connect_peer, pair_and_gather
from delshare.app.events import (
    SAME_CONTENT,
    CodeAllocated,
    FileSkipped,
    FileVerified,
    NoticeIssued,
    PeerConnected,
    Reporter,
    ResumeStarted,
    TransferFinished,
    TransferStarted,
)
from delshare.app.lan import lan_rendezvous
from delshare.app.observe import observe_file_ends
from delshare.errors import PairingError
from delshare.pairing import generate_code, pair, parse_code
from delshare.transfer.errors import ManifestError
from delshare.transfer.manifest import BuiltManifest, Manifest, build_manifest, display_name
from delshare.transfer.sender import send_files

__all__ = ["build", "run_send", "send_over"]


def build(paths: Sequence[str]) -> BuiltManifest:
    """The manifest of what to send; UsageProblem if the inputs cannot be sent."""
    if not paths:
        raise UsageProblem("nothing to send: give at least one file or folder")
    try:
        return build_manifest(paths)
    except ManifestError as exc:
        raise UsageProblem(str(exc)) from exc


def _checked_code(code: str) -> str:
    try:
        return str(parse_code(code))
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
    )


def report_hashes(manifest: Manifest, hashes: dict[int, bytes], report: Reporter) -> None:
    """One ``FileVerified`` per file whose ``file-end`` passed (manifest order)."""
    for index, entry in enumerate(manifest.entries):
        if index in hashes:
            report(FileVerified(display_name(entry.path), entry.size, hashes[index].hex()))


async def run_send(
    paths: Sequence[str], code: str | None, options: SessionOptions, report: Reporter
) -> None:
    """Send ``paths`` to whoever types the code; return once the receiver confirmed every file.

    Raises UsageProblem before anything is sent, PairingError, LinkError or TransferError later.
    """
    built = build(paths)
    for skipped in built.skipped:
        report(NoticeIssued(f"skipping {display_name(skipped)} (not a regular file or folder)"))
    chosen = None if code is None else _checked_code(code)
    if chosen is None and options.rendezvous is None:
        chosen = generate_code()  # our own rendezvous (LAN mode): every number is free
    if chosen is not None:
        report(CodeAllocated(chosen))
    async with contextlib.AsyncExitStack() as stack:
        rendezvous = options.rendezvous
        if rendezvous is None:
            nameplate = parse_code(chosen or "").nameplate
            rendezvous = await stack.enter_async_context(lan_rendezvous(nameplate))
            report(NoticeIssued(f"no rendezvous server set: announcing code {nameplate} on the "
                                "local network"))  # fmt: skip
        notice = notice_reporter(report)
        # Without a chosen code the server allocates the number (no one else holds it).
        pairing = pair(
            rendezvous,
            chosen,
            "sender",
            timeout=options.pair_timeout,
            on_code=lambda allocated: report(CodeAllocated(str(allocated))),
        )
        paired, gathered = await pair_and_gather(pairing, options.connect, notice)
        async with paired:
            connection = await connect_peer(paired, "sender", options.connect, notice, gathered)
    try:
        await send_over(connection, built, report)
    finally:
        await connection.close()


async def send_over(connection: Connection, built: BuiltManifest, report: Reporter) -> None:
    """Report the path, send ``built`` over the connection's link, report the hashes."""
    path = connection.link.path
    report(PeerConnected(path.kind, path.address))
    hashes: dict[int, bytes] = {}
    entries = built.manifest.entries

    def resumed(index: int, offset: int) -> None:
        if offset > 0 and index < len(entries):
            report(ResumeStarted(display_name(entries[index].path), offset, entries[index].size))

    channel = observe_file_ends(connection.link.channel, hashes.__setitem__, resumed)
    report(started(built.manifest, "send"))
    begin = time.monotonic()
    stats = await send_files(channel, built, progress_reporter(report))
    for index in stats.skipped:
        report(FileSkipped(display_name(entries[index].path), SAME_CONTENT))
    report_hashes(built.manifest, hashes, report)
    manifest = built.manifest
    report(
        TransferFinished(
            manifest.file_count, manifest.total_bytes, stats.bytes_sent, time.monotonic() - begin
        )
    )
