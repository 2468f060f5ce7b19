"""The asyncio TURN server on real loopback sockets (RFC 8656, RFC 6062).

The relay runs in-process (``start_relay``); the client side is written here from the STUN codec
so each test controls exactly which bytes go where and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import socket
import struct
import termios
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from delshare.aio.server import RelayConfig, RunningRelay, start_relay
from delshare.stun import attributes as at
from delshare.stun.constants import PROTO_TCP, PROTO_UDP, Attr, MessageClass, Method
from delshare.stun.credentials import long_term_key
from delshare.stun.framing import StreamFramer
from delshare.stun.message import Message, decode_message
from delshare.turn.auth import AuthConfig
from delshare.turn.server_config import ServerConfig

REALM, USER, PASSWORD = "test.realm", "alice", "secret"
KEY = long_term_key(USER, REALM, PASSWORD)
HOST = "127.0.0.1"
STEP = 10.0  # generous bound for any single network step
POLL = 0.01  # seconds between checks of a condition we wait for


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    server = ServerConfig(auth=AuthConfig(REALM, {USER: PASSWORD}), allow_peers=("127.0.0.0/8",))
    running = await start_relay(RelayConfig(server=server, listen=((HOST, 0),)))
    try:
        yield running
    finally:
        await running.close()


@dataclass
class StunStream:
    """A TCP connection to the relay speaking STUN, with long-term auth."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    nonce: str | None = None
    framer: StreamFramer = field(default_factory=StreamFramer)
    inbox: list[Message] = field(default_factory=list)

    @classmethod
    async def open(cls, port: int) -> StunStream:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def next_message(self) -> Message:
        while not self.inbox:
            data = await asyncio.wait_for(self.reader.read(65536), STEP)
            assert data, "relay closed the connection"
            self.inbox += [decode_message(f) for f in self.framer.feed(data)]
        return self.inbox.pop(0)

    async def request(self, method: int, *attrs: tuple[int, object]) -> Message:
        for _ in range(2):
            msg = Message(method, MessageClass.REQUEST)
            for kind, value in attrs:
                msg.add(kind, value)
            if self.nonce:
                msg.add(at.USERNAME, USER).add(at.REALM, REALM).add(at.NONCE, self.nonce)
            self.writer.write(msg.encode(KEY if self.nonce else None, fingerprint=True))
            reply = await self.next_message()
            while reply.transaction_id != msg.transaction_id:
                self.inbox.append(reply)  # an indication; keep it for later
                reply = await self.next_message()
            if reply.error and reply.error[0] == 401 and self.nonce is None:
                self.nonce = reply.get(at.NONCE)
                continue
            return reply
        return reply

    async def indication(self, method: int) -> Message:
        for i, msg in enumerate(self.inbox):
            if msg.method == method and msg.cls == MessageClass.INDICATION:
                return self.inbox.pop(i)
        while True:
            msg = await self.next_message()
            if msg.method == method and msg.cls == MessageClass.INDICATION:
                return msg

    def close(self) -> None:
        self.writer.close()


async def tcp_allocation(relay: RunningRelay) -> tuple[StunStream, tuple[str, int]]:
    control = await StunStream.open(relay.turn_port)
    reply = await control.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, PROTO_TCP))
    assert reply.cls == MessageClass.SUCCESS, reply.error
    relayed = reply.get(at.XOR_RELAYED_ADDRESS)
    assert relayed is not None
    reply = await control.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, (HOST, 1)))
    assert reply.cls == MessageClass.SUCCESS, reply.error
    return control, relayed


