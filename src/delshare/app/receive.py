"""``delshare receive CODE``: pair, connect, confirm the offer, receive safely, report hashes."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from delshare.app.common import (
    RENDEZVOUS_CONNECT_TIMEOUT,
    SessionOptions,
    UsageProblem,
    human_size,
    notice_reporter,
    progress_reporter,
)
from delshare.app.connect import (
    Connection,
    HandedTurn,
    connect_with,
    offer_candidates,
    pair_and_gather,
    wants_handed_turn,
)
from delshare.app.events import (
    LEFT_OUT,
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
from delshare.app.send import report_hashes, started
from delshare.app.session import (
    FinishedLinkLostError,
    Healer,
    ResumeAnnouncer,
    rendezvous_healer,
    run_rounds,
    with_handed_turn,
)
from delshare.app.text import is_text, take_text
from delshare.errors import DelshareError, PairingError
from delshare.link.records import MAX_PAYLOAD, LinkClosedError, RecordChannel
from delshare.pairing import pair, parse_code
from delshare.transfer.digest import hash_file
from delshare.transfer.errors import (
    DeclinedError,
    DestinationExistsError,
    InsufficientSpaceError,
    PeerProtocolError,
)
from delshare.transfer.events import (
    FileReceived,
    FileStarted,
    OfferArrived,
    ReceiveEvent,
    ReceiveEventCallback,
)
from delshare.transfer.manifest import Manifest, display_name
from delshare.transfer.protocol import STALL_TIMEOUT, peer_timeout
from delshare.transfer.receiver import ReceiveStats, receive_files

RENAMED_NOTICES = 5

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

AskOverwrite = Callable[[OfferReceived, tuple[str, ...]], Awaitable[bool]]
"""Asks the user, with the offer, whether to replace these existing files (printable names);
a yes accepts the offer too."""

STREAM_NOTICE = (
    "the sender streams its input: the size is known only at its end, so free space is not "
    "checked, and an interrupted transfer cannot be resumed"
)
DECLINED_HINT = "no answer on stdin: pass -y (--yes) to accept without asking"


@dataclass(frozen=True)
class ReceiveOptions:
    """Where files go and what may happen to existing ones.

    ``interactive``: someone can answer questions (stdin is a terminal); otherwise a declined
    offer names ``--yes``."""

    output: str = "."
    overwrite: bool = False
    rename: bool = False
    yes: bool = False
    interactive: bool = True
    single_file: bool = False
    """Accept only an offer of exactly one file (``-o -``: it goes to standard output)."""


async def _hash_missing(manifest: Manifest, stats: ReceiveStats, hashes: dict[int, bytes]) -> None:
    """Hash from disk any received file this run saw no ``FileReceived`` event for."""
    index_of = {e.path: i for i, e in enumerate(manifest.entries)}
    loop = asyncio.get_running_loop()
    for received in stats.files:
        index = index_of.get(received.path)
        if index is not None and index not in hashes and not received.skipped:
            hashes[index] = await loop.run_in_executor(None, hash_file, str(received.destination))


def _offer_event(
    manifest: Manifest, output: str, skipped: tuple[str, ...] = (), skipped_count: int = 0
) -> OfferReceived:
    names = tuple(display_name(e.path) for e in manifest.entries if "/" not in e.path)
    return OfferReceived(
        manifest.file_count,
        manifest.total_bytes,
        names,
        output,
        skipped,
        skipped_count,
        manifest.streaming,
    )


def check_output(options: ReceiveOptions) -> None:
    """UsageProblem unless the output folder exists and we may create files in it (checked
    before contacting anyone, so no code is spent on it)."""
    shown = display_name(options.output)
    if not os.path.isdir(options.output):
        raise UsageProblem(f"output folder {shown!r} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".delshare-probe-", dir=options.output)
    except OSError as exc:
        raise UsageProblem(
            f"cannot write to output folder {shown!r}: {exc.strerror or exc}; "
            "choose another with -o/--output"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _saved_to(output: str, manifest: Manifest, stats: ReceiveStats) -> str:
    """The single top-level item's saved path, or the output folder."""
    tops = [e for e in manifest.entries if "/" not in e.path]
    if len(tops) != 1:
        return output
    saved = next((f for f in stats.files if f.path == tops[0].path), None)
    name = saved.destination.name if saved is not None else tops[0].path
    return os.path.join(output, display_name(name))


def _renamed(output: str, stats: ReceiveStats) -> dict[str, str]:
    """Manifest path -> path saved under (relative to ``output``), for files saved elsewhere."""
    root = os.path.abspath(output)
    moved = {}
    for received in stats.files:
        rel = os.path.relpath(os.path.abspath(received.destination), root).replace(os.sep, "/")
        if rel != received.path and not received.skipped:
            moved[received.path] = rel
    return moved


