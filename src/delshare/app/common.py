"""What send and receive share: options, usage errors, progress plumbing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from delshare.app.events import NoticeIssued, ProgressUpdated, Reporter
from delshare.app.units import human_size
from delshare.errors import DelshareError, PairingError
from delshare.transfer.progress import ProgressCallback
from delshare.transfer.timeouts import STALL_TIMEOUT

if TYPE_CHECKING:  # `delshare send --help` imports this module, not the link code
    from delshare.app.connect import ConnectOptions

__all__ = [
    "CODE_VALID_FOR",
    "NEW_CODE",
    "RENDEZVOUS_CONNECT_TIMEOUT",
    "SessionOptions",
    "UsageProblem",
    "check_rendezvous_url",
    "human_size",
    "notice_reporter",
    "progress_reporter",
    "reach_rendezvous",
]


class UsageProblem(DelshareError):
    """The command line cannot work as given (exit code 2); nothing was sent."""


@dataclass(frozen=True)
class SessionOptions:
    """Rendezvous server (None: LAN mode), link options, how long to wait for the peer.

    ``reconnect_timeout``: how long a broken link may take to heal (0: fail at once, as before
    reconnection existed); ``stall_timeout``: seconds without progress that count as a broken
    link.
    """

    rendezvous: str | None
    connect: ConnectOptions
    pair_timeout: float = 30.0
    reconnect_timeout: float = 120.0
    stall_timeout: float = STALL_TIMEOUT
    ca: str | None = None
    """A CA file to trust for a ``wss:`` rendezvous server instead of the system's."""


def check_rendezvous_url(url: str) -> None:
    """UsageProblem unless ``url`` is a ``ws://`` or ``wss://`` URL with a host and a valid port
    (checked before a code is printed)."""
    from urllib.parse import urlsplit

    example = "e.g. ws://relay.example:4000"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UsageProblem(f"--rendezvous {url!r} has a bad port ({example})") from None
    if parts.scheme not in ("ws", "wss"):
        raise UsageProblem(f"--rendezvous {url!r} must start with ws:// or wss:// ({example})")
    if not parts.hostname or port == 0:
        raise UsageProblem(f"--rendezvous {url!r} needs a host and a port ({example})")


RENDEZVOUS_CONNECT_TIMEOUT = 10.0
"""Seconds for the rendezvous server to answer the WebSocket handshake: a port that accepts
TCP but is no rendezvous (not a WebSocket server) fails in this time, not at a pairing timeout."""
CODE_VALID_FOR = 600.0
"""How long a code works: the sender stops waiting then, as `delshare relay`'s rendezvous
forgets a mailbox after this age by default."""
NEW_CODE = "ask the sender for a new code (codes are single-use)"


async def reach_rendezvous(
    url: str, timeout: float = RENDEZVOUS_CONNECT_TIMEOUT, ca: str | None = None
) -> None:
    """Open and close one WebSocket connection to ``url``; PairingError naming the URL and the
    likely cause if that fails (checked before a code is printed). ``ca``: as ``--ca``."""
    import asyncio
    from urllib.parse import urlsplit

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidURI

    from delshare.tls import client_context, describe_secure_connect_error

    secure = url.lower().startswith("wss://")
    tls = client_context(ca) if secure else None  # --ca, else DELSHARE_CA, else the system's
    try:
        async with asyncio.timeout(timeout):
            connection = await connect(
                url, proxy=None, compression=None, open_timeout=None, ssl=tls
            )
            await connection.close()
    except TimeoutError:
        raise PairingError(
            f"rendezvous server {url} did not answer the WebSocket handshake in {timeout:g} s: "
            "is it a delshare rendezvous (`delshare relay`) on that port?"
        ) from None
    except (InvalidHandshake, InvalidURI) as exc:
        raise PairingError(
            f"{url} is not a delshare rendezvous (WebSocket handshake failed: {exc}); "
            "check the --rendezvous URL"
        ) from exc
    except OSError as exc:
        cause = describe_secure_connect_error(exc, urlsplit(url).hostname or "") if secure else None
        if cause is not None:  # a TLS failure: its cause says what to change
            raise PairingError(f"cannot reach rendezvous server {url}: {cause}") from exc
        raise PairingError(
            f"cannot reach rendezvous server {url}: {exc.strerror or exc}; "
            "check the --rendezvous URL and that the server runs"
        ) from exc


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