async def learn_nonce(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    """This connection's nonce (nonces are bound to the 5-tuple): an unsigned request's 401."""
    writer.write(Message(Method.REFRESH, MessageClass.REQUEST).encode())
    head = await asyncio.wait_for(reader.readexactly(20), STEP)
    body = await asyncio.wait_for(reader.readexactly(int.from_bytes(head[2:4], "big")), STEP)
    nonce = decode_message(head + body).get(at.NONCE)
    assert nonce is not None
    return nonce


async def connection_bind(
    relay: RunningRelay, control: StunStream, cid: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a data connection, bind it, return it positioned after the success response."""
    data = await StunStream.open(relay.turn_port)
    nonce = control.nonce
    for _ in range(2):  # nonces are bound to the 5-tuple: a new connection learns its own (438)
        msg = Message(Method.CONNECTION_BIND, MessageClass.REQUEST).add(at.CONNECTION_ID, cid)
        msg.add(at.USERNAME, USER).add(at.REALM, REALM).add(at.NONCE, nonce or "")
        data.writer.write(msg.encode(KEY, fingerprint=True))
        head = await asyncio.wait_for(data.reader.readexactly(20), STEP)
        size = int.from_bytes(head[2:4], "big")
        reply = decode_message(head + await asyncio.wait_for(data.reader.readexactly(size), STEP))
        if reply.error is None or reply.error[0] != 438:
            break
        nonce = reply.get(at.NONCE)
    assert reply.method == Method.CONNECTION_BIND and reply.cls == MessageClass.SUCCESS, reply.error
    assert reply.verify_integrity(KEY)
    return data.reader, data.writer


async def incoming_peer(
    relay: RunningRelay,
) -> tuple[StunStream, asyncio.StreamReader, asyncio.StreamWriter, int]:
    """A TCP allocation and a peer that dialled its relayed address; returns the CONNECTION-ID."""
    control, relayed = await tcp_allocation(relay)
    peer_reader, peer_writer = await asyncio.open_connection(*relayed)
    attempt = await control.indication(Method.CONNECTION_ATTEMPT)
    assert attempt.get(at.XOR_PEER_ADDRESS) == peer_writer.get_extra_info("sockname")
    cid = attempt.get(at.CONNECTION_ID)
    assert cid is not None
    return control, peer_reader, peer_writer, cid


async def read_all(reader: asyncio.StreamReader, size: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(size), STEP * 3)


async def test_early_peer_data_is_held_and_delivered_in_order(relay: RunningRelay) -> None:
    """4 MiB sent by the peer before ConnectionBind all arrive, in order, after it (issue 2)."""
    control, peer_reader, peer_writer, cid = await incoming_peer(relay)
    payload = os.urandom(4 << 20)

    async def send() -> None:
        peer_writer.write(payload)
        await peer_writer.drain()

    sender = asyncio.create_task(send())
    await asyncio.sleep(0.3)  # let the peer push what the kernel will take before the bind
    client_reader, client_writer = await connection_bind(relay, control, cid)
    received = await read_all(client_reader, len(payload))
    await asyncio.wait_for(sender, STEP)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    client_writer.write(b"reply")
    assert await read_all(peer_reader, 5) == b"reply"
    for closable in (client_writer, peer_writer):
        closable.close()
    control.close()


async def test_early_peer_eof_is_delivered_after_the_data(relay: RunningRelay) -> None:
    """A FIN the peer sent before the bind reaches the client after the bytes (coturn #761)."""
    control, _peer_reader, peer_writer, cid = await incoming_peer(relay)
    peer_writer.write(b"early bytes")
    peer_writer.write_eof()
    await peer_writer.drain()
    client_reader, client_writer = await connection_bind(relay, control, cid)
    assert await asyncio.wait_for(client_reader.read(), STEP) == b"early bytes"
    client_writer.close()
    peer_writer.close()
    control.close()


async def test_half_close_propagates_both_ways(relay: RunningRelay) -> None:
    control, peer_reader, peer_writer, cid = await incoming_peer(relay)
    client_reader, client_writer = await connection_bind(relay, control, cid)
    # peer → client, then the peer's FIN; the other direction stays open
    peer_writer.write(b"peer data")
    peer_writer.write_eof()
    assert await asyncio.wait_for(client_reader.read(), STEP) == b"peer data"
    tail = os.urandom(1 << 20)
    client_writer.write(tail)
    client_writer.write_eof()
    got = await asyncio.wait_for(peer_reader.read(), STEP * 3)  # reads until the FIN
    assert got == tail
    client_writer.close()
    peer_writer.close()
    control.close()


async def test_closing_the_control_connection_closes_data_connections(
    relay: RunningRelay,
) -> None:
    """RFC 6062 §5.5: the allocation ends with its control connection, and so do its pipes."""
    control, peer_reader, peer_writer, cid = await incoming_peer(relay)
    client_reader, client_writer = await connection_bind(relay, control, cid)
    control.close()
    assert await asyncio.wait_for(client_reader.read(), STEP) == b""
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(peer_reader.readexactly(1), STEP)
    for closable in (client_writer, peer_writer):
        closable.close()


async def test_closing_the_client_data_connection_closes_the_peer(relay: RunningRelay) -> None:
    control, peer_reader, peer_writer, cid = await incoming_peer(relay)
    _client_reader, client_writer = await connection_bind(relay, control, cid)
    client_writer.write(b"bye")
    client_writer.close()
    assert await asyncio.wait_for(peer_reader.read(), STEP) == b"bye"
    peer_writer.close()
    control.close()


async def test_unbound_peer_connection_closes_after_bind_timeout() -> None:
    server = ServerConfig(
        auth=AuthConfig(REALM, {USER: PASSWORD}), allow_peers=("127.0.0.0/8",), bind_timeout=0.3
    )
    running = await start_relay(RelayConfig(server=server, listen=((HOST, 0),)))
    try:
        control, peer_reader, peer_writer, _cid = await incoming_peer(running)
        assert await asyncio.wait_for(peer_reader.read(), STEP) == b""
        peer_writer.close()
        control.close()
    finally:
        await running.close()


async def test_refused_incoming_peer_is_closed(relay: RunningRelay) -> None:
    control = await StunStream.open(relay.turn_port)
    reply = await control.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, PROTO_TCP))
    relayed = reply.get(at.XOR_RELAYED_ADDRESS)
    assert relayed is not None
    reader, writer = await asyncio.open_connection(*relayed)  # no permission installed
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), STEP)
    writer.close()
    control.close()


