"""A small blocking TURN client for the benchmarks, built on ``delshare.stun``.

It is the bench's control plane when ``delshare.aio.client`` is not importable: long-term
credentials (RFC 8489 §9.2), Allocate / CreatePermission / ChannelBind (RFC 8656 §7, §9, §12),
Connect / ConnectionBind (RFC 6062 §4.3, §4.4). Data is moved on the raw sockets it returns, so
the same pump code runs against every server. One object, one control connection, one thread.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from delshare.stun import Attr, Message, MessageClass, Method, decode_message
from delshare.stun.credentials import long_term_key

Address = tuple[str, int]
TCP, UDP = 6, 17


class TurnFailed(Exception):
    """A TURN request failed (error response, timeout or closed connection)."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise TurnFailed("connection closed by the server")
        buf += chunk
    return bytes(buf)


def read_stun(sock: socket.socket) -> Message:
    """Read exactly one STUN frame from a stream socket, never more (RFC 8656 §12.5)."""
    head = _recv_exact(sock, 20)
    (length,) = struct.unpack("!H", head[2:4])
    return decode_message(head + _recv_exact(sock, length))


@dataclass
class Credentials:
    """Long-term credential state: the key plus the realm/nonce the server last gave."""

    user: str
    password: str
    realm: str = ""
    nonce: str = ""
    key: bytes = b""

    def learn(self, answer: Message) -> None:
        """Take REALM and NONCE from a 401/438 (RFC 8489 §9.2.4)."""
        self.realm = answer.get_str(Attr.REALM) or self.realm
        self.nonce = answer.get_str(Attr.NONCE) or self.nonce
        self.key = long_term_key(self.user, self.realm, self.password)

    def sign(self, msg: Message) -> bytes:
        """Encode with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY once we know the realm."""
        if not self.key:
            return msg.encode()
        msg.attributes = [a for a in msg.attributes if a[0] not in _AUTH_ATTRS]
        msg.add(Attr.USERNAME, self.user).add(Attr.REALM, self.realm).add(Attr.NONCE, self.nonce)
        return msg.encode(self.key)


_AUTH_ATTRS = {Attr.USERNAME, Attr.REALM, Attr.NONCE}


@dataclass
class MiniTurn:
    """One control connection (TCP or UDP) to a TURN server and its allocation."""

    server: Address
    creds: Credentials
    transport: int = TCP
    timeout: float = 10.0
    sock: socket.socket = field(init=False)
    relayed: Address | None = None
    indications: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        kind = socket.SOCK_STREAM if self.transport == TCP else socket.SOCK_DGRAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.server)

    @classmethod
    def open(cls, server: Address, user: str, password: str, transport: int = TCP) -> MiniTurn:
        """A new control connection with the given credentials."""
        return cls(server, Credentials(user, password), transport)

    def close(self) -> None:
        """Close the control connection; the server then frees the allocation (RFC 6062 §5.5)."""
        self.sock.close()

    def _exchange(self, data: bytes, tid: bytes) -> Message:
        if self.transport == UDP:
            return self._exchange_udp(data, tid)
        self.sock.sendall(data)
        for _ in range(1000):
            msg = read_stun(self.sock)
            if msg.transaction_id == tid:
                return msg
            self.indications.append(msg)
        raise TurnFailed("no answer among 1000 frames")

    def _exchange_udp(self, data: bytes, tid: bytes) -> Message:
        self.sock.settimeout(0.5)
        for _ in range(7):  # RFC 8489 §6.2.1 Rc = 7, fixed RTO is enough on loopback
            self.sock.send(data)
            try:
                for _ in range(1000):
                    raw = self.sock.recv(65536)
                    if raw[:1] < b"\x40" and raw[8:20] == tid:
                        return decode_message(raw)
            except TimeoutError:
                continue
        raise TurnFailed("UDP transaction timed out")

    def request(self, msg: Message) -> Message:
        """Send a request, answering 401/438 once with credentials (RFC 8489 §9.2.4)."""
        for _ in range(3):
            answer = self._exchange(self.creds.sign(msg), msg.transaction_id)
            err = answer.error
            if err is None:
                return answer
            if err[0] not in (401, 438):
                raise TurnFailed(f"{msg.method_name} failed: {err[0]} {err[1]}")
            self.creds.learn(answer)
            msg = Message(msg.method, msg.cls, attributes=list(msg.attributes))
        raise TurnFailed(f"{msg.method_name}: authentication failed")

    def allocate(self, transport: int = TCP, lifetime: int = 600) -> Address:
        """Allocate a relayed address (RFC 8656 §7.1; TCP per RFC 6062 §4.1)."""
        msg = Message(Method.ALLOCATE, MessageClass.REQUEST)
        msg.add(Attr.REQUESTED_TRANSPORT, transport).add(Attr.LIFETIME, lifetime)
        answer = self.request(msg)
        relayed = answer.get_address(Attr.XOR_RELAYED_ADDRESS)
        if relayed is None:
            raise TurnFailed("Allocate success without XOR-RELAYED-ADDRESS")
        self.relayed = relayed
        return relayed

    def permit(self, peer: Address) -> None:
        """CreatePermission for the peer's IP (RFC 8656 §9)."""
        msg = Message(Method.CREATE_PERMISSION, MessageClass.REQUEST)
        self.request(msg.add(Attr.XOR_PEER_ADDRESS, peer))

    def channel_bind(self, peer: Address, channel: int) -> None:
        """ChannelBind (RFC 8656 §12.1)."""
        msg = Message(Method.CHANNEL_BIND, MessageClass.REQUEST)
        msg.add(Attr.CHANNEL_NUMBER, channel).add(Attr.XOR_PEER_ADDRESS, peer)
        self.request(msg)

    def connect(self, peer: Address) -> int:
        """Connect: the server dials the peer and answers with CONNECTION-ID (RFC 6062 §4.3)."""
        answer = self.request(
            Message(Method.CONNECT, MessageClass.REQUEST).add(Attr.XOR_PEER_ADDRESS, peer)
        )
        cid = answer.get_int(Attr.CONNECTION_ID)
        if cid is None:
            raise TurnFailed("Connect success without CONNECTION-ID")
        return cid

    def bind_data(self, cid: int) -> socket.socket:
        """Open a data connection and ConnectionBind it (RFC 6062 §4.4); returns the raw socket."""
        data = socket.create_connection(self.server, timeout=self.timeout)
        msg = Message(Method.CONNECTION_BIND, MessageClass.REQUEST).add(Attr.CONNECTION_ID, cid)
        for _ in range(3):
            data.sendall(self.creds.sign(msg))
            answer = read_stun(data)
            err = answer.error
            if err is None:
                return data
            if err[0] not in (401, 438):
                data.close()
                raise TurnFailed(f"ConnectionBind failed: {err[0]} {err[1]}")
            self.creds.learn(answer)
            msg = Message(msg.method, msg.cls, attributes=list(msg.attributes))
        data.close()
        raise TurnFailed("ConnectionBind: authentication failed")

    def refresh_zero(self) -> None:
        """Delete the allocation (RFC 8656 §7.2, LIFETIME 0)."""
        self.request(Message(Method.REFRESH, MessageClass.REQUEST).add(Attr.LIFETIME, 0))


def channel_frame(channel: int, payload: bytes) -> bytes:
    """ChannelData header + payload (RFC 8656 §12.4; no padding needed on UDP)."""
    return struct.pack("!HH", channel, len(payload)) + payload
