"""State records of the TURN server core: allocations, TCP connections, reservations.

An allocation (RFC 8656 §2) is OPENING until the adapter has bound its relayed socket, then
ACTIVE until it expires, is refreshed to 0 or its control connection closes. Permissions (§9) and
channel bindings (§12) expire lazily: lookups compare with ``now``. An RFC 6062 connection is
CONNECTING (Connect sent, §5.2), PENDING (peer connected, ConnectionBind awaited, §5.3/§5.4) or
BOUND (bytes flow through the adapter, §5.4).
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from delshare.errors import LocalProtocolError
from delshare.stun.attributes import Address
from delshare.stun.message import Message
from delshare.turn.auth import Credentials
from delshare.turn.server_events import FiveTuple


@functools.lru_cache(maxsize=8192)
def canonical_ip(host: str) -> str:
    """One spelling per IP, so permissions match whatever form the peer address took.

    Cached: it sits on the per-datagram path of UDP relays.
    """
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


@functools.lru_cache(maxsize=8192)
def ip_family(host: str) -> int:
    """4 or 6 (cached: asked several times per allocation for the same few addresses)."""
    return ipaddress.ip_address(host).version


class AllocationState(Enum):
    OPENING = "opening"
    ACTIVE = "active"


# RFC 8656 §7 allocation life cycle as data: OPENING until the relayed socket is bound, then
# ACTIVE; deletion (expiry, Refresh to 0, control connection gone) removes the record.
ALLOCATION_TRANSITIONS: dict[AllocationState, frozenset[AllocationState]] = {
    AllocationState.OPENING: frozenset({AllocationState.ACTIVE}),  # §7.2 relayed address bound
    AllocationState.ACTIVE: frozenset(),
}


class TimerKind(Enum):
    """What a server deadline is for."""

    ALLOCATION_EXPIRES = "allocation"  # RFC 8656 §7: lifetime not refreshed
    CONNECTION_DEADLINE = "connection"  # RFC 6062 §5.2 Connect, §5.3 ConnectionBind: 30 s
    RESERVATION_EXPIRES = "reservation"  # RFC 8656 §7.2 RESERVATION-TOKEN: 30 s


@dataclass(frozen=True, slots=True)
class Timer:
    """One deadline: an allocation or connection by ``id``, or a reservation by ``token``."""

    kind: TimerKind
    id: int = 0
    token: bytes = b""


class ConnectionState(Enum):
    CONNECTING = "connecting"
    PENDING = "pending"
    BOUND = "bound"


@dataclass
class Channel:
    """A channel binding (RFC 8656 §12)."""

    number: int
    peer: Address
    expires: float


@dataclass
class Allocation:
    """One allocation, keyed by its 5-tuple (RFC 8656 §2.2)."""

    id: int
    five: FiveTuple
    username: str
    transport: int
    family: int
    lifetime: int
    request: Message
    creds: Credentials
    state: AllocationState = AllocationState.OPENING
    relayed: Address = ("0.0.0.0", 0)
    expires: float = 0.0
    allocate_response: bytes = b""
    permissions: dict[str, float] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    peer_channels: dict[Address, int] = field(default_factory=dict)
    connections: set[int] = field(default_factory=set)
    # RFC 8656 §7.2 dual allocation (ADDITIONAL-ADDRESS-FAMILY): a second relayed address of
    # ``extra_family`` (IPv6), or the ADDRESS-ERROR-CODE value saying why there is none
    extra_family: int | None = None
    extra_relayed: Address | None = None
    extra_error: tuple[int, int, str] | None = None
    relay_ready: bool = False  # the first relayed address is open
    reserved_next: Address | None = None

    @property
    def families(self) -> tuple[int, ...]:
        """IP versions of the relayed addresses (two for a dual allocation)."""
        if self.extra_family is not None and self.extra_relayed is not None:
            return (self.family, self.extra_family)
        return (self.family,)

    @property
    def awaiting_relays(self) -> bool:
        """Still waiting for the adapter to open a relayed address."""
        extra_open = self.extra_family is None or self.extra_relayed or self.extra_error
        return not (self.relay_ready and extra_open)

    def move(self, to: AllocationState) -> None:
        """Change state along ``ALLOCATION_TRANSITIONS``; anything else is a bug."""
        if to not in ALLOCATION_TRANSITIONS[self.state]:
            raise IllegalTransition(f"allocation {self.id:08x}: {self.state.name} -> {to.name}")
        self.state = to

    def has_permission(self, peer_ip: str, now: float) -> bool:
        """RFC 8656 §9: permissions are per IP, port ignored."""
        expires = self.permissions.get(peer_ip)  # kernel-given addresses are canonical
        if expires is None:
            expires = self.permissions.get(canonical_ip(peer_ip))
        return expires is not None and expires > now

    def add_permission(self, peer_ip: str, until: float) -> None:
        self.permissions[canonical_ip(peer_ip)] = until

    def purge_permissions(self, now: float) -> None:
        for ip in [ip for ip, exp in self.permissions.items() if exp <= now]:
            del self.permissions[ip]

    def channel(self, number: int, now: float) -> Channel | None:
        found = self.channels.get(number)
        return found if found is not None and found.expires > now else None

    def route_until(self, channel: Channel, peer_ip: str) -> float:
        """How long a route over ``channel`` to ``peer_ip`` (canonical) holds: until the
        channel, the peer's permission or the allocation expires (RFC 8656 §9, §12)."""
        return min(channel.expires, self.permissions.get(peer_ip, 0.0), self.expires)

    def channel_for_peer(self, peer: Address, now: float) -> Channel | None:
        number = self.peer_channels.get(peer)
        return None if number is None else self.channel(number, now)

    def bind_channel(self, number: int, peer: Address, until: float) -> None:
        old = self.channels.get(number)
        if old is not None:
            self.peer_channels.pop(old.peer, None)
        stale = self.peer_channels.pop(peer, None)
        if stale is not None and stale != number:
            self.channels.pop(stale, None)
        self.channels[number] = Channel(number, peer, until)
        self.peer_channels[peer] = number