async def test_connect_comes_from_the_relayed_address(relay: RunningRelay) -> None:
    """RFC 6062 §5.2: the outgoing connection is bound to the relayed transport address."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_peer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    peer_server = await asyncio.start_server(on_peer, HOST, 0)
    peer_address = peer_server.sockets[0].getsockname()[:2]
    control, relayed = await tcp_allocation(relay)
    reply = await control.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, peer_address))
    assert reply.cls == MessageClass.SUCCESS, reply.error
    peer_reader, peer_writer = await asyncio.wait_for(accepted.get(), STEP)
    assert peer_writer.get_extra_info("peername")[:2] == relayed
    cid = reply.get(at.CONNECTION_ID)
    assert cid is not None
    client_reader, client_writer = await connection_bind(relay, control, cid)
    client_writer.write(b"ping")
    assert await read_all(peer_reader, 4) == b"ping"
    peer_writer.write(b"pong")
    assert await read_all(client_reader, 4) == b"pong"
    again = await control.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, peer_address))
    assert again.error is not None and again.error[0] == 446
    for closable in (client_writer, peer_writer, control):
        closable.close()
    peer_server.close()


async def test_connect_to_a_closed_port_is_447(relay: RunningRelay) -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        closed_port = probe.getsockname()[1]
    control, _ = await tcp_allocation(relay)
    reply = await control.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, (HOST, closed_port)))
    assert reply.error is not None and reply.error[0] == 447
    control.close()


async def test_udp_relay_send_and_data_indications(relay: RunningRelay) -> None:
    loop = asyncio.get_running_loop()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((HOST, 0))
    peer.setblocking(False)
    control = await StunStream.open(relay.turn_port)
    try:
        reply = await control.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, PROTO_UDP))
        relayed = reply.get(at.XOR_RELAYED_ADDRESS)
        assert relayed is not None
        peer_addr = peer.getsockname()
        await control.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, peer_addr))
        send = Message(Method.SEND, MessageClass.INDICATION)
        send.add(at.XOR_PEER_ADDRESS, peer_addr).add(at.DATA, b"to peer")
        control.writer.write(send.encode())
        data, source = await asyncio.wait_for(loop.sock_recvfrom(peer, 100), STEP)
        assert (data, source[:2]) == (b"to peer", relayed)
        await loop.sock_sendto(peer, b"to client", relayed)
        indication = await control.indication(Method.DATA)
        assert indication.get(at.DATA) == b"to client"
    finally:
        peer.close()
        control.close()


async def test_busy_port_raises_oserror(relay: RunningRelay) -> None:
    server = ServerConfig(auth=AuthConfig(REALM, {USER: PASSWORD}))
    with pytest.raises(OSError):
        await start_relay(RelayConfig(server=server, listen=((HOST, relay.turn_port),)))


async def test_ipv6_tcp_relay_with_incoming_peer() -> None:
    """IPv6 listener, REQUESTED-ADDRESS-FAMILY IPv6, a peer dialling the [::1] relayed address."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = ServerConfig(auth=AuthConfig(REALM, {USER: PASSWORD}), allow_peers=("::1/128",))
    try:
        running = await start_relay(RelayConfig(server=server, listen=(("::1", 0),)))
    except OSError:
        pytest.skip("::1 not available")
    try:
        reader, writer = await asyncio.open_connection("::1", running.turn_port)
        control = StunStream(reader, writer)
        reply = await control.request(
            Method.ALLOCATE,
            (Attr.REQUESTED_TRANSPORT, PROTO_TCP),
            (Attr.REQUESTED_ADDRESS_FAMILY, 2),
        )
        relayed = reply.get(at.XOR_RELAYED_ADDRESS)
        assert relayed is not None and relayed[0] == "::1"
        await control.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, ("::1", 1)))
        _peer_reader, peer_writer = await asyncio.open_connection(*relayed)
        attempt = await control.indication(Method.CONNECTION_ATTEMPT)
        cid = attempt.get(at.CONNECTION_ID)
        assert cid is not None
        data_reader, data_writer = await asyncio.open_connection("::1", running.turn_port)
        nonce = await learn_nonce(data_reader, data_writer)
        msg = Message(Method.CONNECTION_BIND, MessageClass.REQUEST).add(at.CONNECTION_ID, cid)
        msg.add(at.USERNAME, USER).add(at.REALM, REALM).add(at.NONCE, nonce or "")
        data_writer.write(msg.encode(KEY))
        head = await asyncio.wait_for(data_reader.readexactly(20), STEP)
        await data_reader.readexactly(int.from_bytes(head[2:4], "big"))
        peer_writer.write(b"six")
        assert await read_all(data_reader, 3) == b"six"
        for closable in (peer_writer, data_writer, writer):
            closable.close()
    finally:
        await running.close()


