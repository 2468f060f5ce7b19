"""Short-lived rendezvous mailboxes keyed by nameplate (sans-IO, explicit clock).

Theory of operation: a mailbox has two seats, the sender's and the receiver's. A sender either
``allocate``\\ s a fresh nameplate (the store picks the first free one among the candidates the
adapter drew at random, so a client cannot choose a number another client holds) or ``open``\\ s
a chosen one; a receiver ``open``\\ s the nameplate it was told. Opening takes the named seat,
creating the mailbox if needed; a seat that is taken, or was taken and left, is refused (one PAKE
attempt per code). An ``open`` without a side (older clients) takes the first seat never used.

Bodies a side ``add``\\ s are relayed to the other side at once, or buffered until it joins. Every
mailbox is bounded in messages, bytes per message and bytes (counted over its whole life, relayed
or buffered) and in age; all mailboxes together are bounded in number (``max_mailboxes``) and in
bytes (``max_total_bytes``: the memory bound), and each client address in the seats it holds
(``max_mailboxes_per_ip``). When one side closes the other is told and a mailbox with no connected
side is forgotten; ``expire(now)`` drops mailboxes older than ``max_age`` and names the clients
to disconnect. Refusals raise ``PairingError`` whose message is the reason the server sends back.
``MailboxStore`` is the interface a shared (e.g. Redis) store implements.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from delshare.errors import PairingError
from delshare.pairing import wire

ClientId = int
MAX_SIDES = 2
SIDES = wire.SIDES  # seat 0 and seat 1
LOST = "rendezvous lost its state (its Redis restarted): ask for a new code"


@dataclass(frozen=True)
class MailboxLimits:
    """Bounds on what clients can make the rendezvous hold (``delshare relay --rendezvous-*``).

    The last four are enforced by the server adapter, per node: connections per client address,
    the message rate per address (a token bucket: ``message_rate`` per second, bursts up to
    ``message_burst``; a new connection costs one token), and how long a connection may stay
    without a mailbox.
    """

    max_mailboxes: int = 1000
    max_mailboxes_per_ip: int = 20
    max_messages: int = 64
    max_message_size: int = 16 * 1024
    max_bytes: int = 64 * 1024
    max_total_bytes: int = 32 * 1024 * 1024
    max_age: float = 600.0
    max_connections_per_ip: int = 40
    message_rate: float = 20.0
    message_burst: int = 100
    idle_timeout: float = 10.0


@dataclass(frozen=True)
class BodyRelayed:
    """Deliver ``body`` to ``client``."""

    client: ClientId
    body: str


@dataclass(frozen=True)
class PeerLeft:
    """The other side of ``client``'s mailbox closed."""

    client: ClientId


@dataclass(frozen=True)
class MailboxExpired:
    """``client``'s mailbox outlived ``max_age`` and was dropped."""

    client: ClientId


@dataclass(frozen=True)
class MailboxLost:
    """The store lost ``client``'s mailbox before its time (a shared store restarted)."""

    client: ClientId


Event = BodyRelayed | PeerLeft | MailboxExpired | MailboxLost


class MailboxStore(Protocol):
    """What the rendezvous server needs from a mailbox store."""

    limits: MailboxLimits

    def open(
        self,
        client: ClientId,
        nameplate: str,
        now: float,
        *,
        side: str | None = None,
        ip: str = "",
    ) -> list[Event]: ...
    def allocate(
        self, client: ClientId, candidates: Sequence[str], now: float, *, ip: str = ""
    ) -> str: ...
    def add(self, client: ClientId, body: str, now: float) -> list[Event]: ...
    def close(self, client: ClientId, now: float) -> list[Event]: ...
    def expire(self, now: float) -> list[Event]: ...
    def next_expiry(self) -> float | None: ...
    def paired(self, client: ClientId) -> bool: ...


class RendezvousRefused(PairingError):
    """A request the rendezvous refuses; ``label`` names the reason in metrics."""

    def __init__(self, reason: str, label: str) -> None:
        super().__init__(reason)
        self.label = label


