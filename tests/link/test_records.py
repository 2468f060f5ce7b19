"""Encrypted record channel: handshake, AEAD records, tampering, bounds — over real loopback TCP."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import itertools
import os
import socket
import ssl
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delshare.link.records import (
    CONFIRM_SIZE,
    HELLO_SIZE,
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE,
    MAX_PAYLOAD,
    TAG_SIZE,
    USER_TIMEOUT_MS,
    Handshake,
    LinkAuthError,
    LinkClosedError,
    LinkProtocolError,
    LinkTimeoutError,
    RecordChannel,
    RecordDecoder,
    RecordIntegrityError,
    RecordKind,
    RecordOpener,
    RecordSealer,
    handshake,
)
from tests.support.tlscert import make_self_signed

KEY = os.urandom(32)
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def stream_pair() -> tuple[Streams, Streams]:
    accepted: asyncio.Queue[Streams] = asyncio.Queue()

    async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.open_connection("127.0.0.1", port)
    peer = await asyncio.wait_for(accepted.get(), 10)
    server.close()
    return client, peer


async def linked(key_a: bytes = KEY, key_b: bytes = KEY) -> tuple[RecordChannel, RecordChannel]:
    a, b = await stream_pair()
    return await asyncio.gather(
        handshake(*a, key_a, "initiator", timeout=10), handshake(*b, key_b, "responder", timeout=10)
    )


async def raw_handshake(streams: Streams, role: str = "initiator") -> tuple[RecordSealer, bytes]:
    """Do the handshake by hand with the sans-IO core; return a sealer for raw record writes."""
    reader, writer = streams
    state = Handshake(KEY, role)  # type: ignore[arg-type]
    writer.write(state.hello())
    confirm = state.receive_hello(await reader.readexactly(HELLO_SIZE))
    writer.write(confirm)
    keys = state.receive_confirm(await reader.readexactly(CONFIRM_SIZE))
    return RecordSealer(keys.send_key), keys.recv_key


async def test_records_flow_both_ways_with_kinds() -> None:
    a, b = await linked()
    await a.send(b"hello")
    await a.send_control(b'{"type":"x"}')
    await b.send(os.urandom(MAX_PAYLOAD))
    first, second = await b.recv_record(), await b.recv_record()
    assert (first.kind, first.payload) == (RecordKind.DATA, b"hello")
    assert (second.kind, second.payload) == (RecordKind.CONTROL, b'{"type":"x"}')
    assert len(await a.recv()) == MAX_PAYLOAD
    await a.close()
    with pytest.raises(LinkClosedError) as info:
        await b.recv_record()
    assert info.value.clean
    await b.close()


async def test_channels_count_the_data_bytes_they_move() -> None:
    """DATA payload bytes are counted per channel, each way; CONTROL records are not."""
    a, b = await linked()
    await a.send(b"hello")
    await a.send_control(b'{"type":"x"}')
    await a.send(bytes(MAX_PAYLOAD))
    await b.send(b"abc")
    assert (await b.recv_record()).payload == b"hello"
    await b.recv_record()
    kind, length = await b.recv_into(memoryview(bytearray(MAX_PAYLOAD)))
    assert (kind, length) == (RecordKind.DATA, MAX_PAYLOAD)
    assert await a.recv() == b"abc"
    assert (a.data_sent, a.data_received) == (5 + MAX_PAYLOAD, 3)
    assert (b.data_sent, b.data_received) == (3, 5 + MAX_PAYLOAD)
    await a.close()
    await b.close()


async def test_sender_and_receiver_are_role_aliases() -> None:
    a, b = await stream_pair()
    x, y = await asyncio.gather(
        handshake(*a, KEY, "sender", timeout=10), handshake(*b, KEY, "receiver", timeout=10)
    )
    await y.send(b"ok")
    assert await x.recv() == b"ok"
    await x.close()
    await y.close()


async def test_wrong_key_fails_on_both_sides() -> None:
    a, b = await stream_pair()
    results = await asyncio.gather(
        handshake(*a, KEY, "initiator", timeout=10),
        handshake(*b, os.urandom(32), "responder", timeout=10),
        return_exceptions=True,
    )
    assert all(isinstance(r, LinkAuthError) for r in results), results


async def test_same_role_on_both_sides_fails() -> None:
    a, b = await stream_pair()
    results = await asyncio.gather(
        handshake(*a, KEY, "initiator", timeout=10),
        handshake(*b, KEY, "initiator", timeout=10),
        return_exceptions=True,
    )
    assert all(isinstance(r, LinkAuthError) for r in results), results


async def test_non_del_peer_is_refused() -> None:
    (ra, wa), (_rb, wb) = await stream_pair()
    wb.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(HELLO_SIZE))
    with pytest.raises(LinkAuthError):
        await handshake(ra, wa, KEY, "initiator", timeout=10)
    wb.close()


async def test_silent_peer_times_out() -> None:
    (ra, wa), (_rb, wb) = await stream_pair()
    with pytest.raises(LinkTimeoutError):
        await handshake(ra, wa, KEY, "initiator", timeout=0.2)
    wb.close()


async def test_peer_closing_during_handshake_is_a_closed_link() -> None:
    (ra, wa), (_rb, wb) = await stream_pair()
    wb.close()
    with pytest.raises(LinkClosedError):
        await handshake(ra, wa, KEY, "initiator", timeout=10)


@pytest.mark.parametrize("where", ["tag", "body", "kind"])
async def test_tampered_record_is_rejected(where: str) -> None:
    a, b = await stream_pair()
    (sealer, _), channel = await asyncio.gather(
        raw_handshake(a), handshake(*b, KEY, "responder", timeout=10)
    )
    header, ciphertext = sealer.seal(RecordKind.DATA, b"x" * 1000)
    record = bytearray(header + ciphertext)
    position = {"tag": len(record) - 1, "body": 100, "kind": 0}[where]
    record[position] ^= 0x01
    a[1].write(bytes(record))
    with pytest.raises(RecordIntegrityError):
        await channel.recv_record()
    await channel.close()


async def test_untampered_raw_record_is_accepted() -> None:
    """Control for the tampering test: the same raw path without the flip works."""
    a, b = await stream_pair()
    (sealer, _), channel = await asyncio.gather(
        raw_handshake(a), handshake(*b, KEY, "responder", timeout=10)
    )
    header, ciphertext = sealer.seal(RecordKind.DATA, b"x" * 1000)
    a[1].write(header + ciphertext)
    assert await channel.recv() == b"x" * 1000
    await channel.close()


async def test_replayed_record_is_rejected() -> None:
    a, b = await stream_pair()
    (sealer, _), channel = await asyncio.gather(
        raw_handshake(a), handshake(*b, KEY, "responder", timeout=10)
    )
    header, ciphertext = sealer.seal(RecordKind.DATA, b"once")
    a[1].write(header + ciphertext + header + ciphertext)
    assert await channel.recv() == b"once"
    with pytest.raises(RecordIntegrityError):
        await channel.recv()
    await channel.close()


async def test_oversized_record_is_refused_before_reading_it() -> None:
    a, b = await stream_pair()
    _, channel = await asyncio.gather(raw_handshake(a), handshake(*b, KEY, "responder", timeout=10))
    a[1].write(bytes([RecordKind.DATA]) + (MAX_PAYLOAD + TAG_SIZE + 1).to_bytes(4, "big"))
    with pytest.raises(LinkProtocolError):
        await channel.recv_record()
    await channel.close()


async def test_truncated_stream_is_not_a_clean_close() -> None:
    a, b = await linked()
    a.abort()
    with pytest.raises(LinkClosedError) as info:
        await b.recv_record()
    assert not info.value.clean
    await b.close()


async def test_records_sent_during_handshake_are_not_lost() -> None:
    """The peer's first records may already sit in the StreamReader when the channel takes over."""
    a, b = await stream_pair()
    sealer_and_key, channel = await asyncio.gather(
        raw_handshake(a), handshake(*b, KEY, "responder", timeout=10)
    )
    sealer = sealer_and_key[0]
    burst = b"".join(b"".join(sealer.seal(RecordKind.DATA, bytes([i]) * 3000)) for i in range(20))
    a[1].write(burst)
    for i in range(20):
        assert await channel.recv() == bytes([i]) * 3000
    await channel.close()