async def test_metrics_exporter_counts_allocations_and_bytes() -> None:
    server = ServerConfig(auth=AuthConfig(REALM, {USER: PASSWORD}), allow_peers=("127.0.0.0/8",))
    config = RelayConfig(server=server, listen=((HOST, 0),), metrics_listen=(HOST, 0))
    running = await start_relay(config)
    try:
        control, peer_reader, peer_writer, cid = await incoming_peer(running)
        client_reader, client_writer = await connection_bind(running, control, cid)
        peer_writer.write(b"x" * 1000)
        await read_all(client_reader, 1000)
        client_writer.close()
        peer_writer.close()
        assert await asyncio.wait_for(peer_reader.read(), STEP) == b""
        url = f"http://{HOST}:{running.server.metrics_port}/metrics"

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=STEP) as response:
                return str(response.read().decode())

        down = 'delshare_relay_bytes_total{direction="peer_to_client",transport="tcp"} 1000.0'
        text = ""
        for _ in range(100):
            text = await asyncio.to_thread(scrape)
            if down in text:
                break
            await asyncio.sleep(0.05)
        assert "delshare_relay_allocations 1.0" in text
        assert 'delshare_relay_allocations_created_total{transport="tcp"} 1.0' in text
        assert down in text
        assert 'delshare_relay_auth_challenges_total{code="401"}' in text
        assert 'delshare_relay_error_responses_total{code="401"}' not in text
        control.close()
    finally:
        await running.close()


