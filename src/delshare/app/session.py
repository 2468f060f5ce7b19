"""A transfer that outlives its link: reconnect after a break and resume where it stopped.

Theory of operation. A transfer runs in *rounds*, one per link. When a round fails because the
link broke (reset, closed, stalled: :class:`TransferInterruptedError`), both sides report
``link lost: REASON; reconnecting…`` and meet again in a rendezvous mailbox whose nameplate and
sealing key both derive from the session key (:func:`reconnect_names`): only the two peers can
name it, and what a stranger seals there does not open. Through it they exchange fresh
candidates (a new listener, a new TURN allocation) exactly as after pairing
(:func:`delshare.app.connect.connect_peer`), race again, and the winning link proves knowledge of
the session key in its record handshake; a peer that cannot is never used. The next round is an
ordinary offer: the receiver offers its verified ``.part`` prefixes, files already in place are
skipped, and the transfer continues from the verified offset (``reconnected: relay SERVER,
resuming at 512.0 MiB of 1.5 GiB``).

Every failed attempt (rendezvous unreachable, mailbox still held by the peer's previous attempt,
race lost) is retried after a short pause until ``reconnect_timeout`` seconds have passed since
the break; then the round's original error is raised, as if reconnection did not exist, and the
``.part`` files stay for a later run. The mailbox of a finished attempt is closed at once, so it
is gone (both sides left) before the next break needs it.

One nameplate serves the whole session, not one per break: both sides always agree on it, even
when one saw a break the other never did. A rendezvous server could replay an old attempt's
sealed candidates; that only makes the race fail (every link still needs the key), which the
server could cause anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

from delshare.app.common import SessionOptions, notice_reporter
from delshare.app.connect import (
    Connection,
    Gathered,
    HandedTurn,
    connect_peer,
    gather,
    race_gathered,
)
from delshare.app.events import LinkLost, NoticeIssued, Reconnected, Reporter
from delshare.errors import DelshareError
from delshare.link.candidates import Candidate, start_listener
from delshare.link.records import LinkClosedError, Role
from delshare.pairing import derive_key, rejoin
from delshare.transfer.errors import StreamInterruptedError, TransferInterruptedError
from delshare.transfer.manifest import Manifest

__all__ = [
    "FinishedLinkLostError",
    "Healer",
    "ResumeAnnouncer",
    "drop",
    "reconnect_names",
    "rendezvous_healer",
    "run_rounds",
    "ticket_healer",
    "with_handed_turn",
]

T = TypeVar("T")
RETRY_PAUSE = 1.0  # first pause between reconnect attempts; doubled after each failure ...
RETRY_PAUSE_MAX = 8.0  # ... up to this, so a long outage costs the rendezvous few requests
FINISHED_RECONNECT = 15.0  # seconds a side that has finished waits for a reconnection
TICKET_RACE = 10.0  # seconds per ticket reconnect attempt (the peer may not listen yet)
CLOSE_TIMEOUT = 5.0
_NAMEPLATE_PURPOSE = b"delshare/reconnect/v1 nameplate"
_KEY_PURPOSE = b"delshare/reconnect/v1 mailbox"
_PREFIXES = ("link lost while sending: ", "link lost while receiving: ")


class FinishedLinkLostError(TransferInterruptedError):
    """The link broke after this side finished its part: the peer may still need one more round
    (it may not have heard the last message), so a reconnection is waited for, but only for
    ``FINISHED_RECONNECT`` seconds, not the whole reconnect deadline: a peer that simply exited
    without a clean CLOSE must not keep a finished side waiting for minutes."""


def retry_pauses() -> Iterator[float]:
    """Pauses between reconnect attempts: exponential backoff from ``RETRY_PAUSE`` to
    ``RETRY_PAUSE_MAX``, so both sides of a long outage do not poll the rendezvous every second
    (its per-address request rate is bounded, and a NAT may put many users behind one address)."""
    pause = RETRY_PAUSE
    while True:
        yield pause
        pause = min(pause * 2, RETRY_PAUSE_MAX)


def reconnect_names(session_key: bytes) -> tuple[str, bytes]:
    """The reconnect mailbox's nameplate and sealing key, both derived from the session key."""
    nameplate = "r" + derive_key(session_key, _NAMEPLATE_PURPOSE).hex()[:40]
    return nameplate, derive_key(session_key, _KEY_PURPOSE)


Attempt = Callable[[float], Awaitable[Connection]]
"""One try at a new link, given the seconds left; raises DelshareError or OSError if it fails."""


