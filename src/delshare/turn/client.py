"""Sans-IO TURN client core: transactions, long-term authentication, received frames.

Theory of operation. The caller hands ``request()`` a method and attributes; the core builds the
STUN request, queues its bytes (``data_to_send()``) and remembers it under a *handle* (the first
transaction ID) that stays stable while authentication retries change the real transaction ID.
Whole frames come back through ``receive(frame, now)`` (the adapter does stream framing); the core
matches responses to transactions, verifies their integrity, and answers the server's challenges
itself: 401 teaches realm and nonce and the request is re-sent with credentials, 438 teaches a
fresh nonce (RFC 8489 §9.2.5). Only the outcome is reported, as events from ``next_event()``:
``TransactionSucceeded``, ``TransactionFailed``, ``ConnectionAttempted`` (RFC 6062 §4.4) and
``PeerDataReceived`` (Data indication or ChannelData, RFC 8656 §11, §12). Timers: over UDP a
request is re-sent on the RFC 8489 §6.2.1 schedule (RTO 500 ms doubling, 7 sends, then 16 RTO);
over TCP/TLS it is sent once and times out after 39.5 s (§6.2.2). ``get_timer()`` gives the next
deadline and ``handle_timer(now)`` acts on it.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from delshare.errors import DelshareError, StunDecodeError, TransactionTimeout
from delshare.stun.attributes import (
    ALTERNATE_SERVER,
    CHANNEL_NUMBER,
    CONNECTION_ID,
    DATA,
    NONCE,
    PASSWORD_ALGORITHM,
    PASSWORD_ALGORITHMS,
    REALM,
    USERNAME,
    XOR_PEER_ADDRESS,
    Address,
    Attribute,
)
from delshare.stun.constants import (
    NONCE_COOKIE,
    PASSWORD_ALGORITHM_MD5,
    PASSWORD_ALGORITHM_SHA256,
    ErrorCode,
    MessageClass,
    Method,
)
from delshare.stun.credentials import long_term_key
from delshare.stun.framing import decode_channel_data
from delshare.stun.message import Message, decode_message, new_transaction_id
from delshare.turn.client_errors import ResponseIntegrityError, error_for, method_name

RTO = 0.5  # RFC 8489 §6.2.1 initial retransmission timeout
RC = 7  # RFC 8489 §6.2.1 sends in all
RM = 16  # RFC 8489 §6.2.1 last wait, in RTOs
TCP_TIMEOUT = 39.5  # RFC 8489 §6.2.2
MAX_STALE_RETRIES = 3  # 438 answers we follow per request before giving up

Attrs = Sequence[Attribute]
"""A request's attributes, each made by its typed key (``LIFETIME(600)``)."""


@dataclass(frozen=True)
class TransactionSucceeded:
    """A request identified by ``handle`` got a success response."""

    handle: bytes
    response: Message


@dataclass(frozen=True)
class TransactionFailed:
    """A request failed: error response (typed ``TransactionError``) or timeout."""

    handle: bytes
    error: DelshareError


@dataclass(frozen=True)
class ConnectionAttempted:
    """A peer connected to the TCP relayed address (RFC 6062 §4.4 ConnectionAttempt)."""

    connection_id: int
    peer: Address


@dataclass(frozen=True)
class PeerDataReceived:
    """A datagram relayed from ``peer`` (Data indication or ChannelData, RFC 8656 §11.6, §12.6)."""

    peer: Address
    data: bytes


ClientEvent = TransactionSucceeded | TransactionFailed | ConnectionAttempted | PeerDataReceived