async def test_idle_connection_without_allocation_is_closed() -> None:
    server = ServerConfig(auth=AuthConfig(REALM, {USER: PASSWORD}), allow_peers=("127.0.0.0/8",))
    config = RelayConfig(server=server, listen=((HOST, 0),), idle_timeout=1.0)
    running = await start_relay(config)
    try:
        idle_reader, idle_writer = await asyncio.open_connection(HOST, running.turn_port)
        control, _ = await tcp_allocation(running)
        assert await asyncio.wait_for(idle_reader.read(), STEP) == b""
        reply = await control.request(Method.REFRESH)  # the allocated one is still served
        assert reply.cls == MessageClass.SUCCESS
        idle_writer.close()
        control.close()
    finally:
        await running.close()


async def test_client_bytes_right_behind_connection_bind_reach_the_peer(
    relay: RunningRelay,
) -> None:
    """Bytes in the same segment as ConnectionBind are relay data, not STUN (RFC 6062 §5.4)."""
    control, peer_reader, peer_writer, cid = await incoming_peer(relay)
    reader, writer = await asyncio.open_connection(HOST, relay.turn_port)
    nonce = await learn_nonce(reader, writer)
    msg = Message(Method.CONNECTION_BIND, MessageClass.REQUEST).add(at.CONNECTION_ID, cid)
    msg.add(at.USERNAME, USER).add(at.REALM, REALM).add(at.NONCE, nonce)
    trailing = b"\x00\x01\x00\x00" + os.urandom(3000)  # looks like a STUN header, is not
    writer.write(msg.encode(KEY) + trailing)
    assert await read_all(peer_reader, len(trailing)) == trailing
    head = await asyncio.wait_for(reader.readexactly(20), STEP)
    body = await reader.readexactly(int.from_bytes(head[2:4], "big"))
    assert decode_message(head + body).cls == MessageClass.SUCCESS
    for closable in (writer, peer_writer):
        closable.close()
    control.close()


def kernel_queue(sock: socket.socket, request: int) -> int:
    """Bytes in one of the kernel's queues of ``sock``: ``termios.TIOCOUTQ`` (sent, not yet
    acknowledged) or ``termios.FIONREAD`` (received, not yet read)."""
    queued: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), request, bytes(4)))[0]
    return queued