class _Session:
    """One offer's dialogue with the user: the offer shown as it arrives, one question, and
    the clock started when the offer is accepted (time at a prompt is not transfer time)."""

    def __init__(
        self,
        options: ReceiveOptions,
        report: Reporter,
        ask: Ask,
        ask_overwrite: AskOverwrite | None,
    ) -> None:
        self.options = options
        self.report = report
        self.ask = ask
        self.ask_overwrite = ask_overwrite
        self.offer: OfferReceived | None = None
        self.manifest: Manifest | None = None
        self.accepted = False
        self.refused_overwrite = False
        self.confirmed = False  # a later round (after reconnecting) asks nothing again
        self.begin = 0.0

    def offered(self, manifest: Manifest, skipped: tuple[str, ...] = (), count: int = 0) -> None:
        """Show the offer once, then a note for each entry the sender leaves out of its folders
        (the first it named, the rest counted)."""
        if self.manifest is not None:
            return
        self.manifest = manifest
        names = tuple(display_name(name) for name in skipped)
        self.offer = _offer_event(manifest, self.options.output, names, count)
        self.report(self.offer)
        for name in names:
            self.report(NoticeIssued(f"the sender left out {name} ({LEFT_OUT})"))
        if count > len(names):
            more = count - len(names)
            self.report(NoticeIssued(f"the sender left out {more} more ({LEFT_OUT})"))
        if manifest.streaming:
            self.report(NoticeIssued(STREAM_NOTICE))

    async def replace(self, names: tuple[str, ...]) -> bool:
        """The transfer layer's overwrite question, asked together with the offer."""
        assert self.ask_overwrite is not None and self.offer is not None
        if self.confirmed:
            return self.accepted
        self.accepted = await self.ask_overwrite(self.offer, names)
        self.refused_overwrite = not self.accepted
        return self.accepted

    async def confirm(self, manifest: Manifest) -> bool:
        if self.confirmed:  # the same offer continues on a new link
            if manifest != self.manifest:
                raise PeerProtocolError("the sender offered something else after reconnecting")
            return True
        self.offered(manifest)
        assert self.offer is not None
        if self.options.single_file and len(manifest.entries) != 1:
            self.report(NoticeIssued("-o - takes a single file; the offer holds more"))
            return False
        if not (self.options.yes or self.accepted or await self.ask(self.offer)):
            return False
        self.report(started(manifest, "receive"))
        self.begin = time.monotonic()
        self.confirmed = True
        return True

    def declined(self, exc: DeclinedError | DestinationExistsError) -> DelshareError:
        """The error to raise for a no: DeclinedError (exit 3) whoever said it."""
        if isinstance(exc, DestinationExistsError):
            if not self.refused_overwrite:
                return DestinationExistsError(f"{exc} (use --overwrite or --rename)")
            return DeclinedError(f"offer declined: {exc}, kept (--overwrite or --rename next time)")
        if not self.options.interactive:
            return DeclinedError(f"offer declined ({DECLINED_HINT})")
        return DeclinedError("offer declined")


async def _receive(
    channel: RecordChannel,
    session: _Session,
    on_event: ReceiveEventCallback,
    stall_timeout: float = STALL_TIMEOUT,
) -> ReceiveStats:
    options = session.options
    try:
        return await receive_files(
            channel,
            options.output,
            overwrite=options.overwrite,
            rename=options.rename,
            confirm=session.confirm,
            progress_cb=progress_reporter(session.report),
            ask_overwrite=session.replace if session.ask_overwrite is not None else None,
            stall_timeout=stall_timeout,
            on_event=on_event,
        )
    except (DeclinedError, DestinationExistsError) as exc:
        raise session.declined(exc) from exc
    except InsufficientSpaceError as exc:
        raise InsufficientSpaceError(
            f"not enough space in {display_name(options.output)}: the offer needs "
            f"{human_size(exc.needed)}, {human_size(exc.free)} free; free some space or receive "
            "into another folder with -o/--output",
            exc.needed,
            exc.free,
        ) from exc


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
    handed = HandedTurn() if wants_handed_turn(session.connect) else None
    pairing = pair(
        rendezvous,
        parsed,
        "receiver",
        timeout=session.pair_timeout,
        connect_timeout=RENDEZVOUS_CONNECT_TIMEOUT,
        on_turn=handed.offer if handed else None,
        ca=session.ca,
    )
    paired, gathered = await pair_and_gather(pairing, session.connect, notice, handed)
    async with paired:
        message = await offer_candidates(paired, gathered, session.connect)
        if is_text(message):
            await gathered.close()
            await take_text(paired, message, report)
            return
        connection = await connect_with(paired, "receiver", session.connect, gathered, message)
    healer = None
    if session.reconnect_timeout > 0:
        healing = await with_handed_turn(session, handed)
        healer = rendezvous_healer(rendezvous, paired.key, "receiver", healing, report)
    await receive_over(
        connection, options, report, ask, ask_overwrite, healer, session.stall_timeout
    )


