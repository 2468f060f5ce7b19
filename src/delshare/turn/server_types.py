"""Data shared by the TURN server core and its adapters: 5-tuples, config, commands, events.

Commands tell the adapter to do I/O (imperative names); events report what happened (past
tense) for logs and metrics. Both are frozen dataclasses read from ``TurnServer.next_outputs()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from delshare.stun.attributes import Address
from delshare.stun.constants import CONNECT_TIMEOUT, CONNECTION_BIND_TIMEOUT, DEFAULT_LIFETIME
from delshare.turn.auth import AuthConfig

UDP = "udp"
TCP = "tcp"
TLS = "tls"


class FiveTuple(NamedTuple):
    """Client address, server address and transport of a control connection (RFC 8656 §2)."""

    transport: str
    client: Address
    server: Address

    @property
    def stream(self) -> bool:
        """TCP or TLS: frames are padded and RFC 6062 is possible."""
        return self.transport != UDP


@dataclass(frozen=True)
class ServerConfig:
    """Policy of a TURN server: auth, peer filter and the limits of RFC 8656 §7.2 and §21."""

    auth: AuthConfig
    allow_peers: tuple[str, ...] = ()
    deny_peers: tuple[str, ...] = ()  # refused besides the default ranges (allow_peers wins)
    # coturn's external-ip: (PUBLIC, PRIVATE or None) advertised in XOR-RELAYED-ADDRESS for relays
    # bound on PRIVATE, or (None) for every relay of PUBLIC's family; else the bound address
    external_ips: tuple[tuple[str, str | None], ...] = ()
    alternate_servers: tuple[tuple[str, int], ...] = ()  # 300 Try Alternate while draining/full
    udp_relays: bool = True  # REQUESTED-TRANSPORT UDP allowed (else 442)
    tcp_relays: bool = True  # RFC 6062 TCP allocations allowed (else 442)
    max_allocations: int = 1000
    max_allocations_per_user: int = 100
    max_allocations_per_ip: int = 500
    request_rate: float = 1000.0  # requests per second per client IP (0: unlimited)
    request_burst: int = 4000
    max_connections_per_allocation: int = 64
    max_pending_connections: int = 256  # RFC 6062 connections not yet bound, in total
    max_pending_per_allocation: int = 32  # ... per allocation, and per user: one user cannot
    max_pending_per_user: int = 64  # hold the whole global budget (issue 10 item 4)
    retransmit_cache_ttl: float = 40.0  # RFC 8489 §6.3.1: a transaction lasts 39.5 s
    retransmit_cache_entries: int = 8192
    retransmit_cache_per_client: int = 64
    max_permissions_per_allocation: int = 256
    default_lifetime: int = DEFAULT_LIFETIME  # RFC 8656 §3.2
    max_lifetime: int = 3600  # RFC 8656 §3.2 "typically 3600"
    connect_timeout: float = CONNECT_TIMEOUT  # RFC 6062 §5.2
    bind_timeout: float = CONNECTION_BIND_TIMEOUT  # RFC 6062 §5.3, §5.4
    reservation_lifetime: float = 30.0  # RFC 8656 §14.9 "about 30 seconds"
    ipv6_relays: bool = True
    dont_fragment: bool = True  # the adapter can set DF on UDP relays (RFC 8656 §7.2, §18.8)


# -- commands to the adapter --------------------------------------------------------------------


@dataclass(frozen=True)
class SendToClient:
    """Write ``data`` (one STUN message or ChannelData frame) to the client of ``five``."""

    five: FiveTuple
    data: bytes


@dataclass(frozen=True)
class SendToPeer:
    """Send a UDP datagram from allocation ``alloc_id``'s relayed socket to ``peer``."""

    alloc_id: int
    peer: Address
    data: bytes


@dataclass(frozen=True)
class OpenRelay:
    """Open the relayed socket for ``alloc_id``; answer with ``relay_opened``/``relay_failed``.

    ``even_port``: the port must be even (EVEN-PORT, RFC 8656 §7.2); ``reserve_next``: also hold
    port + 1 for a later RESERVATION-TOKEN; ``reserved``: use this held address instead.
    ``family`` is 4 or 6; ``transport`` is 17 (UDP) or 6 (TCP, RFC 6062: listen on it).
    ``dont_fragment``: send the relayed datagrams with DF set (DONT-FRAGMENT, RFC 8656 §18.8).
    """

    alloc_id: int
    five: FiveTuple
    transport: int
    family: int
    even_port: bool = False
    reserve_next: bool = False
    reserved: Address | None = None
    dont_fragment: bool = False