def nonce_offers_password_algorithms(nonce: str) -> bool:
    """Nonce cookie with the "Password algorithms" feature bit 0 set (RFC 8489 §9.2, §18.1)."""
    if not nonce.startswith(NONCE_COOKIE) or len(nonce) < len(NONCE_COOKIE) + 4:
        return False
    try:
        bits = base64.b64decode(nonce[len(NONCE_COOKIE) : len(NONCE_COOKIE) + 4], validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(bits[0] & 0x80)


@dataclass
class AuthState:
    """Long-term credentials and what the server taught us (RFC 8489 §9.2)."""

    username: str
    password: str
    realm: str | None = None
    nonce: str | None = None
    algorithms: tuple[tuple[int, bytes], ...] | None = None  # PASSWORD-ALGORITHMS as offered
    stale_nonces: int = 0  # 438 answers seen, for diagnostics and tests

    @property
    def ready(self) -> bool:
        """Whether realm and nonce are known, so requests can carry credentials."""
        return self.realm is not None and self.nonce is not None

    @property
    def algorithm(self) -> int:
        """SHA-256 if the server offered it, else MD5 (RFC 8489 §9.2.4)."""
        offered = [alg for alg, _ in self.algorithms or ()]
        return (
            PASSWORD_ALGORITHM_SHA256
            if PASSWORD_ALGORITHM_SHA256 in offered
            else (PASSWORD_ALGORITHM_MD5)
        )

    @property
    def sha256(self) -> bool:
        """Use MESSAGE-INTEGRITY-SHA256 once the server offered password algorithms (§9.2.4)."""
        return self.algorithms is not None

    @property
    def key(self) -> bytes:
        """The long-term key (RFC 8489 §9.2.2)."""
        return long_term_key(self.username, self.realm or "", self.password, self.algorithm)

    def learn(self, response: Message) -> None:
        """Take REALM, NONCE and PASSWORD-ALGORITHMS from a 401/438 (RFC 8489 §9.2.5)."""
        self.realm = response.get(REALM) or self.realm
        self.nonce = response.get(NONCE) or self.nonce
        offered = response.get(PASSWORD_ALGORITHMS)
        if self.nonce and nonce_offers_password_algorithms(self.nonce) and offered:
            self.algorithms = offered

    def credentials_attrs(self) -> list[Attribute]:
        """USERNAME, REALM, NONCE (+ PASSWORD-ALGORITHMS/-ALGORITHM) (RFC 8489 §9.2.3.2)."""
        attrs = [USERNAME(self.username), REALM(self.realm or ""), NONCE(self.nonce or "")]
        if self.algorithms is not None:
            attrs.append(PASSWORD_ALGORITHMS(self.algorithms))
            attrs.append(PASSWORD_ALGORITHM((self.algorithm, b"")))
        return attrs


@dataclass
class _Transaction:
    handle: bytes
    method: int
    attrs: Attrs
    authenticate: bool
    message: Message = field(init=False)
    data: bytes = b""
    key: bytes | None = None
    sent_nonce: str | None = None
    sends: int = 0
    deadline: float = 0.0
    unauth_retries: int = 0
    stale_retries: int = 0


class TurnClientCore:
    """One control connection's client state: transactions, auth, received frames."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        reliable: bool,
        rto: float = RTO,
        fingerprint: bool = True,
    ) -> None:
        self.auth = AuthState(username, password)
        self.reliable = reliable
        self.rto = rto
        self.fingerprint = fingerprint
        self.channels: dict[int, Address] = {}
        self._transactions: dict[bytes, _Transaction] = {}
        self._outgoing: list[bytes] = []
        self._events: deque[ClientEvent] = deque()

    def fork(self, *, reliable: bool = True) -> TurnClientCore:
        """A core for a new connection (e.g. an RFC 6062 data connection) with our auth state."""
        core = TurnClientCore(
            self.auth.username,
            self.auth.password,
            reliable=reliable,
            rto=self.rto,
            fingerprint=self.fingerprint,
        )
        core.auth = replace(self.auth, stale_nonces=0)
        return core

    # -- outgoing -------------------------------------------------------------------------

    def request(self, method: int, attrs: Attrs, now: float, *, authenticate: bool = True) -> bytes:
        """Queue a request; return its handle. Credentials go in once realm/nonce are known."""
        handle = new_transaction_id()
        self._start(_Transaction(handle, method, list(attrs), authenticate), handle, now)
        return handle

    def indication(self, method: int, attrs: Attrs) -> None:
        """Queue an indication (Send, RFC 8656 §11.1); never authenticated, never answered."""
        msg = Message(method, MessageClass.INDICATION, attributes=list(attrs))
        self._outgoing.append(msg.encode(fingerprint=self.fingerprint))

    def queue_raw(self, data: bytes) -> None:
        """Queue bytes that are already a frame (ChannelData)."""
        self._outgoing.append(data)

    def data_to_send(self) -> list[bytes]:
        """Frames (stream) or datagrams (UDP) to write now."""
        out, self._outgoing = self._outgoing, []
        return out

    def _start(self, tx: _Transaction, tid: bytes, now: float) -> None:
        tx.message = Message(tx.method, MessageClass.REQUEST, tid, list(tx.attrs))
        tx.key, tx.sent_nonce = None, None
        if tx.authenticate and self.auth.ready:
            tx.message.extend(self.auth.credentials_attrs())
            tx.key, tx.sent_nonce = self.auth.key, self.auth.nonce
        sha256 = tx.key is not None and self.auth.sha256
        tx.data = tx.message.encode(tx.key, sha256=sha256, fingerprint=self.fingerprint)
        self._transactions[tid] = tx
        tx.sends = 0
        self._send(tx, now)

    def _send(self, tx: _Transaction, now: float) -> None:
        self._outgoing.append(tx.data)
        tx.sends += 1
        if self.reliable:
            tx.deadline = now + TCP_TIMEOUT
        elif tx.sends < RC:
            tx.deadline = now + self.rto * 2 ** (tx.sends - 1)
        else:
            tx.deadline = now + self.rto * RM

    # -- timers ---------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest retransmission or timeout deadline, if any request is pending."""
        return min((tx.deadline for tx in self._transactions.values()), default=None)

    def handle_timer(self, now: float) -> None:
        """Retransmit (UDP) or time out every request whose deadline has passed."""
        for tid, tx in list(self._transactions.items()):
            if tx.deadline > now:
                continue
            if not self.reliable and tx.sends < RC:
                self._send(tx, now)
            else:
                del self._transactions[tid]
                timeout = TransactionTimeout(f"{method_name(tx.method)}: no response from server")
                self._events.append(TransactionFailed(tx.handle, timeout))

    def cancel(self, handle: bytes) -> None:
        """Forget a request (its caller gave up)."""
        for tid, tx in list(self._transactions.items()):
            if tx.handle == handle:
                del self._transactions[tid]

    # -- incoming -------------------------------------------------------------------------

    def next_event(self) -> ClientEvent | None:
        """Pop the next event, if any."""
        return self._events.popleft() if self._events else None

    def receive(self, frame: bytes, now: float) -> None:
        """Handle one STUN message or ChannelData frame; malformed input is dropped."""
        try:
            if frame and frame[0] >> 6 == 0b01:
                self._receive_channel_data(frame)
            else:
                self._receive_message(decode_message(frame), now)
        except StunDecodeError:
            return  # RFC 8489 §6.3: silently discard what does not parse

    def _receive_channel_data(self, frame: bytes) -> None:
        chan = decode_channel_data(frame)
        peer = self.channels.get(chan.channel)
        if peer is not None:
            self._events.append(PeerDataReceived(peer, chan.data))

    def _receive_message(self, msg: Message, now: float) -> None:
        if msg.cls == MessageClass.INDICATION:
            self._receive_indication(msg)
        elif msg.cls in (MessageClass.SUCCESS, MessageClass.ERROR):
            tx = self._transactions.get(msg.transaction_id)
            if tx is not None and tx.method == msg.method:
                self._receive_response(tx, msg, now)

    def _receive_indication(self, msg: Message) -> None:
        peer = msg.get(XOR_PEER_ADDRESS)
        if peer is None:
            return
        if msg.method == Method.CONNECTION_ATTEMPT:
            cid = msg.get(CONNECTION_ID)
            if cid is not None:
                self._events.append(ConnectionAttempted(cid, peer))
        elif msg.method == Method.DATA:
            data = msg.get(DATA)
            if data is not None:
                self._events.append(PeerDataReceived(peer, data))

    def _receive_response(self, tx: _Transaction, msg: Message, now: float) -> None:
        if not self._integrity_ok(tx, msg):
            if self.reliable:  # over a stream nothing else will come: fail fast
                self._finish(
                    tx, msg, ResponseIntegrityError(method_name(tx.method), 0, "bad integrity")
                )
            return  # RFC 8489 §9.2.5: over UDP discard and keep waiting
        if msg.cls == MessageClass.SUCCESS:
            self._on_success(tx, msg)
        elif not self._retry_after_challenge(tx, msg, now):
            code, reason = msg.error or (0, "error response without ERROR-CODE")
            alternate = msg.get(ALTERNATE_SERVER)
            self._finish(tx, msg, error_for(tx.method, code, reason, alternate))

    def _integrity_ok(self, tx: _Transaction, msg: Message) -> bool:
        """Success needs valid integrity when we authenticated; errors only if they carry it."""
        if tx.key is None:
            return True
        if not msg.has_integrity:
            return msg.cls == MessageClass.ERROR
        return msg.verify_integrity(tx.key)

    def _retry_after_challenge(self, tx: _Transaction, msg: Message, now: float) -> bool:
        """Follow 401 (first time, or a new nonce) and 438 (bounded) (RFC 8489 §9.2.5)."""
        code = msg.error[0] if msg.error else 0
        nonce = msg.get(NONCE)
        if code == ErrorCode.UNAUTHENTICATED and msg.has(REALM) and nonce:
            if tx.key is not None:  # credentials were sent: retry once, only for a new nonce
                if nonce == tx.sent_nonce or tx.unauth_retries:
                    return False
                tx.unauth_retries += 1
            tx.authenticate = True
        elif code == ErrorCode.STALE_NONCE and nonce and tx.stale_retries < MAX_STALE_RETRIES:
            tx.stale_retries += 1
            self.auth.stale_nonces += 1
            tx.authenticate = True
        else:
            return False
        self.auth.learn(msg)
        del self._transactions[tx.message.transaction_id]
        self._start(tx, new_transaction_id(), now)
        return True

    def _on_success(self, tx: _Transaction, msg: Message) -> None:
        if tx.method == Method.CHANNEL_BIND:
            channel = tx.message.get(CHANNEL_NUMBER)
            peer = tx.message.get(XOR_PEER_ADDRESS)
            if channel is not None and peer is not None:
                self.channels[channel] = peer
        self._finish(tx, msg, None)

    def _finish(self, tx: _Transaction, msg: Message, error: DelshareError | None) -> None:
        self._transactions.pop(msg.transaction_id, None)
        if error is None:
            self._events.append(TransactionSucceeded(tx.handle, msg))
        else:
            self._events.append(TransactionFailed(tx.handle, error))