# RFC 6062 connection life cycle as data (h11 style): the only legal moves.
CONNECTION_TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    ConnectionState.CONNECTING: frozenset({ConnectionState.PENDING}),  # §5.2 connect succeeded
    ConnectionState.PENDING: frozenset({ConnectionState.BOUND}),  # §5.4 ConnectionBind
    ConnectionState.BOUND: frozenset(),
}


class IllegalTransition(LocalProtocolError):
    """An allocation or connection was asked to move to a state its life cycle does not allow."""


@dataclass
class TcpConnection:
    """An RFC 6062 connection between the relayed address and one peer."""

    id: int
    alloc_id: int
    peer: Address
    state: ConnectionState
    deadline: float
    incoming: bool
    request: Message | None = None
    creds: Credentials | None = None
    data_five: FiveTuple | None = None
    username: str = ""  # the allocation's, for the per-user pending count

    @property
    def pending(self) -> bool:
        """Not bound yet: connecting, or awaiting ConnectionBind (RFC 6062 §5.2-5.4)."""
        return self.state != ConnectionState.BOUND

    def move(self, to: ConnectionState) -> None:
        """Change state along ``CONNECTION_TRANSITIONS``; anything else is a bug."""
        if to not in CONNECTION_TRANSITIONS[self.state]:
            raise IllegalTransition(f"connection {self.id:08x}: {self.state.name} -> {to.name}")
        self.state = to


@dataclass
class Reservation:
    """A relayed address held for a later Allocate with RESERVATION-TOKEN (RFC 8656 §7.2)."""

    address: Address
    family: int
    expires: float


class _Pending:
    """Marks a transaction whose answer is still being worked out (a Connect in progress)."""


PENDING = _Pending()


class ResponseCache:
    """Answers already given, by 5-tuple and transaction ID, for retransmissions.

    RFC 8489 §6.3.1: a retransmitted request (same transaction ID from the same 5-tuple) must
    get the same answer as the first, not be processed again; a Connect retransmitted while the
    first is still connecting (pion resends every 200 ms, even over TCP) gets nothing now and
    the one answer later, not 446. Entries live ``ttl`` seconds (the 39.5 s transaction time);
    at most ``max_entries`` in all (the oldest go first) and ``max_per_client`` answers per
    5-tuple (beyond, answers are sent but not remembered), so a flood cannot grow it.
    """

    def __init__(self, ttl: float, max_entries: int, max_per_client: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_per_client = max_per_client
        self._entries: OrderedDict[tuple[FiveTuple, bytes], tuple[float, bytes | _Pending]] = (
            OrderedDict()
        )
        self._per_client: Counter[FiveTuple] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, five: FiveTuple, tid: bytes, now: float) -> bytes | _Pending | None:
        """The answer given (bytes), ``PENDING`` while it is being worked out, or None."""
        self._expire(now)
        found = self._entries.get((five, tid))
        return None if found is None else found[1]

    def mark_pending(self, five: FiveTuple, tid: bytes, now: float) -> None:
        """The request is being answered asynchronously; retransmissions wait for it."""
        self._put(five, tid, PENDING, now, limit=False)

    def store(self, five: FiveTuple, tid: bytes, answer: bytes, now: float) -> None:
        """Remember ``answer`` for retransmissions of ``tid`` from ``five``."""
        self._put(five, tid, answer, now, limit=True)

    def _put(
        self, five: FiveTuple, tid: bytes, value: bytes | _Pending, now: float, *, limit: bool
    ) -> None:
        self._expire(now)
        key = (five, tid)
        if key in self._entries:
            self._entries.pop(key)
        elif limit and self._per_client[five] >= self.max_per_client:
            return
        else:
            self._per_client[five] += 1
        self._entries[key] = (now + self.ttl, value)
        while len(self._entries) > self.max_entries:
            self._forget(*self._entries.popitem(last=False)[0])

    def _expire(self, now: float) -> None:
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[key]
            self._forget(*key)

    def _forget(self, five: FiveTuple, _tid: bytes) -> None:
        self._per_client[five] -= 1
        if self._per_client[five] <= 0:
            del self._per_client[five]
