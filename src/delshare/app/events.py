"""What a send or receive run reports to its user interface, as frozen past-tense events.

The app layer (:mod:`delshare.app.send`, :mod:`delshare.app.receive`) emits these through a
``Reporter`` callable; :mod:`delshare.cli.ui` renders them as text, a rich progress display or
JSON lines. Names in events are already made safe to print (control characters stripped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "LEFT_OUT",
    "SAME_CONTENT",
    "CodeAllocated",
    "Event",
    "FileSkipped",
    "FileVerified",
    "LinkLost",
    "NoticeIssued",
    "OfferPrepared",
    "OfferReceived",
    "PeerConnected",
    "ProgressUpdated",
    "Reconnected",
    "Reporter",
    "ResumeStarted",
    "TextReceived",
    "TextSent",
    "TicketIssued",
    "TransferFinished",
    "TransferStarted",
]


@dataclass(frozen=True, slots=True)
class CodeAllocated:
    """The sender's pairing code, to pass to the receiver; it works once, for ``valid_for``
    seconds (0: unknown)."""

    code: str
    valid_for: float = 0.0


@dataclass(frozen=True, slots=True)
class OfferPrepared:
    """The sender offers ``files`` files in ``total`` bytes; ``names``: the top-level names."""

    files: int
    total: int
    names: tuple[str, ...]
    streaming: bool = False
    """A file's size is unknown until its end (``send -``): ``total`` counts the others."""


@dataclass(frozen=True, slots=True)
class TicketIssued:
    """``receive --listen``: the one-token ticket to pass to ``send --to``."""

    ticket: str


@dataclass(frozen=True, slots=True)
class PeerConnected:
    """The race picked a link: ``kind`` direct or relay, ``address`` peer or TURN server."""

    kind: str
    address: str

    @property
    def line(self) -> str:
        return f"connected: {self.kind} {self.address}"


@dataclass(frozen=True, slots=True)
class TextReceived:
    """``send --text``: the sender's message (raw: the UI escapes what could steer a terminal)."""

    text: str


@dataclass(frozen=True, slots=True)
class TextSent:
    """``send --text``: the receiver confirmed the message of ``characters`` characters."""

    characters: int


@dataclass(frozen=True, slots=True)
class LinkLost:
    """The link broke mid-transfer (``reason``); the session is trying to reconnect."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reconnected:
    """A new link replaced the lost one; the transfer continues at ``done`` of ``total`` bytes."""

    kind: str
    address: str
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class OfferReceived:
    """The receiver got an offer of ``files`` files in ``total`` bytes (``names``: the
    top-level names), to be saved into the folder ``output``. ``skipped_count``: entries of the
    sender's folders it leaves out (symlinks, sockets, devices, FIFOs), ``skipped`` the
    printable paths of the first of them."""

    files: int
    total: int
    names: tuple[str, ...]
    output: str = ""
    skipped: tuple[str, ...] = ()
    skipped_count: int = 0
    streaming: bool = False


@dataclass(frozen=True, slots=True)
class TransferStarted:
    """Data starts flowing: each file's manifest index, printable name and size, in order."""

    indexes: tuple[int, ...]
    names: tuple[str, ...]
    sizes: tuple[int, ...]
    direction: str  # "send" or "receive"
    streaming: bool = False
    """The size is unknown until the end (a stream, whose ``sizes`` entry is 0): bytes and
    rate only, no total, no percentage."""


@dataclass(frozen=True, slots=True)
class ResumeStarted:
    """File ``name`` continues at byte ``offset`` of ``size`` (a verified ``.part`` prefix)."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class ProgressUpdated:
    """``file_done`` bytes of file ``index`` (manifest order) and ``total_done`` overall."""

    index: int
    file_done: int
    total_done: int


@dataclass(frozen=True, slots=True)
class FileVerified:
    """A file's whole-content BLAKE3 digest matched on arrival (or was sent with this hash).

    ``saved_as``: on the receiver, the path (relative to the output folder) the file was saved
    under when it differs from ``name`` (``--rename``), else None."""

    name: str
    size: int
    blake3: str
    saved_as: str | None = None


SAME_CONTENT = "already there, same content"
LEFT_OUT = "not a regular file or folder"
"""Why a sender leaves an entry of its folders out (symlinks, sockets...); both sides say it."""
"""``FileSkipped.reason`` for a file whose BLAKE3 content the receiver already had."""


@dataclass(frozen=True, slots=True)
class FileSkipped:
    """A file was not sent: the receiver already had it (``reason``: "already there, same
    content", established by comparing BLAKE3 hashes, never size and mtime alone)."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class TransferFinished:
    """Everything arrived: counts, bytes moved over the link in this run, elapsed seconds
    (from the accepted offer to the last confirmation; the time at a prompt is not counted).

    ``direction``: "send" or "receive"; ``saved_to``: on the receiver, where the files went
    (the single top-level item's path, or the output folder)."""

    files: int
    total: int
    moved: int
    seconds: float
    direction: str = ""
    saved_to: str = ""


@dataclass(frozen=True, slots=True)
class NoticeIssued:
    """A one-line remark for the user (e.g. a skipped symlink); not shown in quiet mode."""

    text: str


Event = (
    CodeAllocated
    | OfferPrepared
    | TicketIssued
    | PeerConnected
    | LinkLost
    | Reconnected
    | TextReceived
    | TextSent
    | OfferReceived
    | TransferStarted
    | ResumeStarted
    | ProgressUpdated
    | FileVerified
    | FileSkipped
    | TransferFinished
    | NoticeIssued
)
Reporter = Callable[[Event], None]