def label_of(exc: PairingError) -> str:
    """The metrics label of a refusal (``protocol`` for malformed requests)."""
    return exc.label if isinstance(exc, RendezvousRefused) else "protocol"


def seat_of(side: str | None) -> int | None:
    """Seat 0 (sender) or 1 (receiver); None for an older client that gave no side."""
    if side is None:
        return None
    if side not in SIDES:
        raise RendezvousRefused(f"side must be one of {', '.join(SIDES)}", "protocol")
    return SIDES.index(side)


def in_use(nameplate: str, side: str) -> str:
    """The refusal for a seat that is taken (or was taken)."""
    return (
        f"code number {nameplate} is already in use by another {side}: "
        "ask for a new code (or let the server choose the number)"
    )


def refusal(
    label: str, limits: MailboxLimits, nameplate: str = "", side: str = ""
) -> RendezvousRefused:
    """The refusal named ``label`` (shared by the in-memory and the Redis store)."""
    reasons = {
        "busy": "server busy: too many open mailboxes",
        "no_number": "server busy: no free code number, try again later",
        "memory": "server busy: rendezvous memory limit reached, try again later",
        "ip_mailboxes": f"too many open mailboxes from your address (limit "
        f"{limits.max_mailboxes_per_ip}): close some, or try again later",
        "expired": "mailbox expired",
        "full": "mailbox full: this code is already in use by two peers",
        "in_use": in_use(nameplate, side),
        "size": f"message too large (limit {limits.max_message_size} bytes)",
        "messages": "mailbox message limit reached",
        "bytes": "mailbox byte limit reached",
    }
    return RendezvousRefused(reasons.get(label, label), label if label in reasons else "protocol")


@dataclass
class _Mailbox:
    nameplate: str
    created: float
    seats: list[ClientId | None] = field(default_factory=lambda: [None, None])
    used: list[bool] = field(default_factory=lambda: [False, False])
    connected: set[ClientId] = field(default_factory=set)
    pending: list[str] = field(default_factory=list)
    messages: int = 0
    size: int = 0

    def other(self, client: ClientId) -> ClientId | None:
        return next((m for m in self.seats if m is not None and m != client), None)