@dataclass(frozen=True)
class CloseRelay:
    """Close allocation ``alloc_id``'s relayed socket (UDP) or listener (TCP)."""

    alloc_id: int


@dataclass(frozen=True)
class ReleaseReservation:
    """Stop holding a reserved relay address (RFC 8656 §14.9)."""

    address: Address


@dataclass(frozen=True)
class ConnectToPeer:
    """Open a TCP connection from the relayed address to ``peer`` (RFC 6062 §5.2).

    Report with ``peer_connected`` or ``peer_connect_failed``.
    """

    conn_id: int
    alloc_id: int
    peer: Address


@dataclass(frozen=True)
class BindDataConnection:
    """Write ``response`` on client connection ``five``, then relay raw bytes (RFC 6062 §5.4)."""

    conn_id: int
    five: FiveTuple
    response: bytes


@dataclass(frozen=True)
class CloseClientConnection:
    """Close the TCP/TLS control connection ``five`` after writing what is queued for it.

    Sent when its allocation ends by expiry or Refresh 0 (RFC 6062 §5.5): the connection has no
    other use, and left open it would hold a descriptor for as long as the client likes.
    """

    five: FiveTuple


@dataclass(frozen=True)
class ClosePeerConnection:
    """Close connection ``conn_id``: the peer socket and, if bound, the client data connection."""

    conn_id: int


# -- events for logs and metrics ------------------------------------------------------------------


@dataclass(frozen=True)
class AllocationCreated:
    alloc_id: int
    five: FiveTuple
    username: str
    relayed: Address
    transport: int
    lifetime: int


@dataclass(frozen=True)
class AllocationRefreshed:
    alloc_id: int
    lifetime: int


@dataclass(frozen=True)
class AllocationDeleted:
    alloc_id: int
    reason: str


@dataclass(frozen=True)
class PermissionCreated:
    alloc_id: int
    peer_ip: str


@dataclass(frozen=True)
class ChannelBound:
    alloc_id: int
    channel: int
    peer: Address


@dataclass(frozen=True)
class PeerConnected:
    """A Connect succeeded (RFC 6062 §5.2) or a peer dialled in (§5.3); awaiting ConnectionBind."""

    conn_id: int
    alloc_id: int
    peer: Address
    incoming: bool


@dataclass(frozen=True)
class ConnectionBound:
    conn_id: int
    alloc_id: int


@dataclass(frozen=True)
class ConnectionClosed:
    conn_id: int
    alloc_id: int
    reason: str


@dataclass(frozen=True)
class RequestRefused:
    five: FiveTuple
    method: str
    code: int
    reason: str


@dataclass(frozen=True)
class AuthenticationFailed:
    """A request carried credentials that did not check out (RFC 8489 §9.2.4), as opposed to
    the normal 401 challenge of a request without any. ``reason``: ``unknown_user``,
    ``wrong_password``, ``expired`` (a TURN REST username past its time), ``wrong_realm``.
    ``username`` is as the client sent it (unsanitized; empty for an unknown USERHASH)."""

    five: FiveTuple
    method: str
    username: str
    reason: str


@dataclass(frozen=True)
class RequestAnswered:
    """Per-message debug: a request got a success response."""

    five: FiveTuple
    method: str


Command = (
    SendToClient
    | SendToPeer
    | OpenRelay
    | CloseRelay
    | ReleaseReservation
    | ConnectToPeer
    | BindDataConnection
    | ClosePeerConnection
    | CloseClientConnection
)
Event = (
    AllocationCreated
    | AllocationRefreshed
    | AllocationDeleted
    | PermissionCreated
    | ChannelBound
    | PeerConnected
    | ConnectionBound
    | ConnectionClosed
    | RequestRefused
    | AuthenticationFailed
    | RequestAnswered
)
Output = Command | Event
