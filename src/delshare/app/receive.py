"""``delshare receive CODE``: pair, connect, confirm the offer, receive safely, report hashes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from delshare.app.common import (
    SessionOptions,
    UsageProblem,
    notice_reporter,
    progress_reporter,
)
from delshare.app.connect import Connection, connect_peer, pair_and_gather
from delshare.app.events import (
    SAME_CONTENT,
    FileSkipped,
    NoticeIssued,
    OfferReceived,
    PeerConnected,
    Reporter,
    ResumeStarted,
    TransferFinished,
)
from delshare.app.lan import find_lan_rendezvous
from delshare.app.observe import observe_file_ends
from delshare.app.send import report_hashes, started
from delshare.errors import PairingError
from delshare.link.records import RecordChannel
from delshare.pairing import pair, parse_code
from delshare.transfer.digest import hash_file
from delshare.transfer.errors import DestinationExistsError
from delshare.transfer.manifest import Manifest, display_name
from delshare.transfer.receiver import AskOverwrite, ReceiveStats, receive_files

__all__ = [
    "Ask",
    "AskOverwrite",
    "ReceiveOptions",
    "check_output",
    "receive_over",
    "run_receive",
]

Ask = Callable[[OfferReceived], Awaitable[bool]]
"""Asks the user whether to accept an offer (not called with ``--yes``)."""


@dataclass(frozen=True)
class ReceiveOptions:
    """Where files go and what may happen to existing ones."""

    output: str = "."
    overwrite: bool = False
    rename: bool = False
    yes: bool = False


async def _hash_missing(manifest: Manifest, stats: ReceiveStats, hashes: dict[int, bytes]) -> None:
    """Hash from disk any received file whose ``file-end`` the observer did not see."""
    index_of = {e.path: i for i, e in enumerate(manifest.entries)}
    loop = asyncio.get_running_loop()
    for received in stats.files:
        index = index_of.get(received.path)
        if index is not None and index not in hashes and not received.skipped:
            hashes[index] = await loop.run_in_executor(None, hash_file, str(received.destination))


async def _receive(
    channel: RecordChannel,
    options: ReceiveOptions,
    confirm: Callable[[Manifest], Awaitable[bool]],
    report: Reporter,
    ask_overwrite: AskOverwrite | None,
) -> ReceiveStats:
    try:
        return await receive_files(
            channel,
            options.output,
            overwrite=options.overwrite,
            rename=options.rename,
            confirm=confirm,
            progress_cb=progress_reporter(report),
            ask_overwrite=ask_overwrite,
        )
    except DestinationExistsError as exc:
        raise DestinationExistsError(f"{exc} (use --overwrite or --rename)") from exc


def _offer_event(manifest: Manifest) -> OfferReceived:
    names = tuple(display_name(e.path) for e in manifest.entries if "/" not in e.path)
    return OfferReceived(manifest.file_count, manifest.total_bytes, names)


def check_output(options: ReceiveOptions) -> None:
    """UsageProblem unless the output folder exists (checked before contacting anyone)."""
    if not os.path.isdir(options.output):
        raise UsageProblem(f"output folder {display_name(options.output)!r} does not exist")


async def run_receive(
    code: str,
    session: SessionOptions,
    options: ReceiveOptions,
    report: Reporter,
    ask: Ask,
    ask_overwrite: AskOverwrite | None = None,
) -> None:
    """Receive what the holder of ``code`` offers into ``options.output``.

    ``ask_overwrite`` (None: never asked, existing files fail the offer) decides whether to
    replace offered files that exist, unless ``options`` says overwrite or rename.
    Raises UsageProblem before contacting anyone, then PairingError, LinkError, TransferError.
    """
    check_output(options)
    try:
        parsed = parse_code(code)
    except PairingError as exc:
        raise UsageProblem(f"bad code: {exc}") from exc
    rendezvous = session.rendezvous
    if rendezvous is None:
        rendezvous = await find_lan_rendezvous(parsed.nameplate, session.pair_timeout)
        report(NoticeIssued(f"found the sender on the local network: {rendezvous}"))
    notice = notice_reporter(report)
    pairing = pair(rendezvous, parsed, "receiver", timeout=session.pair_timeout)
    paired, gathered = await pair_and_gather(pairing, session.connect, notice)
    async with paired:
        connection = await connect_peer(paired, "receiver", session.connect, notice, gathered)
    await receive_over(connection, options, report, ask, ask_overwrite)


async def receive_over(
    connection: Connection,
    options: ReceiveOptions,
    report: Reporter,
    ask: Ask,
    ask_overwrite: AskOverwrite | None = None,
) -> None:
    """Report the path, receive one offer over the connection's link, report hashes; close."""
    try:
        path = connection.link.path
        report(PeerConnected(path.kind, path.address))
        hashes: dict[int, bytes] = {}
        offered: list[Manifest] = []

        def resumed(index: int, offset: int) -> None:
            entry = (
                offered[0].entries[index] if offered and index < len(offered[0].entries) else None
            )
            if entry is not None and offset > 0:
                report(ResumeStarted(display_name(entry.path), offset, entry.size))

        channel = observe_file_ends(connection.link.channel, hashes.__setitem__, resumed)

        async def confirm(manifest: Manifest) -> bool:
            offered.append(manifest)
            event = _offer_event(manifest)
            report(event)
            if not options.yes and not await ask(event):
                return False
            report(started(manifest, "receive"))
            return True

        begin = time.monotonic()
        stats = await _receive(channel, options, confirm, report, ask_overwrite)
        manifest = offered[0]
        for received in stats.files:
            if received.skipped:
                report(FileSkipped(display_name(received.path), SAME_CONTENT))
        await _hash_missing(manifest, stats, hashes)
        report_hashes(manifest, hashes, report)
        elapsed = time.monotonic() - begin
        report(
            TransferFinished(
                manifest.file_count, manifest.total_bytes, stats.bytes_received, elapsed
            )
        )
    finally:
        await connection.close()