@dataclass(frozen=True)
class Healer:
    """How a side reconnects: one ``attempt`` repeated until ``options.reconnect_timeout``."""

    attempt: Attempt
    options: SessionOptions
    report: Reporter

    async def reconnect(self, lost: TransferInterruptedError) -> Connection:
        """A new authenticated link to the same peer; raises ``lost`` when the deadline passes
        (``reconnect_timeout``, or at most ``FINISHED_RECONNECT`` for a side already finished)."""
        self.report(LinkLost(_reason(lost)))
        timeout = self.options.reconnect_timeout
        if isinstance(lost, FinishedLinkLostError):
            timeout = min(timeout, FINISHED_RECONNECT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = "no attempt finished"
        pauses = retry_pauses()
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    return await self.attempt(remaining)
            except TimeoutError:
                break
            except (DelshareError, OSError) as exc:
                last = str(exc) or type(exc).__name__
            await asyncio.sleep(min(next(pauses), max(0.0, deadline - loop.time())))
        self.report(NoticeIssued(f"could not reconnect within {timeout:g} s: {last}"))
        raise lost


async def with_handed_turn(options: SessionOptions, handed: HandedTurn | None) -> SessionOptions:
    """``options`` with the TURN server the rendezvous handed out for this session, if any, so
    a reconnection can allocate on it again (its short-lived credentials must still hold)."""
    if handed is None:
        return options
    return replace(options, connect=await handed.options(options.connect))


def rendezvous_healer(
    rendezvous: str, session_key: bytes, role: Role, options: SessionOptions, report: Reporter
) -> Healer:
    """Reconnect through the rendezvous mailbox named by the session key (see above)."""
    nameplate, key = reconnect_names(session_key)
    side = "sender" if role in ("sender", "initiator") else "receiver"

    async def attempt(remaining: float) -> Connection:
        paired = await rejoin(rendezvous, nameplate, key, side, timeout=remaining, ca=options.ca)
        async with paired:  # closed soon after: the mailbox must be gone before the next break
            return await connect_peer(paired, role, options.connect, notice_reporter(report))

    return Healer(attempt, options, report)


def ticket_healer(
    link_key: bytes, role: Role, peer: list[Candidate], port: int | None,
    options: SessionOptions, report: Reporter,
) -> Healer | None:  # fmt: skip
    """Reconnect a ticket's link (no rendezvous): the receiver listens again on the ticket's
    port, the sender dials the ticket's addresses again; the handshake needs the ticket key.
    None when the receiver had no listener (a relayed ticket cannot be reconnected)."""
    if role == "receiver" and port is None:
        return None

    async def attempt(remaining: float) -> Connection:
        connect = replace(options.connect, total_timeout=min(remaining, TICKET_RACE))
        if role == "receiver":
            assert port is not None
            gathered = Gathered(await start_listener(port), None, [])
            return await race_gathered(gathered, link_key, role, "direct", [], connect)
        gathered = await gather(connect, notice_reporter(report), listen=False)
        # Nothing can call us back: once every dial failed, try again after the pause.
        return await race_gathered(
            gathered, link_key, role, connect.mode, peer, connect, _nothing_to_wait_for
        )

    return Healer(attempt, options, report)


async def _nothing_to_wait_for() -> None:
    return None


def _closed_on_purpose(lost: TransferInterruptedError) -> bool:
    """The peer ended the link with an authenticated CLOSE (it gave up, was interrupted):
    nobody will come back to reconnect."""
    cause = lost.__cause__
    return isinstance(cause, LinkClosedError) and cause.clean


def _reason(lost: TransferInterruptedError) -> str:
    text = str(lost)
    for prefix in _PREFIXES:
        text = text.removeprefix(prefix)
    return text


async def drop(connection: Connection) -> None:
    """Give up a broken link at once (no CLOSE record to a peer that is gone), then its relay."""
    connection.link.channel.abort()
    relay, connection.relay = connection.relay, None
    if relay is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await relay.close()


async def run_rounds(
    connection: Connection,
    healer: Healer | None,
    run: Callable[[Connection, int], Awaitable[T]],
) -> T:
    """``run(connection, round)`` until one round finishes; after a broken link, reconnect
    (``healer``; None: fail as before) and run the next round on the new link.

    Closes the last connection. Raises what the last round raised, or the broken round's
    error once reconnecting has timed out.
    """
    number = 0
    try:
        while True:
            try:
                return await run(connection, number)
            except TransferInterruptedError as lost:
                if (
                    healer is None
                    or healer.options.reconnect_timeout <= 0
                    or _closed_on_purpose(lost)
                    or isinstance(lost, StreamInterruptedError)  # its bytes are gone
                ):
                    raise
                await drop(connection)
                connection = await healer.reconnect(lost)
                number += 1
    finally:
        await connection.close()


class ResumeAnnouncer:
    """Reports ``reconnected: KIND ADDRESS, resuming at DONE of TOTAL`` once per new link, when
    the round's first ``file-begin`` tells where the transfer continues."""

    def __init__(self, report: Reporter, manifest: Manifest) -> None:
        self._report = report
        # manifest index -> size, files only
        self._sizes = {i: e.size for i, e in enumerate(manifest.entries) if e.kind == "file"}
        self._total = sum(self._sizes.values())
        self._pending: Connection | None = None

    def new_link(self, connection: Connection) -> None:
        self._pending = connection

    def file_begins(self, index: int, offset: int) -> None:
        """Files before ``index`` are complete (sent in manifest order); summed only when a new
        link waits to be announced, not for every file."""
        if self._pending is not None:
            self._announce(sum(size for i, size in self._sizes.items() if i < index) + offset)

    def finished(self) -> None:
        self._announce(self._total)

    def _announce(self, done: int) -> None:
        connection, self._pending = self._pending, None
        if connection is not None:
            path = connection.link.path
            self._report(Reconnected(path.kind, path.address, done, self._total))
