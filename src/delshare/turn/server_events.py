"""What the TURN server core tells its adapters: 5-tuples, commands and events.

Commands tell the adapter to do I/O (imperative names); events report what happened (past
tense) for logs and metrics. Both are frozen dataclasses read from ``TurnServer.next_outputs()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from delshare.stun.attributes import Address

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