def own_socket_connected_to(address: tuple[str, int]) -> socket.socket:
    """A duplicate of this process's TCP socket whose peer is ``address`` (the relay's end)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue  # not a socket (or already gone)
        with contextlib.suppress(OSError):
            if sock.type == socket.SOCK_STREAM and sock.getpeername() == address:
                return sock
        sock.close()
    raise AssertionError(f"no socket of this process is connected to {address}")


async def test_unbound_peer_is_held_back_by_flow_control(relay: RunningRelay) -> None:
    """Before ConnectionBind the relay reads nothing: a 64 MiB peer stalls (kernel buffers
    fill, TCP flow control pushes back) instead of growing the relay's memory; after the bind
    every byte arrives in order.

    No clock: the bytes are counted. Whatever the peer wrote is still in its transport's
    buffer, its kernel send queue or the relay socket's receive queue until the relay reads
    (bytes just delivered may be counted twice, received but not yet acknowledged: the sum can
    only exceed what was written while the relay reads nothing).
    """
    control, _peer_reader, peer_writer, cid = await incoming_peer(relay)
    peer = peer_writer.get_extra_info("socket")
    relay_end = own_socket_connected_to(peer.getsockname())
    block = os.urandom(1 << 20)
    written = 0

    async def send() -> None:
        nonlocal written
        for _ in range(64):
            peer_writer.write(block)
            written += len(block)
            await peer_writer.drain()
        peer_writer.write_eof()

    def waiting_in_queues() -> int:
        return (
            peer_writer.transport.get_write_buffer_size()
            + kernel_queue(peer, termios.TIOCOUTQ)
            + kernel_queue(relay_end, termios.FIONREAD)
        )

    sender = asyncio.create_task(send())
    for _ in range(int(STEP / POLL)):  # until flow control reaches the peer's own buffer
        assert waiting_in_queues() >= written, "the relay read from an unbound peer"
        if peer_writer.transport.get_write_buffer_size():
            break
        await asyncio.sleep(POLL)
    assert peer_writer.transport.get_write_buffer_size() and not sender.done()
    relay_end.close()
    client_reader, client_writer = await connection_bind(relay, control, cid)
    digest, total = hashlib.sha256(), 0
    while chunk := await asyncio.wait_for(client_reader.read(1 << 20), STEP):
        digest.update(chunk)
        total += len(chunk)
    await asyncio.wait_for(sender, STEP)
    assert total == 64 << 20
    assert digest.digest() == hashlib.sha256(block * 64).digest()
    for closable in (client_writer, peer_writer):
        closable.close()
    control.close()


async def test_bytes_are_counted_when_the_allocation_ends_mid_stream() -> None:
    """RFC 6062 §5.5 teardown cancels the bridge; what it moved still reaches the counters."""
    server = ServerConfig(auth=AuthConfig(REALM, {USER: PASSWORD}), allow_peers=("127.0.0.0/8",))
    running = await start_relay(RelayConfig(server=server, listen=((HOST, 0),)))
    try:
        control, peer_reader, peer_writer, cid = await incoming_peer(running)
        client_reader, _client_writer = await connection_bind(running, control, cid)
        peer_writer.write(b"y" * 1500)
        await read_all(client_reader, 1500)
        control.close()  # the allocation ends while both data connections are still open
        assert await asyncio.wait_for(peer_reader.read(), STEP) == b""
        for _ in range(100):
            if running.server.bytes_relayed == 1500:
                break
            await asyncio.sleep(0.05)
        assert running.server.bytes_relayed == 1500
        peer_writer.close()
    finally:
        await running.close()


def _no_delay_towards(peer: tuple[str, int]) -> int:
    """TCP_NODELAY on the relay's socket to ``peer`` (found through the kernel, by address)."""
    with own_socket_connected_to(peer) as sock:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_peer_connections_have_no_nagle_delay_both_directions(relay: RunningRelay) -> None:
    """A relay must not hold back a small tail for a delayed ACK (~40 ms per exchange)."""
    control, _peer_reader, peer_writer, _ = await incoming_peer(relay)
    assert _no_delay_towards(peer_writer.get_extra_info("sockname")) == 1
    peer_server = await asyncio.start_server(lambda r, w: None, HOST, 0)
    peer_address = peer_server.sockets[0].getsockname()[:2]
    reply = await control.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, peer_address))
    assert reply.cls == MessageClass.SUCCESS and reply.get(at.CONNECTION_ID) is not None
    assert _no_delay_towards(peer_address) == 1
    for closable in (peer_writer, control):
        closable.close()
    peer_server.close()
