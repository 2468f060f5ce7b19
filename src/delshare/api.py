"""The Python API: ``await delshare.send(paths)`` and ``await delshare.receive(code, output=...)``.

Both run the same app code as the ``delshare`` command (:mod:`delshare.app.send`,
:mod:`delshare.app.receive`), report the same typed events (:mod:`delshare.app.events`) to an
optional ``events`` callback, and return a :class:`TransferResult`. Failures raise the
exceptions of :mod:`delshare.errors` (``PairingError``, ``LinkError``, ``TransferError``...), and
a setting the CLI would refuse raises :class:`delshare.app.common.UsageProblem`. Settings are
explicit arguments: the API reads no configuration file and no ``DELSHARE_*`` variable.
See docs/api.md.

Two layers: :func:`send` and :func:`receive` turn their arguments into session options, then call
:func:`send_with` and :func:`receive_with`, which take options already resolved. The ``delshare``
command is a thin client of that lower layer: it resolves flags, ``DELSHARE_*`` variables and
the config file into the same options and calls :func:`send_with` / :func:`receive_with` with its
renderer as the ``events`` callback (``--to`` and ``--listen`` go through them too).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from delshare.app.common import SessionOptions, UsageProblem
from delshare.app.connect import ConnectOptions
from delshare.app.events import (
    CodeAllocated,
    Event,
    FileVerified,
    OfferReceived,
    PeerConnected,
    Reconnected,
    TextReceived,
    TransferFinished,
)
from delshare.link.race import Mode
from delshare.link.relay import TurnSettings

if TYPE_CHECKING:
    from delshare.app.receive import Ask, AskOverwrite, ReceiveOptions

__all__ = [
    "FileResult",
    "TransferResult",
    "TurnServer",
    "receive",
    "receive_with",
    "send",
    "send_with",
]

EventCallback = Callable[[Event], None]


@dataclass(frozen=True)
class TurnServer:
    """A TURN server to relay through: URI and a password, or a REST shared ``secret``."""

    uri: str
    user: str | None = None
    password: str | None = None
    secret: str | None = None


@dataclass(frozen=True)
class FileResult:
    """One file that arrived intact (its BLAKE3 digest checked by both sides)."""

    name: str
    size: int
    blake3: str


@dataclass
class TransferResult:
    """What a ``send`` or ``receive`` did."""

    code: str | None = None
    connected: str | None = None  # e.g. "direct 192.0.2.4:40123" or "relay 203.0.113.5:3478"
    files: list[FileResult] = field(default_factory=list)
    total: int = 0
    moved: int = 0  # bytes moved over the link in this run (less after a resume)
    seconds: float = 0.0
    reconnects: int = 0
    text: str | None = None  # a text message, when that is what was sent


class _Collector:
    """Forwards every event and keeps what the result needs."""

    def __init__(self, forward: EventCallback | None) -> None:
        self.result = TransferResult()
        self._forward = forward

    def __call__(self, event: Event) -> None:
        match event:
            case CodeAllocated(code):
                self.result.code = code
            case PeerConnected(kind, address):
                self.result.connected = f"{kind} {address}"
            case Reconnected(kind, address, _done, _total):
                self.result.connected = f"{kind} {address}"
                self.result.reconnects += 1
            case FileVerified(name, size, digest):
                self.result.files.append(FileResult(name, size, digest))
            case TransferFinished(_files, total, moved, seconds):
                self.result.total, self.result.moved, self.result.seconds = total, moved, seconds
            case TextReceived(text):
                self.result.text = text
        if self._forward is not None:
            self._forward(event)


def _session(
    rendezvous: str | None,
    turn: Sequence[TurnServer],
    mode: Mode,
    reconnect_timeout: float,
    pair_timeout: float,
) -> SessionOptions:
    from delshare.turn.uri import TurnUriError, parse_turn_uri

    servers = []
    for server in turn:
        try:
            uri = parse_turn_uri(server.uri)
        except TurnUriError as exc:
            raise UsageProblem(str(exc)) from exc
        servers.append(TurnSettings(uri, server.user, server.password, server.secret))
    connect = ConnectOptions(
        turn=servers[0] if servers else None, mode=mode, more_turn=tuple(servers[1:])
    )
    return SessionOptions(rendezvous, connect, pair_timeout, reconnect_timeout=reconnect_timeout)


async def send(
    paths: Sequence[str | os.PathLike[str]] = (),
    *,
    code: str | None = None,
    text: str | None = None,
    stream: BinaryIO | None = None,
    rendezvous: str | None = None,
    turn: Sequence[TurnServer] = (),
    mode: Mode = "any",
    reconnect_timeout: float = 120.0,
    wait: float = 900.0,
    events: EventCallback | None = None,
) -> TransferResult:
    """Send ``paths`` (or the message ``text``, or ``stream`` read to its end as one file named
    ``paths[0]`` or ``stdin``) to whoever uses the code; return once the receiver confirmed
    everything. A stream is sent as it is read, its size unknown, and never resumed.

    The code is ``code``, or one the rendezvous allocates: the first event is a
    :class:`~delshare.app.events.CodeAllocated` carrying it (pass ``events`` to show it), and the
    result has it too. ``rendezvous=None`` serves one on the local network (LAN mode).
    ``mode``: ``"any"``, ``"direct"`` or ``"relay"``. ``wait``: seconds to wait for the receiver.
    """
    options = _session(rendezvous, turn, mode, reconnect_timeout, wait)
    names = [os.fspath(p) for p in paths]
    return await send_with(names, options, code=code, text=text, stream=stream, events=events)


async def send_with(
    paths: Sequence[str],
    options: SessionOptions,
    *,
    code: str | None = None,
    text: str | None = None,
    stream: BinaryIO | None = None,
    ticket: str | None = None,
    events: EventCallback | None = None,
) -> TransferResult:
    """:func:`send` with its settings already resolved into ``options`` (what the CLI calls);
    ``ticket``: send to the receiver that printed it (``receive --listen``), no code."""
    collector = _Collector(events)
    if ticket is not None:
        from delshare.app.manual import run_send_to  # with --to only

        await run_send_to(paths, ticket, options, collector, stream)
    else:
        from delshare.app.send import run_send

        await run_send(paths, code, options, collector, text=text, stream=stream)
    return collector.result


async def receive(
    code: str,
    *,
    output: str | os.PathLike[str] = ".",
    rendezvous: str | None = None,
    turn: Sequence[TurnServer] = (),
    mode: Mode = "any",
    overwrite: bool = False,
    rename: bool = False,
    accept: Callable[[OfferReceived], Awaitable[bool]] | None = None,
    reconnect_timeout: float = 120.0,
    wait: float = 30.0,
    events: EventCallback | None = None,
) -> TransferResult:
    """Receive what the holder of ``code`` sends into the folder ``output``.

    ``accept`` decides on the offer (None: accept it); existing files fail the offer unless
    ``overwrite`` or ``rename``. A text message is returned in ``result.text``.
    """
    from delshare.app.receive import ReceiveOptions

    options = _session(rendezvous, turn, mode, reconnect_timeout, wait)
    receive_options = ReceiveOptions(os.fspath(output), overwrite, rename, yes=accept is None)

    async def ask(offer: OfferReceived) -> bool:
        return True if accept is None else await accept(offer)

    return await receive_with(code, options, receive_options, ask, events=events)


async def receive_with(
    code: str | None,
    options: SessionOptions,
    receive_options: ReceiveOptions,
    ask: Ask,
    ask_overwrite: AskOverwrite | None = None,
    *,
    permit: Sequence[str] = (),
    events: EventCallback | None = None,
) -> TransferResult:
    """:func:`receive` with its settings already resolved (what the CLI calls). ``code=None``
    listens instead (``receive --listen``: a ``TicketIssued`` event carries the ticket; only
    senders from ``permit`` addresses, if any, are let in). ``ask`` decides on the offer,
    ``ask_overwrite`` (None: never asked) on replacing existing files."""
    collector = _Collector(events)
    if code is None:
        from delshare.app.manual import run_listen  # with --listen only

        await run_listen(options, receive_options, permit, collector, ask, ask_overwrite)
    else:
        from delshare.app.receive import run_receive

        await run_receive(code, options, receive_options, collector, ask, ask_overwrite)
        collector.result.code = code
    return collector.result
