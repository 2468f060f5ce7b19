"""The sans-IO TURN server: RFC 8489 STUN, RFC 8656 TURN and RFC 6062 TCP allocations.

Theory of operation: the adapter feeds what arrives — ``receive(five, frame, now)`` for each
datagram or stream frame from a client, ``receive_peer_datagram`` for UDP relays, and the
outcome of I/O it was asked for (``relay_opened``, ``peer_connected``, ``peer_accepted``,
``connection_closed``, ``client_closed``). The core answers by queueing commands (send, open,
connect, close) and events (for logs), read with ``next_outputs()``. Every request goes through
one dispatch point, ``_handle_request``: handlers and the authenticator raise
``StunProtocolError`` (code, reason and attributes) and the dispatch point turns that into the error
response, signed with the request's key once the request was authenticated (RFC 8489 §9.2.4).
Answers to authenticated requests are remembered for a while by 5-tuple and transaction ID, so
a retransmission gets the first answer again instead of being processed twice (RFC 8489
§6.3.1); nonces are bound to the 5-tuple, so a request replayed from elsewhere gets 438. A
well-framed request with a malformed attribute gets 400, not silence.
Deadlines (allocation expiry, Connect timeout, ConnectionBind timer, reservations) sit in one
heap; ``get_timer()`` gives the next one, ``handle_timer(now)`` fires what is due. ``now`` is
wall-clock seconds, because TURN REST usernames carry Unix times.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import struct
from collections import Counter
from collections.abc import Callable
from typing import NoReturn, Protocol

from delshare.errors import MalformedRequestError, StunDecodeError, StunProtocolError
from delshare.stun.attributes import (
    ADDITIONAL_ADDRESS_FAMILY,
    ADDRESS_ERROR_CODE,
    ALTERNATE_SERVER,
    CHANNEL_NUMBER,
    CONNECTION_ID,
    DATA,
    DONT_FRAGMENT,
    EVEN_PORT,
    FINGERPRINT,
    LIFETIME,
    REQUESTED_ADDRESS_FAMILY,
    REQUESTED_TRANSPORT,
    RESERVATION_TOKEN,
    UNKNOWN_ATTRIBUTES,
    XOR_MAPPED_ADDRESS,
    XOR_PEER_ADDRESS,
    XOR_RELAYED_ADDRESS,
    Address,
)
from delshare.stun.constants import (
    CHANNEL_LIFETIME,
    CHANNEL_MIN,
    FAMILY_IPV4,
    FAMILY_IPV6,
    PERMISSION_LIFETIME,
    PROTO_TCP,
    PROTO_UDP,
    Attr,
    ErrorCode,
    MessageClass,
    Method,
)
from delshare.stun.framing import ChannelData
from delshare.stun.message import Message, decode_message, error_response, success_response
from delshare.turn.auth import Authenticator, Credentials, CredentialsRefused
from delshare.turn.peerfilter import PeerFilter
from delshare.turn.ratelimit import RateLimiter
from delshare.turn.server_config import ServerConfig
from delshare.turn.server_events import (
    TLS,
    AllocationCreated,
    AllocationDeleted,
    AllocationRefreshed,
    AuthenticationFailed,
    BindDataConnection,
    ChannelBound,
    CloseClientConnection,
    ClosePeerConnection,
    CloseRelay,
    ConnectionBound,
    ConnectionClosed,
    ConnectToPeer,
    FiveTuple,
    OpenRelay,
    Output,
    PeerConnected,
    PermissionCreated,
    ReleaseReservation,
    RequestAnswered,
    RequestRefused,
    SendToClient,
    SendToPeer,
)
from delshare.turn.server_state import (
    Allocation,
    AllocationState,
    ConnectionState,
    Reservation,
    ResponseCache,
    TcpConnection,
    Timer,
    TimerKind,
    canonical_ip,
    ip_family,
)

# RFC 8656 §12 narrowed channels to 0x4000-0x4FFF; RFC 5766 clients (coturn's uclient) still pick
# up to 0x7FFF, and the stream framing (first bits 01) covers the whole range, so accept it.
COMPAT_CHANNEL_MAX = 0x7FFF
_FAMILIES = {FAMILY_IPV4: 4, FAMILY_IPV6: 6}

Handler = Callable[[FiveTuple, Message, Credentials, float], Message | None]


class QuotaLedger(Protocol):
    """Allocation counts shared by several relay processes (``delshare relay --workers N``).

    ``take`` counts one allocation of ``username`` from ``ip`` if it stays within
    ``(per_user, per_ip, total)`` and returns None, else names the limit hit (``"user"``,
    ``"ip"``, ``"total"``) and counts nothing; ``release`` gives one back.
    """

    def take(self, username: str, ip: str, limits: tuple[int, int, int]) -> str | None: ...

    def release(self, username: str, ip: str) -> None: ...


class RequestRateCheck(Protocol):
    """The per-client-IP request rate (docs/protocol.md §5.4): ``allow`` admits and counts one
    request from ``key`` at ``now``, or says no (the request is then dropped unanswered)."""

    def allow(self, key: str, now: float) -> bool: ...


RateCheckFactory = Callable[[float, int], RequestRateCheck]
"""Makes the check for ``(request_rate, request_burst)``, at start and on each reconfigure:
``RateLimiter`` (this process's token buckets) by default, a view of a table shared by every
worker with ``delshare relay --workers N`` (``delshare.aio.shared_rate``)."""


def nonce_binding(five: FiveTuple) -> str:
    """What a nonce is bound to: transport, client and server address (issue 10 item 5)."""
    return f"{five.transport} {five.client[0]} {five.client[1]} {five.server[0]} {five.server[1]}"


class TurnServer:
    """The TURN server state machine; one per relay process, shared by every listener."""

    def __init__(
        self,
        config: ServerConfig,
        nonce_key: bytes | None = None,
        rate_check: RateCheckFactory = RateLimiter,
    ) -> None:
        self.config = config
        self._nonce_key = nonce_key or secrets.token_bytes(32)
        self.auth = Authenticator(config.auth, self._nonce_key)
        self.peer_filter = PeerFilter(config.allow_peers, config.deny_peers)
        self.draining = False
        self._alternate_turn = itertools.count()
        self.allocations: dict[FiveTuple, Allocation] = {}
        self.connections: dict[int, TcpConnection] = {}
        self._bound = 0  # connections in BOUND, so the pending count is O(1)
        self._by_id: dict[int, Allocation] = {}
        self._reservations: dict[bytes, Reservation] = {}
        self._per_user: Counter[str] = Counter()
        self._per_ip: Counter[str] = Counter()
        self._pending_per_user: Counter[str] = Counter()
        self.quota_ledger: QuotaLedger | None = None  # counts of every worker (None: this core's)
        self.conn_id_slot = (0, 1)  # CONNECTION-IDs ≡ slot[0] mod slot[1]: they name a worker
        self._close_after_answer: list[FiveTuple] = []  # control connections Refresh 0 ended
        self._answers = ResponseCache(
            config.retransmit_cache_ttl,
            config.retransmit_cache_entries,
            config.retransmit_cache_per_client,
        )
        self._rate_check = rate_check
        self._rate = rate_check(config.request_rate, config.request_burst)
        self._outputs: list[Output] = []
        self._timers: list[tuple[float, int, Timer]] = []
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self._handlers: dict[int, Handler] = {
            Method.ALLOCATE: self._allocate,
            Method.REFRESH: self._refresh,
            Method.CREATE_PERMISSION: self._create_permission,
            Method.CHANNEL_BIND: self._channel_bind,
            Method.CONNECT: self._connect,
            Method.CONNECTION_BIND: self._connection_bind,
        }

    # -- outputs and timers ----------------------------------------------------------------------

    def reconfigure(self, config: ServerConfig) -> None:
        """Apply new policy (SIGHUP): users, secret, limits, peer rules, alternates.

        Live allocations keep their relays and permissions; the nonce key stays, so nonces
        handed out before stay valid (a changed realm makes clients re-authenticate).
        """
        self.config = config
        self.auth = Authenticator(config.auth, self._nonce_key)
        self.peer_filter = PeerFilter(config.allow_peers, config.deny_peers)
        self._rate = self._rate_check(config.request_rate, config.request_burst)

    def start_draining(self) -> None:
        """Stop taking allocations: redirect them to an alternate (300) or refuse them (508)."""
        self.draining = True

    def next_outputs(self) -> list[Output]:
        """Commands and events queued since the last call, in order."""
        out, self._outputs = self._outputs, []
        return out

    def allocation(self, alloc_id: int) -> Allocation | None:
        """The allocation with this id, if it still exists."""
        return self._by_id.get(alloc_id)

    @property
    def pending_connections(self) -> int:
        """RFC 6062 connections not yet bound (connecting or awaiting ConnectionBind)."""
        return len(self.connections) - self._bound

    def get_timer(self) -> float | None:
        """The next deadline (it may turn out to have nothing left to do)."""
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float) -> None:
        """Fire every deadline that is due."""
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            match timer.kind:
                case TimerKind.ALLOCATION_EXPIRES:
                    self._expire_allocation(timer.id, now)
                case TimerKind.CONNECTION_DEADLINE:
                    self._expire_connection(timer.id, now)
                case TimerKind.RESERVATION_EXPIRES:
                    self._expire_reservation(timer.token, now)

    def _at(self, deadline: float, timer: Timer) -> None:
        heapq.heappush(self._timers, (deadline, next(self._seq), timer))

    def _expire_allocation(self, alloc_id: int, now: float) -> None:
        alloc = self._by_id.get(alloc_id)
        if alloc is not None and alloc.state == AllocationState.ACTIVE and alloc.expires <= now:
            self._delete_allocation(alloc, "expired", close_control=True)

    def _expire_connection(self, conn_id: int, now: float) -> None:
        conn = self.connections.get(conn_id)
        if conn is None or conn.deadline > now or conn.state == ConnectionState.BOUND:
            return
        connecting = conn.state == ConnectionState.CONNECTING
        if connecting:
            self._answer_connect_failure(conn, "Connect timed out", now)
        self._drop_connection(conn, "Connect timeout" if connecting else "ConnectionBind timeout")
        self._outputs.append(ClosePeerConnection(conn.id))

    def _expire_reservation(self, token: bytes, now: float) -> None:
        found = self._reservations.get(token)
        if found is not None and found.expires <= now:
            del self._reservations[token]
            self._outputs.append(ReleaseReservation(found.address))

    # -- input from clients ----------------------------------------------------------------------

    def receive(self, five: FiveTuple, data: bytes, now: float) -> None:
        """One datagram (UDP) or one whole frame (TCP/TLS) from a client."""
        if not data:
            return
        if data[0] >> 6 == 0b01:
            self._channel_data_from_client(five, data, now)
            return
        try:
            msg = decode_message(data)
        except MalformedRequestError as bad:
            if bad.cls == MessageClass.REQUEST:
                self._answer_malformed(five, bad, now)
            return
        except StunDecodeError:
            return  # RFC 8489 §6.3: a bad header or FINGERPRINT: discarded silently
        if msg.cls == MessageClass.REQUEST:
            self._handle_request(five, msg, now)
        elif msg.cls == MessageClass.INDICATION and msg.method == Method.SEND:
            self._send_indication(five, msg, now)

    def client_closed(self, five: FiveTuple, now: float) -> None:
        """A TCP/TLS control connection closed: its allocation goes (RFC 6062 §5.5)."""
        alloc = self.allocations.get(five)
        if alloc is not None:
            self._delete_allocation(alloc, "control connection closed")

    def _answer_malformed(self, five: FiveTuple, bad: MalformedRequestError, now: float) -> None:
        """400 to a well-framed request whose attribute values do not decode (RFC 8489 §6.3.1).

        A 10,000-byte USERNAME, a 19-byte MESSAGE-INTEGRITY, address family 3 or an 8-byte
        LIFETIME are not silence (over TCP the client would wait forever): the request cannot be
        authenticated, so the answer is unsigned.
        """
        stub = Message(bad.method, MessageClass.REQUEST, bad.transaction_id)
        if not self._rate.allow(five.client[0], now):
            self._outputs.append(RequestRefused(five, stub.method_name, 0, "rate limited"))
            return
        self._respond(
            five,
            stub,
            error_response(stub, ErrorCode.BAD_REQUEST, f"Bad Request: {bad.reason}"),
            None,
            now,
        )

    def _retransmission(self, five: FiveTuple, msg: Message, now: float) -> bool:
        """Answer a retransmitted request as the first was answered (RFC 8489 §6.3.1).

        True when ``msg`` is one: its answer was re-sent, or (still being worked out, e.g. a
        Connect whose TCP connect runs) it is dropped and the one answer comes later.
        """
        if msg.method == Method.BINDING:
            return False  # stateless and cheap: answered afresh
        found = self._answers.lookup(five, msg.transaction_id, now)
        if found is None:
            return False
        if isinstance(found, bytes):
            self._outputs.append(SendToClient(five, found))
            self._outputs.append(RequestAnswered(five, f"{msg.method_name} (retransmission)"))
        return True

    def _handle_request(self, five: FiveTuple, msg: Message, now: float) -> None:
        """The one dispatch point: run the handler, turn refusals into error responses.

        Requests over the per-IP rate are dropped unanswered (a UDP client retransmits).
        """
        if not self._rate.allow(five.client[0], now):
            self._outputs.append(RequestRefused(five, msg.method_name, 0, "rate limited"))
            return
        if self._retransmission(five, msg, now):
            return
        creds: Credentials | None = None
        try:
            if msg.method == Method.BINDING:
                self._check_unknown(msg)
                response: Message | None = success_response(msg, XOR_MAPPED_ADDRESS(five.client))
            else:
                handler = self._handlers.get(msg.method)
                if handler is None:
                    raise StunProtocolError(ErrorCode.BAD_REQUEST, "Unknown method")
                owner = self._bind_owner(msg)
                also = () if owner is None else (nonce_binding(owner.five),)
                session = self.allocations.get(five) or owner
                creds = self.auth.authenticate(
                    msg,
                    now,
                    nonce_binding(five),
                    also,
                    None if session is None else session.creds,
                )
                self._check_unknown(msg)
                response = handler(five, msg, creds, now)
        except StunProtocolError as refusal:  # a challenge too: authenticate left creds None
            if isinstance(refusal, CredentialsRefused):
                failed = AuthenticationFailed(
                    five, msg.method_name, refusal.username, refusal.failure
                )
                self._outputs.append(failed)
            response = error_response(msg, refusal.code, refusal.reason, *refusal.attributes)
        if response is not None:
            self._respond(five, msg, response, creds, now)
        while self._close_after_answer:
            self._outputs.append(CloseClientConnection(self._close_after_answer.pop()))

    def _bind_owner(self, msg: Message) -> Allocation | None:
        """For a ConnectionBind, the allocation owning its CONNECTION-ID (RFC 6062 §5.4): its
        credentials are the request's session, and its control connection's nonce is accepted
        too (clients such as coturn's uclient reuse it on the new data connection)."""
        if msg.method != Method.CONNECTION_BIND:
            return None
        conn = self.connections.get(msg.get(CONNECTION_ID) or 0)
        return None if conn is None else self._by_id.get(conn.alloc_id)

    def _check_unknown(self, msg: Message) -> None:
        if msg.unknown_required:
            raise StunProtocolError(
                ErrorCode.UNKNOWN_ATTRIBUTE,
                "Unknown Attribute",
                UNKNOWN_ATTRIBUTES(tuple(msg.unknown_required)),
            )

    def _encode(self, request: Message, response: Message, creds: Credentials | None) -> bytes:
        """Sign like the request did (RFC 8489 §9.2.4); FINGERPRINT if the request had one."""
        fingerprint = request.has(FINGERPRINT)
        if creds is None:
            return response.encode(fingerprint=fingerprint)
        return response.encode(creds.key, sha256=creds.sha256, fingerprint=fingerprint)

    def _respond(
        self,
        five: FiveTuple,
        request: Message,
        response: Message,
        creds: Credentials | None,
        now: float,
    ) -> None:
        """Send the answer; remember answers to authenticated requests for retransmissions."""
        data = self._encode(request, response, creds)
        if creds is not None:
            self._answers.store(five, request.transaction_id, data, now)
        self._outputs.append(SendToClient(five, data))
        if response.cls == MessageClass.ERROR and response.error is not None:
            code, reason = response.error
            self._outputs.append(RequestRefused(five, request.method_name, code, reason))
        else:
            self._outputs.append(RequestAnswered(five, request.method_name))

    # -- Allocate (RFC 8656 §7.2, RFC 6062 §5.1) -------------------------------------------------

    def _allocate(
        self, five: FiveTuple, msg: Message, creds: Credentials, now: float
    ) -> Message | None:
        existing = self.allocations.get(five)
        if existing is not None:
            return self._allocate_again(existing, msg)
        if self.draining:
            self._try_alternate(five, "Insufficient Capacity (draining)")
        transport = self._requested_transport(five, msg)
        token = msg.get(RESERVATION_TOKEN)
        even = msg.get(EVEN_PORT)
        requested_family = msg.get(REQUESTED_ADDRESS_FAMILY)
        if token is not None and (even is not None or requested_family is not None):
            raise StunProtocolError(
                ErrorCode.BAD_REQUEST, "RESERVATION-TOKEN with EVEN-PORT or address family"
            )
        family = self._relay_family(five, requested_family)
        extra_family = self._additional_family(msg, requested_family, token)
        self._check_allocation_quota(creds.username, five)
        reserved = self._take_reservation(token, now) if token is not None else None
        if reserved is not None:
            family = reserved.family
        lifetime = self._lifetime(msg)
        if self.quota_ledger is not None:
            self._take_shared_quota(creds.username, five)
        alloc = Allocation(
            next(self._ids), five, creds.username, transport, family, lifetime, msg, creds
        )
        self.allocations[five] = alloc
        self._by_id[alloc.id] = alloc
        self._per_user[creds.username] += 1
        self._per_ip[five.client[0]] += 1
        self._answers.mark_pending(five, msg.transaction_id, now)  # relay_opened answers
        self._outputs.append(
            OpenRelay(
                alloc.id,
                five,
                transport,
                family,
                even_port=even is not None,
                reserve_next=bool(even),
                reserved=None if reserved is None else reserved.address,
                dont_fragment=msg.has(DONT_FRAGMENT),
            )
        )
        if extra_family is not None:
            self._open_extra_relay(alloc, extra_family, msg)
        return None

    def _additional_family(
        self, msg: Message, requested_family: int | None, token: object
    ) -> int | None:
        """RFC 8656 §7.2 ADDITIONAL-ADDRESS-FAMILY: IPv6 beside IPv4, never with
        REQUESTED-ADDRESS-FAMILY or RESERVATION-TOKEN (400)."""
        additional = msg.get(ADDITIONAL_ADDRESS_FAMILY)
        if additional is None:
            return None
        if requested_family is not None or token is not None or additional != FAMILY_IPV6:
            raise StunProtocolError(ErrorCode.BAD_REQUEST, "Bad ADDITIONAL-ADDRESS-FAMILY")
        return 6

    def _open_extra_relay(self, alloc: Allocation, family: int, msg: Message) -> None:
        """Ask for the second relayed address, or note why there is none (ADDRESS-ERROR-CODE)."""
        alloc.extra_family = family
        if alloc.transport != PROTO_UDP:
            alloc.extra_error = (
                FAMILY_IPV6,
                ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED,
                "Dual allocation only for UDP",
            )
        elif not self.config.ipv6_relays:
            alloc.extra_error = (
                FAMILY_IPV6,
                ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED,
                "Address Family not Supported",
            )
        else:
            dont_fragment = msg.has(DONT_FRAGMENT)
            self._outputs.append(
                OpenRelay(
                    alloc.id, alloc.five, alloc.transport, family, dont_fragment=dont_fragment
                )
            )

    def _allocate_again(self, existing: Allocation, msg: Message) -> Message | None:
        """A retransmitted Allocate gets the same answer; any other gets 437 (RFC 8656 §7.2)."""
        if existing.request.transaction_id != msg.transaction_id:
            raise StunProtocolError(ErrorCode.ALLOCATION_MISMATCH, "Allocation Mismatch")
        if existing.allocate_response:
            self._outputs.append(SendToClient(existing.five, existing.allocate_response))
        return None

    def _requested_transport(self, five: FiveTuple, msg: Message) -> int:
        transport = msg.get(REQUESTED_TRANSPORT)
        if transport is None:
            raise StunProtocolError(ErrorCode.BAD_REQUEST, "Missing REQUESTED-TRANSPORT")
        offered = {PROTO_UDP: self.config.udp_relays, PROTO_TCP: self.config.tcp_relays}
        if not offered.get(transport, False):
            raise StunProtocolError(
                ErrorCode.UNSUPPORTED_TRANSPORT, "Unsupported Transport Protocol"
            )
        if transport == PROTO_TCP:
            if not five.stream:
                raise StunProtocolError(
                    ErrorCode.BAD_REQUEST, "TCP allocations need a TCP or TLS connection"
                )
            for attr in (DONT_FRAGMENT, EVEN_PORT, RESERVATION_TOKEN):
                if msg.has(attr):
                    raise StunProtocolError(
                        ErrorCode.BAD_REQUEST, f"{attr.name} not allowed with TCP relays"
                    )
        elif msg.has(DONT_FRAGMENT) and not self.config.dont_fragment:
            unknown = UNKNOWN_ATTRIBUTES((int(Attr.DONT_FRAGMENT),))
            raise StunProtocolError(ErrorCode.UNKNOWN_ATTRIBUTE, "Unknown Attribute", unknown)
        return transport

    def _relay_family(self, five: FiveTuple, requested: int | None) -> int:
        """RFC 8656 §7.2 REQUESTED-ADDRESS-FAMILY; default IPv4."""
        if requested is None:
            return 4
        family = _FAMILIES.get(requested)
        if family is None or (family == 6 and not self.config.ipv6_relays):
            raise StunProtocolError(
                ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED, "Address Family not Supported"
            )
        return family

    def _check_allocation_quota(self, username: str, five: FiveTuple) -> None:
        config = self.config
        if self._per_user[username] >= config.max_allocations_per_user:
            self._refuse_over_quota("user", five)
        if self._per_ip[five.client[0]] >= config.max_allocations_per_ip:
            self._refuse_over_quota("ip", five)
        if len(self.allocations) >= config.max_allocations:
            self._refuse_over_quota("total", five)

    def _take_shared_quota(self, username: str, five: FiveTuple) -> None:
        """The same limits over every worker's allocations, checked and counted at once."""
        assert self.quota_ledger is not None
        config = self.config
        limits = (config.max_allocations_per_user, config.max_allocations_per_ip,
                  config.max_allocations)  # fmt: skip
        hit = self.quota_ledger.take(username, five.client[0], limits)
        if hit is not None:
            self._refuse_over_quota(hit, five)

    def _refuse_over_quota(self, hit: str, five: FiveTuple) -> NoReturn:
        """486 for the user's or the address's limit; the server's total: an alternate or 508."""
        if hit == "user":
            raise StunProtocolError(ErrorCode.ALLOCATION_QUOTA_REACHED, "Allocation Quota Reached")
        if hit == "ip":
            raise StunProtocolError(
                ErrorCode.ALLOCATION_QUOTA_REACHED, "Allocation Quota Reached for this address"
            )
        self._try_alternate(five, "Insufficient Capacity")

    def _try_alternate(self, five: FiveTuple, reason: str) -> NoReturn:
        """300 Try Alternate with ALTERNATE-SERVER (RFC 8489 §10, §14.15; RFC 8656 §7.2), else 508.

        Alternates are taken in turn among those of the client's address family (§14.15: the
        family must match the request's source address). Over TLS a redirect would need
        ALTERNATE-DOMAIN and a TLS port (§10; coturn's tls-alternate-server): 508 instead.
        """
        family = ip_family(five.client[0])
        choices = [a for a in self.config.alternate_servers if ip_family(a[0]) == family]
        if not choices or five.transport == TLS:
            raise StunProtocolError(ErrorCode.INSUFFICIENT_CAPACITY, reason)
        alternate = choices[next(self._alternate_turn) % len(choices)]
        raise StunProtocolError(
            ErrorCode.TRY_ALTERNATE, "Try Alternate", ALTERNATE_SERVER(alternate)
        )

    def _take_reservation(self, token: bytes, now: float) -> Reservation:
        found = self._reservations.pop(token, None)
        if found is None or found.expires <= now:
            raise StunProtocolError(
                ErrorCode.INSUFFICIENT_CAPACITY, "Unknown or expired RESERVATION-TOKEN"
            )
        return found

    def _lifetime(self, msg: Message) -> int:
        """RFC 8656 §7.2 step 8: at least the default, at most the server maximum."""
        requested = msg.get(LIFETIME)
        floor = min(self.config.default_lifetime, self.config.max_lifetime)
        if requested is None:
            return floor
        return max(floor, min(requested, self.config.max_lifetime))

    def relay_opened(
        self, alloc_id: int, bound: Address, now: float, reserved_next: Address | None = None
    ) -> None:
        """The adapter bound a relayed socket at ``bound``; answer the Allocate once all are."""
        alloc = self._by_id.get(alloc_id)
        if alloc is None or alloc.state != AllocationState.OPENING:
            self._outputs.append(CloseRelay(alloc_id))
            if reserved_next is not None:
                self._outputs.append(ReleaseReservation(reserved_next))
            return
        if self._is_extra(alloc, ip_family(bound[0])):
            assert alloc.extra_family is not None
            alloc.extra_relayed = (self._advertised_ip(alloc.extra_family, bound[0]), bound[1])
        else:
            alloc.relayed = (self._advertised_ip(alloc.family, bound[0]), bound[1])
            alloc.relay_ready = True
            alloc.reserved_next = reserved_next
        if not alloc.awaiting_relays:
            self._answer_allocate(alloc, now)

    def _is_extra(self, alloc: Allocation, family: int | None) -> bool:
        """Whether an adapter outcome is about the dual allocation's second address."""
        pending = alloc.extra_relayed is None and alloc.extra_error is None
        return pending and family is not None and family == alloc.extra_family

    def _answer_allocate(self, alloc: Allocation, now: float) -> None:
        """Success with the relayed address(es) (RFC 8656 §7.2, §18.12 ADDRESS-ERROR-CODE)."""
        alloc.move(AllocationState.ACTIVE)
        alloc.expires = now + alloc.lifetime
        self._at(alloc.expires, Timer(TimerKind.ALLOCATION_EXPIRES, alloc.id))
        attrs: list[tuple[int, object]] = [XOR_RELAYED_ADDRESS(alloc.relayed)]
        if alloc.extra_relayed is not None:
            attrs.append(XOR_RELAYED_ADDRESS(alloc.extra_relayed))
        attrs += [LIFETIME(alloc.lifetime), XOR_MAPPED_ADDRESS(alloc.five.client)]
        if alloc.reserved_next is not None:
            token = self._reserve(alloc.reserved_next, alloc.family, now)
            attrs.append(RESERVATION_TOKEN(token))
        if alloc.extra_error is not None:
            attrs.append(ADDRESS_ERROR_CODE(alloc.extra_error))
        response = success_response(alloc.request, *attrs)
        alloc.allocate_response = self._encode(alloc.request, response, alloc.creds)
        self._answers.store(alloc.five, alloc.request.transaction_id, alloc.allocate_response, now)
        self._outputs.append(SendToClient(alloc.five, alloc.allocate_response))
        self._outputs.append(RequestAnswered(alloc.five, alloc.request.method_name))
        self._outputs.append(
            AllocationCreated(
                alloc.id, alloc.five, alloc.username, alloc.relayed, alloc.transport, alloc.lifetime
            )
        )

    def _advertised_ip(self, family: int, bound_ip: str) -> str:
        """coturn's external-ip: the PUBLIC mapped to the bound address, else the family's
        unmapped PUBLIC, else the bound address itself (RFC 8656 §7.2 XOR-RELAYED-ADDRESS)."""
        external = self.config.external_ips
        mapped = [public for public, private in external if private == canonical_ip(bound_ip)]
        general = [p for p, private in external if private is None and ip_family(p) == family]
        return (mapped or general or [bound_ip])[0]

    def _reserve(self, address: Address, family: int, now: float) -> bytes:
        token = secrets.token_bytes(8)
        expires = now + self.config.reservation_lifetime
        self._reservations[token] = Reservation(address, family, expires)
        self._at(expires, Timer(TimerKind.RESERVATION_EXPIRES, token=token))
        return token

    def relay_failed(
        self,
        alloc_id: int,
        now: float,
        code: int = ErrorCode.INSUFFICIENT_CAPACITY,
        reason: str = "",
        family: int | None = None,
    ) -> None:
        """The adapter could not bind a relayed socket (of IP version ``family``): 508
        (RFC 8656 §7.2) or ``code``; for a dual allocation's second address, ADDRESS-ERROR-CODE."""
        alloc = self._by_id.get(alloc_id)
        if alloc is None or alloc.state != AllocationState.OPENING:
            return
        reason = reason or "Insufficient Capacity"
        if self._is_extra(alloc, family):
            alloc.extra_error = (FAMILY_IPV6, code, reason)
            if not alloc.awaiting_relays:
                self._answer_allocate(alloc, now)
            return
        self._forget_allocation(alloc)
        if alloc.relay_ready or alloc.extra_relayed is not None:
            self._outputs.append(CloseRelay(alloc.id))
        response = error_response(alloc.request, code, reason)
        self._respond(alloc.five, alloc.request, response, alloc.creds, now)

    # -- Refresh, CreatePermission, ChannelBind (RFC 8656 §7.3, §9, §11) ------------------------

    def _active(self, five: FiveTuple, creds: Credentials) -> Allocation:
        """The 5-tuple's allocation, used with the same username (437, 441: RFC 8656 §7.3)."""
        alloc = self.allocations.get(five)
        if alloc is None or alloc.state != AllocationState.ACTIVE:
            raise StunProtocolError(ErrorCode.ALLOCATION_MISMATCH, "Allocation Mismatch")
        if creds.username != alloc.username:
            raise StunProtocolError(ErrorCode.WRONG_CREDENTIALS, "Wrong Credentials")
        return alloc

    def _refresh(self, five: FiveTuple, msg: Message, creds: Credentials, now: float) -> Message:
        alloc = self._active(five, creds)
        requested_family = msg.get(REQUESTED_ADDRESS_FAMILY)
        if requested_family is not None and _FAMILIES.get(requested_family) not in alloc.families:
            raise StunProtocolError(
                ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH, "Peer Address Family Mismatch"
            )
        if msg.get(LIFETIME) == 0:
            self._delete_allocation(alloc, "refreshed to 0")
            self._close_after_answer.append(five)
            return success_response(msg, LIFETIME(0))
        alloc.lifetime = self._lifetime(msg)
        alloc.expires = now + alloc.lifetime
        self._at(alloc.expires, Timer(TimerKind.ALLOCATION_EXPIRES, alloc.id))
        self._outputs.append(AllocationRefreshed(alloc.id, alloc.lifetime))
        return success_response(msg, LIFETIME(alloc.lifetime))

    def _check_peer(self, alloc: Allocation, peer: Address) -> None:
        """443 for the wrong family, 403 for addresses the policy refuses (RFC 8656 §9.1)."""
        try:
            family = ip_family(peer[0])
        except ValueError as exc:
            raise StunProtocolError(ErrorCode.BAD_REQUEST, "Bad peer address") from exc
        if family not in alloc.families:
            raise StunProtocolError(
                ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH, "Peer Address Family Mismatch"
            )
        if not self.peer_filter.allowed_peer(peer[0], peer[1]):
            raise StunProtocolError(ErrorCode.FORBIDDEN, "Forbidden peer address")

    def _install_permission(self, alloc: Allocation, peer_ip: str, now: float) -> None:
        if canonical_ip(peer_ip) not in alloc.permissions:
            alloc.purge_permissions(now)
            if len(alloc.permissions) >= self.config.max_permissions_per_allocation:
                raise StunProtocolError(ErrorCode.INSUFFICIENT_CAPACITY, "Too many permissions")
            self._outputs.append(PermissionCreated(alloc.id, canonical_ip(peer_ip)))
        alloc.add_permission(peer_ip, now + PERMISSION_LIFETIME)

    def _create_permission(
        self, five: FiveTuple, msg: Message, creds: Credentials, now: float
    ) -> Message:
        alloc = self._active(five, creds)
        peers = msg.get_all(XOR_PEER_ADDRESS)
        if not peers:
            raise StunProtocolError(ErrorCode.BAD_REQUEST, "Missing XOR-PEER-ADDRESS")
        for peer in peers:
            self._check_peer(alloc, peer)
        for peer in peers:
            self._install_permission(alloc, peer[0], now)
        return success_response(msg)

    def _channel_bind(
        self, five: FiveTuple, msg: Message, creds: Credentials, now: float
    ) -> Message:
        alloc = self._active(five, creds)
        if alloc.transport != PROTO_UDP:
            raise StunProtocolError(ErrorCode.BAD_REQUEST, "ChannelBind on a TCP allocation")
        number = msg.get(CHANNEL_NUMBER)
        peer = msg.get(XOR_PEER_ADDRESS)
        if number is None or peer is None or not CHANNEL_MIN <= number <= COMPAT_CHANNEL_MAX:
            raise StunProtocolError(ErrorCode.BAD_REQUEST, "Bad CHANNEL-NUMBER or XOR-PEER-ADDRESS")
        peer = (canonical_ip(peer[0]), peer[1])
        self._check_peer(alloc, peer)
        bound = alloc.channel(number, now)
        if bound is not None and bound.peer != peer:
            raise StunProtocolError(ErrorCode.BAD_REQUEST, "Channel bound to another peer")
        other = alloc.channel_for_peer(peer, now)
        if other is not None and other.number != number:
            raise StunProtocolError(ErrorCode.BAD_REQUEST, "Peer bound to another channel")
        self._install_permission(alloc, peer[0], now)
        alloc.bind_channel(number, peer, now + CHANNEL_LIFETIME)
        if bound is None:
            self._outputs.append(ChannelBound(alloc.id, number, peer))
        return success_response(msg)

    # -- UDP relay data (RFC 8656 §10, §12) -------------------------------------------------------

    def _udp_allocation(self, five: FiveTuple) -> Allocation | None:
        alloc = self.allocations.get(five)
        if alloc is None or alloc.state != AllocationState.ACTIVE or alloc.transport != PROTO_UDP:
            return None
        return alloc

    def _send_indication(self, five: FiveTuple, msg: Message, now: float) -> None:
        alloc = self._udp_allocation(five)
        peer = msg.get(XOR_PEER_ADDRESS)
        data = msg.get(DATA)
        if alloc is None or peer is None or data is None:
            return
        if alloc.has_permission(peer[0], now) and not self.peer_filter.is_own(*peer):
            self._outputs.append(SendToPeer(alloc.id, peer, data))

    def _channel_data_from_client(self, five: FiveTuple, data: bytes, now: float) -> None:
        alloc = self._udp_allocation(five)
        if alloc is None:
            return
        if len(data) < 4:
            return
        number, length = struct.unpack_from("!HH", data)
        payload = data[4 : 4 + length]
        if len(payload) != length:
            return  # RFC 8656 §12.5: a short ChannelData is discarded
        channel = alloc.channel(number, now)
        if channel is not None and alloc.has_permission(channel.peer[0], now):
            self._outputs.append(SendToPeer(alloc.id, channel.peer, payload))

    def channel_route(
        self, five: FiveTuple, number: int, now: float
    ) -> tuple[int, Address, float] | None:
        """Where ChannelData on channel ``number`` from ``five`` goes (RFC 8656 §12.5), if
        anywhere: ``(alloc_id, peer, valid_until)``.

        The route holds until ``valid_until`` (the channel, the permission or the allocation
        expires first), unless the allocation ends sooner, which ``CloseRelay`` announces. An
        adapter may therefore forward that channel's data itself until then (the payload is
        ``data[4 : 4 + length]``; a shorter datagram is dropped) instead of calling
        :meth:`receive` for every datagram, and forget its routes on ``CloseRelay``.
        """
        alloc = self._udp_allocation(five)
        channel = alloc.channel(number, now) if alloc is not None else None
        if alloc is None or channel is None:
            return None
        until = alloc.route_until(channel, canonical_ip(channel.peer[0]))
        return (alloc.id, channel.peer, until) if until > now else None

    def peer_route(
        self, alloc_id: int, peer: Address, now: float
    ) -> tuple[FiveTuple, int, float] | None:
        """How a datagram from ``peer`` to allocation ``alloc_id`` reaches the client when a
        channel carries it (RFC 8656 §12.5): ``(client five-tuple, channel, valid_until)``.

        None when no channel is bound (the datagram becomes a Data indication: call
        :meth:`receive_peer_datagram`). Valid like :meth:`channel_route`'s routes.
        """
        alloc = self._by_id.get(alloc_id)
        if alloc is None or alloc.state != AllocationState.ACTIVE:
            return None
        ip = canonical_ip(peer[0])
        channel = alloc.channel_for_peer((ip, peer[1]), now)
        if channel is None:
            return None
        until = alloc.route_until(channel, ip)
        return (alloc.five, channel.number, until) if until > now else None

    def receive_peer_datagram(self, alloc_id: int, peer: Address, data: bytes, now: float) -> None:
        """A datagram reached a UDP relayed address: Data indication or ChannelData (§10.3)."""
        alloc = self._by_id.get(alloc_id)
        if alloc is None or alloc.state != AllocationState.ACTIVE:
            return
        if not alloc.has_permission(peer[0], now):
            return
        peer = (canonical_ip(peer[0]), peer[1])
        channel = alloc.channel_for_peer(peer, now)
        if channel is not None:
            frame = ChannelData(channel.number, data).encode(pad=alloc.five.stream)
        else:
            indication = Message(Method.DATA, MessageClass.INDICATION)
            indication.add(XOR_PEER_ADDRESS, peer).add(DATA, data)
            frame = indication.encode()
        self._outputs.append(SendToClient(alloc.five, frame))

    # -- RFC 6062: Connect, ConnectionAttempt, ConnectionBind -------------------------------------

    def _tcp_allocation(self, five: FiveTuple, creds: Credentials) -> Allocation:
        alloc = self._active(five, creds)
        if alloc.transport != PROTO_TCP:
            raise StunProtocolError(ErrorCode.BAD_REQUEST, "Not a TCP allocation")
        return alloc

    def _check_connection_room(self, alloc: Allocation) -> None:
        """Connections per allocation, then unbound ones per allocation, per user and in all.

        The per-allocation and per-user limits sit under the global one, so one user holding
        many pending connections cannot make another's Connect fail or starve their
        ConnectionAttempts (issue 10 item 4; RFC 8656 §21).
        """
        config = self.config
        if len(alloc.connections) >= config.max_connections_per_allocation:
            raise StunProtocolError(
                ErrorCode.INSUFFICIENT_CAPACITY, "Too many connections on this allocation"
            )
        pending_here = sum(1 for c in alloc.connections if self.connections[c].pending)
        if pending_here >= config.max_pending_per_allocation:
            raise StunProtocolError(
                ErrorCode.INSUFFICIENT_CAPACITY, "Too many pending connections on this allocation"
            )
        if self._pending_per_user[alloc.username] >= config.max_pending_per_user:
            raise StunProtocolError(
                ErrorCode.INSUFFICIENT_CAPACITY, "Too many pending connections for this user"
            )
        if self.pending_connections >= config.max_pending_connections:
            raise StunProtocolError(ErrorCode.INSUFFICIENT_CAPACITY, "Too many pending connections")

    def _new_connection_id(self) -> int:
        """Unpredictable, unique, non-zero CONNECTION-ID (RFC 6062 §6.2.1)."""
        slot, count = self.conn_id_slot
        while True:
            cid = secrets.randbits(32)
            cid -= (cid - slot) % count  # the low part names the worker owning it
            if cid > 0 and cid not in self.connections:
                return cid

    def _connect(self, five: FiveTuple, msg: Message, creds: Credentials, now: float) -> None:
        """RFC 6062 §5.2: 403 without permission, 446 if the peer is connected already."""
        alloc = self._tcp_allocation(five, creds)
        peer = msg.get(XOR_PEER_ADDRESS)
        if peer is None:
            raise StunProtocolError(ErrorCode.BAD_REQUEST, "Missing XOR-PEER-ADDRESS")
        peer = (canonical_ip(peer[0]), peer[1])
        self._check_peer(alloc, peer)
        if not alloc.has_permission(peer[0], now):
            raise StunProtocolError(ErrorCode.FORBIDDEN, "No permission for this peer")
        if any(self.connections[c].peer == peer for c in alloc.connections):
            raise StunProtocolError(
                ErrorCode.CONNECTION_ALREADY_EXISTS, "Connection Already Exists"
            )
        self._check_connection_room(alloc)
        conn = TcpConnection(
            self._new_connection_id(),
            alloc.id,
            peer,
            ConnectionState.CONNECTING,
            now + self.config.connect_timeout,
            incoming=False,
            request=msg,
            creds=creds,
        )
        self._add_connection(alloc, conn)
        self._answers.mark_pending(five, msg.transaction_id, now)  # peer_connected answers
        self._outputs.append(ConnectToPeer(conn.id, alloc.id, peer))

    def _add_connection(self, alloc: Allocation, conn: TcpConnection) -> None:
        conn.username = alloc.username
        self._pending_per_user[conn.username] += 1
        self.connections[conn.id] = conn
        alloc.connections.add(conn.id)
        self._at(conn.deadline, Timer(TimerKind.CONNECTION_DEADLINE, conn.id))

    def peer_connected(self, conn_id: int, now: float) -> None:
        """The outgoing connection is up: Connect success with CONNECTION-ID, start bind timer."""
        conn = self.connections.get(conn_id)
        if conn is None or conn.state != ConnectionState.CONNECTING:
            self._outputs.append(ClosePeerConnection(conn_id))
            return
        alloc = self._by_id[conn.alloc_id]
        conn.move(ConnectionState.PENDING)
        conn.deadline = now + self.config.bind_timeout
        self._at(conn.deadline, Timer(TimerKind.CONNECTION_DEADLINE, conn.id))
        assert conn.request is not None
        response = success_response(conn.request, CONNECTION_ID(conn.id))
        self._respond(alloc.five, conn.request, response, conn.creds, now)
        self._outputs.append(PeerConnected(conn.id, alloc.id, conn.peer, incoming=False))

    def peer_connect_failed(self, conn_id: int, now: float) -> None:
        """The outgoing connection failed: 447 (RFC 6062 §5.2)."""
        conn = self.connections.get(conn_id)
        if conn is None or conn.state != ConnectionState.CONNECTING:
            return
        self._answer_connect_failure(conn, "Connection Timeout or Failure", now)
        self._drop_connection(conn, "connect failed")

    def _answer_connect_failure(self, conn: TcpConnection, reason: str, now: float) -> None:
        alloc = self._by_id.get(conn.alloc_id)
        if alloc is not None and conn.request is not None:
            response = error_response(conn.request, ErrorCode.CONNECTION_TIMEOUT_OR_FAILURE, reason)
            self._respond(alloc.five, conn.request, response, conn.creds, now)

    def peer_accepted(self, alloc_id: int, peer: Address, now: float) -> int | None:
        """A peer dialled the relayed address (RFC 6062 §5.3).

        Returns the CONNECTION-ID after queueing a ConnectionAttempt, or None: refuse the peer
        (no permission, refused by policy, over a limit).
        """
        alloc = self._by_id.get(alloc_id)
        if alloc is None or alloc.state != AllocationState.ACTIVE:
            return None
        if not self.peer_filter.allowed(peer[0]) or not alloc.has_permission(peer[0], now):
            return None
        try:
            self._check_connection_room(alloc)
        except StunProtocolError:
            return None
        peer = (canonical_ip(peer[0]), peer[1])
        conn = TcpConnection(
            self._new_connection_id(),
            alloc.id,
            peer,
            ConnectionState.PENDING,
            now + self.config.bind_timeout,
            incoming=True,
        )
        self._add_connection(alloc, conn)
        attempt = Message(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION)
        attempt.add(XOR_PEER_ADDRESS, peer).add(CONNECTION_ID, conn.id)
        self._outputs.append(SendToClient(alloc.five, attempt.encode(fingerprint=True)))
        self._outputs.append(PeerConnected(conn.id, alloc.id, peer, incoming=True))
        return conn.id

    def _connection_bind(
        self, five: FiveTuple, msg: Message, creds: Credentials, now: float
    ) -> None:
        """RFC 6062 §5.4: bind a new client connection to a pending peer connection."""
        if not five.stream or five in self.allocations:
            raise StunProtocolError(
                ErrorCode.BAD_REQUEST, "ConnectionBind needs a new TCP or TLS connection"
            )
        cid = msg.get(CONNECTION_ID)
        conn = None if cid is None else self.connections.get(cid)
        # One answer for unknown, bound and another user's IDs: no oracle (issue 10 item 12).
        if conn is None or conn.state != ConnectionState.PENDING or conn.username != creds.username:
            raise StunProtocolError(ErrorCode.BAD_REQUEST, "Unknown or already bound CONNECTION-ID")
        alloc = self._by_id[conn.alloc_id]
        conn.move(ConnectionState.BOUND)
        self._bound += 1
        self._not_pending(conn.username)
        conn.data_five = five
        response = self._encode(msg, success_response(msg), creds)
        self._outputs.append(BindDataConnection(conn.id, five, response))
        self._outputs.append(RequestAnswered(five, msg.method_name))
        self._outputs.append(ConnectionBound(conn.id, alloc.id))

    def connection_closed(self, conn_id: int, now: float, reason: str = "closed") -> None:
        """The adapter finished relaying (or lost) connection ``conn_id``."""
        conn = self.connections.get(conn_id)
        if conn is not None:
            if conn.state == ConnectionState.CONNECTING:
                self._answer_connect_failure(conn, "Connection Timeout or Failure", now)
            self._drop_connection(conn, reason)

    def _forget_connection(self, conn_id: int) -> TcpConnection | None:
        conn = self.connections.pop(conn_id, None)
        if conn is not None and conn.state == ConnectionState.BOUND:
            self._bound -= 1
        elif conn is not None:
            self._not_pending(conn.username)
        return conn

    def _not_pending(self, username: str) -> None:
        self._pending_per_user[username] -= 1
        if self._pending_per_user[username] <= 0:
            del self._pending_per_user[username]

    def _drop_connection(self, conn: TcpConnection, reason: str) -> None:
        self._forget_connection(conn.id)
        alloc = self._by_id.get(conn.alloc_id)
        if alloc is not None:
            alloc.connections.discard(conn.id)
        self._outputs.append(ConnectionClosed(conn.id, conn.alloc_id, reason))

    # -- teardown ---------------------------------------------------------------------------------

    def _forget_allocation(self, alloc: Allocation) -> None:
        self.allocations.pop(alloc.five, None)
        self._by_id.pop(alloc.id, None)
        self._per_user[alloc.username] -= 1
        if self._per_user[alloc.username] <= 0:
            del self._per_user[alloc.username]
        self._per_ip[alloc.five.client[0]] -= 1
        if self._per_ip[alloc.five.client[0]] <= 0:
            del self._per_ip[alloc.five.client[0]]
        if self.quota_ledger is not None:
            self.quota_ledger.release(alloc.username, alloc.five.client[0])

    def _delete_allocation(
        self, alloc: Allocation, reason: str, *, close_control: bool = False
    ) -> None:
        """Close the relay and every data connection of the allocation (RFC 6062 §5.5).

        ``close_control``: also close its TCP/TLS control connection: the allocation expired
        while the client kept the connection open (Refresh 0 closes it after its answer).
        """
        for conn_id in sorted(alloc.connections):
            conn = self._forget_connection(conn_id)
            if conn is not None:
                self._outputs.append(ClosePeerConnection(conn_id))
                self._outputs.append(ConnectionClosed(conn_id, alloc.id, "allocation deleted"))
        alloc.connections.clear()
        self._forget_allocation(alloc)
        self._outputs.append(CloseRelay(alloc.id))
        self._outputs.append(AllocationDeleted(alloc.id, reason))
        if close_control and alloc.five.stream:
            self._outputs.append(CloseClientConnection(alloc.five))

    def close(self) -> None:
        """Delete every allocation (server shutdown)."""
        for alloc in list(self._by_id.values()):
            self._delete_allocation(alloc, "server shutdown")
