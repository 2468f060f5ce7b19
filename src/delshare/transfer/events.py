"""What the transfer layer tells its caller as a transfer goes: one event per message or file.

:func:`delshare.transfer.sender.send_files` and :func:`delshare.transfer.receiver.receive_files`
take an ``on_event`` callable and call it, on the event loop, with these frozen events as the
conversation of :mod:`delshare.transfer.protocol` passes each point: the offer arrived (before it
is planned, so an app can show it before any question), a file's data starts (``offset`` > 0: a
resume), a file was sent with its digest or received, checked and put in place. Never per record:
the data path pays nothing for them. They are the transfer layer's view (manifest indexes, raw
digests, paths); the app turns them into the user-facing events of :mod:`delshare.app.events`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from delshare.transfer.manifest import Manifest

__all__ = [
    "FileReceived",
    "FileSent",
    "FileStarted",
    "OfferArrived",
    "ReceiveEvent",
    "ReceiveEventCallback",
    "SendEvent",
    "SendEventCallback",
]


@dataclass(frozen=True, slots=True)
class OfferArrived:
    """Receiver: the sender's offer arrived and is well formed; nothing is planned yet.

    ``skipped``: the first names of the entries the sender left out of its folders (symlinks,
    devices, ...), ``skipped_count`` how many it left out in all."""

    manifest: Manifest
    skipped: tuple[str, ...] = ()
    skipped_count: int = 0


@dataclass(frozen=True, slots=True)
class FileStarted:
    """Both sides: file ``index``'s data starts at ``offset`` (``file-begin`` sent or received;
    more than 0 when the receiver's verified ``.part`` prefix is resumed)."""

    index: int
    offset: int


@dataclass(frozen=True, slots=True)
class FileSent:
    """Sender: file ``index``'s last byte and its ``file-end`` went out; ``digest`` is the whole
    file's BLAKE3 (empty when the receiver waived it). The receiver's ``done`` confirms it."""

    index: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class FileReceived:
    """Receiver: file ``index`` matched the sender's BLAKE3 ``digest`` (unless waived, then empty),
    was fsynced and is in place at ``destination``."""

    index: int
    digest: bytes
    destination: Path


SendEvent = FileStarted | FileSent
"""What :func:`~delshare.transfer.sender.send_files` reports."""

ReceiveEvent = OfferArrived | FileStarted | FileReceived
"""What :func:`~delshare.transfer.receiver.receive_files` reports."""

SendEventCallback = Callable[[SendEvent], None]
ReceiveEventCallback = Callable[[ReceiveEvent], None]
