"""The manual flow: ``receive --listen`` prints a ticket, ``send --to TICKET`` connects to it.

No rendezvous and no code: the ticket (:mod:`delshare.link.ticket`) carries the receiver's
candidates and a one-time key. The receiver gathers as usual (listener, TURN allocation),
permits the ``--permit`` IPs on its allocation (it cannot learn the sender's address any other
way), prints ``ticket: ...`` and waits for the sender's race; the sender races to the ticket's
addresses. Both prove knowledge of the ticket key in the record handshake. After a broken link
the receiver listens again on the ticket's port and the sender dials the ticket's addresses
again (:func:`delshare.app.session.ticket_healer`), with the same key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import BinaryIO

from delshare.app.common import SessionOptions, UsageProblem, notice_reporter
from delshare.app.connect import LINK_KEY_PURPOSE, Gathered, gather, race_gathered
from delshare.app.events import NoticeIssued, Reporter, TicketIssued
from delshare.app.receive import Ask, AskOverwrite, ReceiveOptions, check_output, receive_over
from delshare.app.send import build, send_over, streamed
from delshare.app.session import ticket_healer
from delshare.errors import PairingError
from delshare.link.candidates import Candidate, CandidateError
from delshare.link.ticket import MAX_ADDRESSES, Ticket, TicketAddress, parse_ticket
from delshare.pairing import derive_key

__all__ = ["LISTEN_WAIT", "run_listen", "run_send_to"]

LISTEN_WAIT = 3600.0  # how long ``receive --listen`` waits for the sender
NO_PERMIT_NOTE = (
    "no --permit: the TURN server lets no sender reach the relayed address in the ticket; "
    "a sender that cannot reach this device directly needs `--permit SENDER_PUBLIC_IP`"
)


async def _nothing_else_can_connect() -> None:
    """``send --to`` only dials (the receiver never learns our address): once every dial has
    failed the race is lost, with no reason to wait for its timeout."""


def _ticket_for(gathered: Gathered) -> Ticket:
    addresses = [TicketAddress(c.kind, c.host, c.port) for c in gathered.candidates]
    return Ticket(tuple(addresses[:MAX_ADDRESSES]))


async def run_listen(
    session: SessionOptions,
    options: ReceiveOptions,
    permit: Sequence[str],
    report: Reporter,
    ask: Ask,
    ask_overwrite: AskOverwrite | None = None,
) -> None:
    """Print a ticket, wait for the sender holding it, receive its offer."""
    check_output(options)
    gathered = await gather(session.connect, notice_reporter(report))
    try:
        if permit and gathered.relay is None:
            raise UsageProblem("--permit needs a TURN server (--turn) to permit on")
        if gathered.relay is not None and permit:
            for ip in await gathered.relay.permit(list(permit)):
                report(NoticeIssued(f"the TURN server refused a permission for {ip}"))
        elif gathered.relay is not None:
            report(NoticeIssued(NO_PERMIT_NOTE))
        ticket = _ticket_for(gathered)
    except BaseException:
        await gathered.close()
        raise
    report(TicketIssued(ticket.encode()))
    key = derive_key(ticket.key, LINK_KEY_PURPOSE)
    connect = replace(session.connect, total_timeout=LISTEN_WAIT)
    port = gathered.listener.port if gathered.listener is not None else None
    connection = await race_gathered(gathered, key, "receiver", connect.mode, [], connect)
    healer = None
    if session.reconnect_timeout > 0:
        healer = ticket_healer(key, "receiver", [], port, session, report)
    await receive_over(
        connection, options, report, ask, ask_overwrite, healer, session.stall_timeout
    )


async def run_send_to(paths: Sequence[str], ticket_text: str, session: SessionOptions,
                      report: Reporter, stream: BinaryIO | None = None) -> None:  # fmt: skip
    """Send ``paths`` (or ``stream``: :func:`run_send`) to the receiver that printed
    ``ticket_text``."""
    built = build(paths) if stream is None else streamed(paths, stream)
    try:
        ticket = parse_ticket(ticket_text)
    except PairingError as exc:
        raise UsageProblem(str(exc)) from exc
    try:
        peer = [Candidate.from_wire(vars(a)) for a in ticket.addresses]
    except CandidateError as exc:
        raise UsageProblem(f"bad ticket: {exc}") from exc
    options = session.connect
    gathered = await gather(options, notice_reporter(report), listen=False)
    key = derive_key(ticket.key, LINK_KEY_PURPOSE)
    connection = await race_gathered(
        gathered, key, "sender", options.mode, peer, options, _nothing_else_can_connect
    )
    healer = None
    if session.reconnect_timeout > 0 and not built.manifest.streaming:
        healer = ticket_healer(key, "sender", peer, None, session, report)
    await send_over(connection, built, report, healer, session.stall_timeout)