async def receive_over(
    connection: Connection,
    options: ReceiveOptions,
    report: Reporter,
    ask: Ask,
    ask_overwrite: AskOverwrite | None = None,
    healer: Healer | None = None,
    stall_timeout: float = STALL_TIMEOUT,
) -> None:
    """Report the path, receive one offer over the connection's link, report hashes; close.

    With ``healer``, a broken link is replaced and the same offer (checked to be the same)
    resumes on the new one without asking again.
    """
    report(PeerConnected(connection.link.path.kind, connection.link.path.address))
    hashes: dict[int, bytes] = {}
    session = _Session(options, report, ask, ask_overwrite)
    announcer: list[ResumeAnnouncer] = []
    moved = [0]

    def announcer_for(manifest: Manifest) -> ResumeAnnouncer:
        """The one announcer, made once the offer told the file sizes."""
        if not announcer:
            announcer.append(ResumeAnnouncer(report, manifest))
        return announcer[0]

    def resumed(index: int, offset: int) -> None:
        manifest = session.manifest
        assert manifest is not None  # the offer came first
        announcer_for(manifest).file_begins(index, offset)
        if offset > 0:
            entry = manifest.entries[index]
            report(ResumeStarted(display_name(entry.path), offset, entry.size))

    def on_event(event: ReceiveEvent) -> None:
        match event:
            case OfferArrived(manifest, skipped, count):
                session.offered(manifest, skipped, count)
            case FileStarted(index, offset):
                resumed(index, offset)
            case FileReceived(index, digest):
                hashes[index] = digest

    async def one_round(link: Connection, number: int) -> tuple[ReceiveStats, set[int]]:
        if number and session.manifest is not None:
            announcer_for(session.manifest).new_link(link)
        earlier = set(hashes)
        channel = link.link.channel
        try:
            stats = await _receive(channel, session, on_event, stall_timeout)
        finally:  # the bytes a round moved count even if it fails
            moved[0] += channel.data_sent + channel.data_received
        if announcer:
            announcer[0].finished()
        if healer is not None and healer.options.reconnect_timeout > 0:
            await _sender_hangs_up(channel, stats, earlier)
        return stats, earlier

    try:
        stats, earlier = await run_rounds(connection, healer, one_round)
    except DoneMaybeLostError as lost:  # no reconnection, but every file is in place
        stats, earlier = lost.stats, lost.earlier
    elapsed = time.monotonic() - session.begin
    manifest = session.manifest
    assert manifest is not None
    index_of = {e.path: i for i, e in enumerate(manifest.entries)}
    for received in stats.files:
        if received.skipped and index_of.get(received.path) not in earlier:
            report(FileSkipped(display_name(received.path), SAME_CONTENT))
    await _hash_missing(manifest, stats, hashes)
    renamed = _renamed(options.output, stats)
    for name, saved in list(renamed.items())[:RENAMED_NOTICES]:
        report(NoticeIssued(f"{display_name(name)} exists: saved as {display_name(saved)}"))
    if len(renamed) > RENAMED_NOTICES:
        report(NoticeIssued(f"{len(renamed) - RENAMED_NOTICES} more files saved under new names"))
    report_hashes(manifest, hashes, report, renamed)
    report(
        TransferFinished(
            manifest.file_count,
            moved[0] if manifest.streaming else manifest.total_bytes,
            moved[0],
            elapsed,
            "receive",
            _saved_to(options.output, manifest, stats),
        )
    )


class DoneMaybeLostError(FinishedLinkLostError):
    """The link broke after our final ``done``: the sender may not have it. Reconnecting lets
    the sender's next round find every file there (all skipped) and hear ``done`` again; if no
    reconnection comes, this side still succeeded (``stats``)."""

    def __init__(self, message: str, stats: ReceiveStats, earlier: set[int]) -> None:
        super().__init__(message)
        self.stats, self.earlier = stats, earlier


async def _sender_hangs_up(channel: RecordChannel, stats: ReceiveStats, earlier: set[int]) -> None:
    """After our ``done``, the sender's CLOSE (it closes once it has ``done``); a link that
    breaks instead raises :class:`DoneMaybeLostError`. A quiet sender is left after the peer
    timeout: it is there, so it has the ``done`` or will say otherwise."""
    buffer = memoryview(bytearray(MAX_PAYLOAD))
    try:
        async with asyncio.timeout(peer_timeout()):
            while True:
                await channel.recv_into(buffer)
    except LinkClosedError as exc:
        if not exc.clean:
            raise DoneMaybeLostError(
                f"link lost after the last file: {exc}", stats, earlier
            ) from exc
    except TimeoutError:
        pass