async def test_many_records_buffered_before_takeover_arrive_in_order() -> None:
    """More records than the channel's ring arrive while the handshake is still finishing."""
    a, b = await stream_pair()
    reader, writer = a

    async def eager_peer() -> None:
        state = Handshake(KEY, "initiator")
        writer.write(state.hello())
        confirm = state.receive_hello(await reader.readexactly(HELLO_SIZE))
        keys = state.receive_confirm(await reader.readexactly(CONFIRM_SIZE))
        sealer = RecordSealer(keys.send_key)
        records = [b"".join(sealer.seal(RecordKind.DATA, bytes([i]) * 9_000)) for i in range(40)]
        writer.write(confirm + b"".join(records))

    _, channel = await asyncio.gather(eager_peer(), handshake(*b, KEY, "responder", timeout=10))
    for i in range(40):
        assert await channel.recv() == bytes([i]) * 9_000
    await channel.close()


async def test_big_records_written_without_draining_arrive_intact() -> None:
    """Many big records queued at once: output ring slots are reused only once flushed."""
    a, b = await linked()
    payloads = [bytes([i]) * MAX_PAYLOAD for i in range(12)]
    for payload in payloads:
        a.write(memoryview(bytearray(payload)))
    for payload in payloads:
        assert await b.recv() == payload
    await a.close()
    await b.close()


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux socket options")
async def test_link_sockets_detect_a_silently_dead_peer() -> None:
    """Keepalive probes and a user timeout are set on both ends of the link."""
    a, b = await linked()
    for channel in (a, b):
        sock = channel.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVE_COUNT
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == USER_TIMEOUT_MS
    await a.close()
    await b.close()