class MailboxTable:
    """In-memory ``MailboxStore``."""

    def __init__(self, limits: MailboxLimits | None = None) -> None:
        self.limits = limits or MailboxLimits()
        self._mailboxes: dict[str, _Mailbox] = {}
        self._client_mailbox: dict[ClientId, _Mailbox] = {}
        self._client_ip: dict[ClientId, str] = {}
        self._per_ip: Counter[str] = Counter()
        self.total_bytes = 0  # charged bytes of every live mailbox (the memory bound)

    def __len__(self) -> int:
        return len(self._mailboxes)

    def __contains__(self, nameplate: object) -> bool:
        return nameplate in self._mailboxes

    def open(
        self,
        client: ClientId,
        nameplate: str,
        now: float,
        *,
        side: str | None = None,
        ip: str = "",
    ) -> list[Event]:
        """Take ``side``'s seat of ``nameplate``'s mailbox (created if absent).

        Returns the bodies buffered for us.
        """
        seat = seat_of(side)
        self._check_client(client, ip)
        mailbox = self._mailboxes.get(nameplate) or self._create(nameplate, now)
        self._check_age(mailbox, now)
        if seat is None:
            seat = next((i for i in range(MAX_SIDES) if not mailbox.used[i]), None)
            if seat is None:
                raise refusal("full", self.limits)
        elif mailbox.used[seat]:
            raise refusal("in_use", self.limits, nameplate, SIDES[seat])
        return self._seat(mailbox, seat, client, ip)

    def allocate(
        self, client: ClientId, candidates: Sequence[str], now: float, *, ip: str = ""
    ) -> str:
        """Give ``client`` the sender's seat of a fresh mailbox: the first free candidate."""
        self._check_client(client, ip)
        for nameplate in candidates:
            if nameplate not in self._mailboxes:
                self._seat(self._create(nameplate, now), 0, client, ip)
                return nameplate
        raise refusal("no_number", self.limits)

    def paired(self, client: ClientId) -> bool:
        """Whether both seats of ``client``'s mailbox are taken."""
        mailbox = self._client_mailbox.get(client)
        return mailbox is not None and all(mailbox.used)

    def add(self, client: ClientId, body: str, now: float) -> list[Event]:
        """Relay ``body`` to the other side, or buffer it until that side joins."""
        mailbox = self._client_mailbox.get(client)
        if mailbox is None:
            raise RendezvousRefused("open a mailbox first", "protocol")
        self._check_age(mailbox, now)
        self._charge(mailbox, len(body.encode("utf-8")))
        other = mailbox.other(client)
        if other is None:
            mailbox.pending.append(body)
            return []
        return [BodyRelayed(other, body)] if other in mailbox.connected else []

    def close(self, client: ClientId, now: float) -> list[Event]:
        """``client`` went away; tell the other side, forget an empty mailbox."""
        mailbox = self._client_mailbox.pop(client, None)
        self._release_ip(client)
        if mailbox is None:
            return []
        mailbox.connected.discard(client)
        if not mailbox.connected:
            self._drop(mailbox)
            return []
        return [PeerLeft(other) for other in mailbox.connected]

    def expire(self, now: float) -> list[Event]:
        """Drop mailboxes older than ``max_age``; their connected clients are to be closed."""
        events: list[Event] = []
        for mailbox in [m for m in self._mailboxes.values() if self._expired(m, now)]:
            self._drop(mailbox)
            for client in mailbox.connected:
                del self._client_mailbox[client]
                self._release_ip(client)
                events.append(MailboxExpired(client))
        return events

    def next_expiry(self) -> float | None:
        """When the oldest mailbox expires (the adapter's timer), or None."""
        created = [m.created for m in self._mailboxes.values()]
        return min(created) + self.limits.max_age if created else None

    def _check_client(self, client: ClientId, ip: str) -> None:
        if client in self._client_mailbox:
            raise RendezvousRefused("mailbox already open on this connection", "protocol")
        if ip and self._per_ip[ip] >= self.limits.max_mailboxes_per_ip:
            raise refusal("ip_mailboxes", self.limits)

    def _seat(self, mailbox: _Mailbox, seat: int, client: ClientId, ip: str) -> list[Event]:
        mailbox.seats[seat] = client
        mailbox.used[seat] = True
        mailbox.connected.add(client)
        self._client_mailbox[client] = mailbox
        if ip:
            self._client_ip[client] = ip
            self._per_ip[ip] += 1
        events: list[Event] = [BodyRelayed(client, body) for body in mailbox.pending]
        mailbox.pending.clear()
        return events

    def _release_ip(self, client: ClientId) -> None:
        ip = self._client_ip.pop(client, None)
        if ip is not None:
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]

    def _create(self, nameplate: str, now: float) -> _Mailbox:
        if len(self._mailboxes) >= self.limits.max_mailboxes:
            raise refusal("busy", self.limits)
        mailbox = self._mailboxes[nameplate] = _Mailbox(nameplate, now)
        return mailbox

    def _drop(self, mailbox: _Mailbox) -> None:
        if self._mailboxes.get(mailbox.nameplate) is mailbox:
            del self._mailboxes[mailbox.nameplate]
            self.total_bytes -= mailbox.size

    def _expired(self, mailbox: _Mailbox, now: float) -> bool:
        return now - mailbox.created >= self.limits.max_age

    def _check_age(self, mailbox: _Mailbox, now: float) -> None:
        if self._expired(mailbox, now):
            raise refusal("expired", self.limits)

    def _charge(self, mailbox: _Mailbox, size: int) -> None:
        limits = self.limits
        if size > limits.max_message_size:
            raise refusal("size", limits)
        if mailbox.messages + 1 > limits.max_messages:
            raise refusal("messages", limits)
        if mailbox.size + size > limits.max_bytes:
            raise refusal("bytes", limits)
        if self.total_bytes + size > limits.max_total_bytes:
            raise refusal("memory", limits)
        mailbox.messages += 1
        mailbox.size += size
        self.total_bytes += size
