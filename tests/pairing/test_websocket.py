"""The rendezvous client's WebSocket: RFC 6455 vectors, the frame parser, and real servers.

The independent peer is the ``websockets`` package's server (the one the rendezvous runs), on
127.0.0.1: pings answered while nobody reads, fragmented messages, close codes both ways.
Hand-written servers check that a refused or forged upgrade and a bad frame are refused.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve

from delshare.pairing.websocket import (
    CLOSE_TOO_BIG,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    ConnectionClosed,
    Frame,
    FrameParser,
    HandshakeError,
    accept_key,
    connect,
    encode_frame,
)

WAIT = 5.0
Handler = Callable[[ServerConnection], Awaitable[None]]


# --- RFC 6455 vectors -----------------------------------------------------------------------


def test_accept_key_matches_rfc6455_section_1_3() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_frames_match_rfc6455_section_5_7() -> None:
    assert encode_frame(OP_TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    masked = encode_frame(OP_TEXT, b"Hello", bytes.fromhex("37fa213d"))
    assert masked == bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(OP_BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    assert encode_frame(OP_BINARY, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")


# --- the sans-IO parser ---------------------------------------------------------------------

frames = st.lists(
    st.tuples(st.sampled_from([OP_TEXT, OP_BINARY, OP_PING]), st.binary(max_size=300)),
    max_size=6,
)


@given(frames, st.data())
def test_any_split_of_the_stream_gives_the_same_frames(
    sent: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    wanted = [Frame(True, op, payload[:125] if op == OP_PING else payload) for op, payload in sent]
    stream = b"".join(encode_frame(f.opcode, f.payload) for f in wanted)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    parser, got = FrameParser(1 << 20), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += parser.feed(stream[start:end])
    assert got == wanted


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (bytes([0x81 | 0x40, 0]), "reserved bits"),
        (encode_frame(OP_TEXT, b"x", b"abcd"), "masked frame"),
        (bytes([OP_PING, 0]), "control frame"),  # FIN clear on a control frame
        (bytes([0x80 | OP_CLOSE, 126, 0, 126]) + bytes(126), "control frame"),
        (encode_frame(OP_BINARY, bytes(101)), "too big"),
    ],
)
def test_parser_refuses_what_rfc6455_forbids(raw: bytes, why: str) -> None:
    with pytest.raises(ConnectionClosed, match=why):
        FrameParser(100).feed(raw)


# --- against the websockets server ----------------------------------------------------------


async def _serve(handler: Handler) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/some/path?x=1"


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async for url in _serve(handler):
        yield url


async def test_messages_echo_both_types_and_sizes(echo: str) -> None:
    client = await connect(echo, timeout=WAIT, max_size=1 << 20)
    for message in ["hé", "", "x" * 70_000, b"\x00\xff" * 10, bytes(200_000)]:
        await client.send(message)
        assert await asyncio.wait_for(client.recv(), WAIT) == message
    await client.close()
    with pytest.raises(ConnectionClosed):
        await client.send("after close")


async def test_pings_are_answered_while_nobody_reads_and_fragments_are_joined() -> None:
    outcome: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, WAIT)
        outcome.append("pong")
        await ws.send(iter(["frag", "mented"]))
        outcome.append(f"client closed with {(await ws.wait_closed()) or ws.close_code}")

    async for url in _serve(handler):
        client = await connect(url, timeout=WAIT, max_size=1024)
        for _ in range(500):  # bounded wait: only the reader task is running
            if outcome:
                break
            await asyncio.sleep(0.01)
        assert outcome == ["pong"]
        assert await asyncio.wait_for(client.recv(), WAIT) == "fragmented"
        await client.close()
        for _ in range(500):
            if len(outcome) > 1:
                break
            await asyncio.sleep(0.01)
    assert outcome == ["pong", "client closed with 1000"]


async def test_server_close_code_reaches_recv_after_queued_messages() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("last words")
        await ws.close(4000, "mailbox closed")

    async for url in _serve(handler):
        client = await connect(url, timeout=WAIT, max_size=1024)
        assert await asyncio.wait_for(client.recv(), WAIT) == "last words"
        for _ in range(2):  # every later recv fails the same way
            with pytest.raises(ConnectionClosed) as caught:
                await asyncio.wait_for(client.recv(), WAIT)
            assert caught.value.code == 4000
        await client.close()


async def test_too_big_message_closes_with_1009() -> None:
    codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send("y" * 2000)
        await ws.wait_closed()
        codes.append(ws.close_code)

    async for url in _serve(handler):
        client = await connect(url, timeout=WAIT, max_size=1000)
        with pytest.raises(ConnectionClosed) as caught:
            await asyncio.wait_for(client.recv(), WAIT)
        assert caught.value.code == CLOSE_TOO_BIG
        await client.close()
        for _ in range(500):
            if codes:
                break
            await asyncio.sleep(0.01)
    assert codes == [CLOSE_TOO_BIG]


# --- refused upgrades -----------------------------------------------------------------------


async def _raw_server(answer: Callable[[bytes], bytes]) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(request))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _key_of(request: bytes) -> str:
    for line in request.decode().split("\r\n"):
        if line.lower().startswith("sec-websocket-key:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no key in the request")


def _upgrade(accept: str, extra: str = "") -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (lambda req: b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "not 101"),
        (lambda req: _upgrade(accept_key("someone else's key")), "Sec-WebSocket-Accept"),
        (
            lambda req: _upgrade(accept_key(_key_of(req)), "Sec-WebSocket-Extensions: x\r\n"),
            "extension",
        ),
        (lambda req: b"HTTP/1.1 101 Switching", "no valid HTTP answer"),
    ],
)
async def test_refused_or_forged_upgrade_fails(answer: Callable[[bytes], bytes], why: str) -> None:
    server, url = await _raw_server(answer)
    async with server:
        with pytest.raises(HandshakeError, match=why):
            await connect(url, timeout=WAIT, max_size=1024)


async def test_a_correct_hand_written_upgrade_is_accepted() -> None:
    """The refusals above fail for their reason, not because the test server is odd."""
    server, url = await _raw_server(lambda req: _upgrade(accept_key(_key_of(req))))
    async with server:
        client = await connect(url, timeout=WAIT, max_size=1024)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(client.recv(), WAIT)  # the server hung up
        await client.close()


def test_bad_urls_fail_before_connecting() -> None:
    for url in ["http://127.0.0.1:1", "ws://", "ws://127.0.0.1:99999"]:
        with pytest.raises(HandshakeError):
            asyncio.run(connect(url, timeout=WAIT, max_size=1024))


# --- TLS ------------------------------------------------------------------------------------


def _self_signed(folder: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


async def test_wss_verifies_the_server_certificate(tmp_path: Path) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("should never arrive")

    context = _self_signed(tmp_path)
    async with serve(handler, "localhost", 0, ssl=context) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(f"wss://localhost:{port}", timeout=WAIT, max_size=1024)
