"""Short-lived rendezvous mailboxes keyed by nameplate (sans-IO, explicit clock).

Theory of operation: the first client to ``open`` a nameplate creates its mailbox; a second one
joins it; a third is refused (two sides at most). Bodies a side ``add``s are relayed to the other
side at once, or buffered until it joins. Every mailbox is bounded in messages and bytes (counted
over its whole life, relayed or buffered) and in age. When one side closes the other is told and a
mailbox with no connected side is forgotten; ``expire(now)`` drops mailboxes older than
``max_age`` and names the clients to disconnect. Refusals raise ``PairingError`` whose message is
the reason the server sends back. ``MailboxStore`` is the interface a shared (e.g. Redis) store
would implement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from delshare.errors import PairingError

ClientId = int
MAX_SIDES = 2


@dataclass(frozen=True)
class MailboxLimits:
    """Bounds on what clients can make the server hold."""

    max_mailboxes: int = 1000
    max_messages: int = 64
    max_bytes: int = 256 * 1024
    max_age: float = 600.0


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


Event = BodyRelayed | PeerLeft | MailboxExpired


class MailboxStore(Protocol):
    """What the rendezvous server needs from a mailbox store."""

    limits: MailboxLimits

    def open(self, client: ClientId, nameplate: str, now: float) -> list[Event]: ...
    def add(self, client: ClientId, body: str, now: float) -> list[Event]: ...
    def close(self, client: ClientId, now: float) -> list[Event]: ...
    def expire(self, now: float) -> list[Event]: ...
    def next_expiry(self) -> float | None: ...


@dataclass
class _Mailbox:
    nameplate: str
    created: float
    members: list[ClientId] = field(default_factory=list)
    connected: set[ClientId] = field(default_factory=set)
    pending: list[str] = field(default_factory=list)
    messages: int = 0
    size: int = 0

    def other(self, client: ClientId) -> ClientId | None:
        return next((m for m in self.members if m != client), None)


class MailboxTable:
    """In-memory ``MailboxStore``."""

    def __init__(self, limits: MailboxLimits | None = None) -> None:
        self.limits = limits or MailboxLimits()
        self._mailboxes: dict[str, _Mailbox] = {}
        self._client_mailbox: dict[ClientId, _Mailbox] = {}

    def __len__(self) -> int:
        return len(self._mailboxes)

    def __contains__(self, nameplate: object) -> bool:
        return nameplate in self._mailboxes

    def open(self, client: ClientId, nameplate: str, now: float) -> list[Event]:
        """Join (or create) the mailbox of ``nameplate``; returns bodies buffered for us."""
        if client in self._client_mailbox:
            raise PairingError("mailbox already open on this connection")
        mailbox = self._mailboxes.get(nameplate) or self._create(nameplate, now)
        self._check_age(mailbox, now)
        if len(mailbox.members) >= MAX_SIDES:
            raise PairingError("mailbox full: this code is already in use by two peers")
        mailbox.members.append(client)
        mailbox.connected.add(client)
        self._client_mailbox[client] = mailbox
        events: list[Event] = [BodyRelayed(client, body) for body in mailbox.pending]
        mailbox.pending.clear()
        return events

    def add(self, client: ClientId, body: str, now: float) -> list[Event]:
        """Relay ``body`` to the other side, or buffer it until that side joins."""
        mailbox = self._client_mailbox.get(client)
        if mailbox is None:
            raise PairingError("open a mailbox first")
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
        if mailbox is None:
            return []
        mailbox.connected.discard(client)
        if not mailbox.connected:
            del self._mailboxes[mailbox.nameplate]
            return []
        return [PeerLeft(other) for other in mailbox.connected]

    def expire(self, now: float) -> list[Event]:
        """Drop mailboxes older than ``max_age``; their connected clients are to be closed."""
        events: list[Event] = []
        for mailbox in [m for m in self._mailboxes.values() if self._expired(m, now)]:
            del self._mailboxes[mailbox.nameplate]
            for client in mailbox.connected:
                del self._client_mailbox[client]
                events.append(MailboxExpired(client))
        return events

    def next_expiry(self) -> float | None:
        """When the oldest mailbox expires (the adapter's timer), or None."""
        created = [m.created for m in self._mailboxes.values()]
        return min(created) + self.limits.max_age if created else None

    def _create(self, nameplate: str, now: float) -> _Mailbox:
        if len(self._mailboxes) >= self.limits.max_mailboxes:
            raise PairingError("server busy: too many open mailboxes")
        mailbox = self._mailboxes[nameplate] = _Mailbox(nameplate, now)
        return mailbox

    def _expired(self, mailbox: _Mailbox, now: float) -> bool:
        return now - mailbox.created >= self.limits.max_age

    def _check_age(self, mailbox: _Mailbox, now: float) -> None:
        if self._expired(mailbox, now):
            raise PairingError("mailbox expired")

    def _charge(self, mailbox: _Mailbox, size: int) -> None:
        if mailbox.messages + 1 > self.limits.max_messages:
            raise PairingError("mailbox message limit reached")
        if mailbox.size + size > self.limits.max_bytes:
            raise PairingError("mailbox byte limit reached")
        mailbox.messages += 1
        mailbox.size += size