def test_sessions_get_distinct_keys() -> None:
    """Fresh nonces: two links with the same PAKE key never share AEAD keys."""
    keys = []
    for _ in range(2):
        i, r = Handshake(KEY, "initiator"), Handshake(KEY, "responder")
        confirm_i, confirm_r = i.receive_hello(r.hello()), r.receive_hello(i.hello())
        ki, kr = i.receive_confirm(confirm_r), r.receive_confirm(confirm_i)
        assert ki.send_key == kr.recv_key and ki.recv_key == kr.send_key
        keys.append(ki.send_key)
    assert keys[0] != keys[1]


@settings(max_examples=50, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=10),
)
def test_decoder_handles_any_split(payloads: list[bytes], cuts: list[int]) -> None:
    key = bytes(32)
    sealer = RecordSealer(key)
    stream = b"".join(b"".join(sealer.seal(RecordKind.CONTROL, p)) for p in payloads)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    decoder = RecordDecoder(RecordOpener(key))
    out = []
    for start, end in itertools.pairwise(points):
        out += decoder.feed(stream[start:end])
    assert [r.payload for r in out] == payloads


@settings(max_examples=50, deadline=None)
@given(garbage=st.binary(min_size=5, max_size=200))
def test_random_bytes_raise_only_link_errors(garbage: bytes) -> None:
    decoder = RecordDecoder(RecordOpener(bytes(32)))
    with contextlib.suppress(LinkProtocolError, RecordIntegrityError):
        decoder.feed(garbage)


async def test_records_and_close_behind_the_confirm_then_hang_up() -> None:
    """Everything the peer sent before hanging up was read by the stream: none of it is lost,
    and its CLOSE still makes a clean end."""
    a, b = await stream_pair()
    reader, writer = a

    async def hasty_peer() -> None:
        state = Handshake(KEY, "initiator")
        writer.write(state.hello())
        confirm = state.receive_hello(await reader.readexactly(HELLO_SIZE))
        keys = state.receive_confirm(await reader.readexactly(CONFIRM_SIZE))
        sealer = RecordSealer(keys.send_key)
        sent = [b"".join(sealer.seal(RecordKind.DATA, bytes([i]) * 100)) for i in range(5)]
        writer.write(confirm + b"".join(sent) + b"".join(sealer.seal(RecordKind.CLOSE, b"")))
        writer.close()

    _, channel = await asyncio.gather(hasty_peer(), handshake(*b, KEY, "responder", timeout=10))
    for i in range(5):
        assert await channel.recv() == bytes([i]) * 100
    with pytest.raises(LinkClosedError) as info:
        await channel.recv()
    assert info.value.clean
    await channel.close()


async def tls_stream_pair(directory: Path) -> tuple[Streams, Streams]:
    """A TLS connection on loopback, as a ``turns:`` data connection is."""
    files = make_self_signed(directory)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(files.cert, files.key)
    client_context = ssl.create_default_context(cafile=str(files.cert))
    accepted: asyncio.Queue[Streams] = asyncio.Queue()

    async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context, server_hostname="127.0.0.1"
    )
    peer = await asyncio.wait_for(accepted.get(), 10)
    server.close()
    return client, peer


async def test_link_over_tls_streams(tmp_path: Path) -> None:
    """A TLS stream has no plain socket to hand over: records still flow both ways, in order,
    big and small, and a CLOSE still ends the link cleanly."""
    a, b = await tls_stream_pair(tmp_path)
    x, y = await asyncio.gather(
        handshake(*a, KEY, "initiator", timeout=10), handshake(*b, KEY, "responder", timeout=10)
    )
    payloads = [os.urandom(MAX_PAYLOAD), b"small", os.urandom(70_000)]
    for payload in payloads:
        await x.send(payload)
        await y.send(payload[::-1])
    for payload in payloads:
        assert await y.recv() == payload
        assert await x.recv() == payload[::-1]
    await x.close()
    with pytest.raises(LinkClosedError) as info:
        await y.recv()
    assert info.value.clean
    await y.close()


@pytest.mark.parametrize("name", ["crypto.py", "records.py"])
def test_the_link_reads_no_private_attribute_of_another_object(name: str) -> None:
    """The channel owns its protocol from the start: it never reaches into a StreamReader's
    buffer or any other object's private state (only ``self``'s and ``cls``'s)."""
    source = Path(handshake.__code__.co_filename).parent / name
    tree = ast.parse(source.read_text(encoding="utf-8"))
    private = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    getattrs = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr")
        and isinstance(node.args[1], ast.Constant)
        and str(node.args[1].value).startswith("_")
    ]
    assert (private, getattrs) == ([], [])
