"""What send and receive share: options, usage errors, progress plumbing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from delshare.app.connect import ConnectOptions
from delshare.app.events import NoticeIssued, ProgressUpdated, Reporter
from delshare.errors import DelshareError
from delshare.transfer.progress import ProgressCallback

__all__ = [
    "SessionOptions",
    "UsageProblem",
    "exit_code_for",
    "notice_reporter",
    "progress_reporter",
]


class UsageProblem(DelshareError):
    """The command line cannot work as given (exit code 2); nothing was sent."""


@dataclass(frozen=True)
class SessionOptions:
    """Rendezvous server (None: LAN mode), link options, how long to wait for the peer."""

    rendezvous: str | None
    connect: ConnectOptions
    pair_timeout: float = 30.0


def notice_reporter(report: Reporter) -> Callable[[str], None]:
    """Adapt a plain-text notice callback to ``NoticeIssued`` events."""

    def notice(text: str) -> None:
        report(NoticeIssued(text))

    return notice


def progress_reporter(report: Reporter) -> ProgressCallback:
    """Adapt the transfer layer's progress callback to ``ProgressUpdated`` events."""

    def callback(index: int, file_done: int, total_done: int) -> None:
        report(ProgressUpdated(index, file_done, total_done))

    return callback


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code: 2 usage, 3 refused (by the peer or declined here), else 1."""
    from delshare.transfer.errors import DeclinedError, RefusedByPeerError

    if isinstance(exc, UsageProblem):
        return EXIT_USAGE
    if isinstance(exc, RefusedByPeerError | DeclinedError):
        return EXIT_REFUSED
    return EXIT_FAILED
