"""The rendezvous client's WebSocket (RFC 6455): opening handshake, masked frames, ping, close.

Theory of operation. :func:`connect` opens TCP (TLS for ``wss://``), sends the upgrade request
(§4.1) and checks the server's ``101`` answer and ``Sec-WebSocket-Accept`` (§4.2.2). A reader task
then owns the receiving side: :class:`FrameParser` (sans-IO) cuts the byte stream into frames
(§5.2), data messages are reassembled and queued for :meth:`WebSocket.recv`, pings are answered
at once (§5.5.2), so the server's keepalive is satisfied even while nobody calls ``recv``, and a
close frame is answered and ends the queue (§5.5.1). Frames we send are masked (§5.3). No
extension or subprotocol is offered, so a server that selects one is refused (§4.1).

Why not the ``websockets`` package (the rendezvous server uses it): importing its client costs
~20 ms of start-up (package metadata, HTTP and proxy modules) on every ``send`` and ``receive``,
a tenth of a small transfer's total time; the rendezvous needs only text messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import ssl
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

from delshare.errors import PairingError

__all__ = [
    "ConnectionClosed",
    "Frame",
    "FrameParser",
    "HandshakeError",
    "WebSocket",
    "WebSocketError",
    "accept_key",
    "check_response",
    "connect",
    "encode_frame",
]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2  # §5.2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_BAD_DATA, CLOSE_TOO_BIG = 1000, 1002, 1007, 1009  # §7.4.1
MAX_HEADERS = 16 * 1024
CLOSE_TIMEOUT = 2.0  # seconds to wait for the server's side of the closing handshake


class WebSocketError(PairingError):
    """A WebSocket failure: the rendezvous client turns it into a one-line PairingError."""


class HandshakeError(WebSocketError):
    """The server did not accept the upgrade to a WebSocket (§4.2.2)."""


class ConnectionClosed(WebSocketError):
    """The connection is closed (either side) or broke; ``code`` is the close code, if any."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value the server must return for ``key`` (§4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def _mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``key`` (§5.3)."""
    n = len(data)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, mask_key: bytes | None = None) -> bytes:
    """One final frame (§5.2); masked when ``mask_key`` is given (client to server)."""
    n = len(payload)
    mask_bit = 0x80 if mask_key is not None else 0
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, mask_bit | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, n)
    if mask_key is None:
        return header + payload
    return header + mask_key + _mask(payload, mask_key)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: FIN bit, opcode, unmasked payload."""

    fin: bool
    opcode: int
    payload: bytes


class FrameParser:
    """Sans-IO: cut the server's byte stream into frames, enforcing §5.1-5.5 and a size limit.

    ``feed`` raises :class:`ConnectionClosed` (with the close code to send) on a violation.
    """

    def __init__(self, max_size: int) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while (frame := self._next()) is not None:
            frames.append(frame)
        return frames

    def _next(self) -> Frame | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        if first & 0x70:
            raise ConnectionClosed("reserved bits set (no extension agreed)", CLOSE_PROTOCOL_ERROR)
        if second & 0x80:
            raise ConnectionClosed("masked frame from the server", CLOSE_PROTOCOL_ERROR)
        fin, opcode, length, offset = bool(first & 0x80), first & 0x0F, second & 0x7F, 2
        if length >= 126:
            offset = 4 if length == 126 else 10
            if len(buf) < offset:
                return None
            length = int.from_bytes(buf[2:offset], "big")
        if opcode >= OP_CLOSE and (not fin or length > 125):
            raise ConnectionClosed("fragmented or long control frame", CLOSE_PROTOCOL_ERROR)
        if length > self._max_size:
            raise ConnectionClosed(f"frame of {length} bytes is too big", CLOSE_TOO_BIG)
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset : offset + length])
        del buf[: offset + length]
        return Frame(fin, opcode, payload)


class _Assembler:
    """Data frames to messages (§5.4): text only arrives whole, as valid UTF-8."""

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._parts: list[bytes] = []
        self._opcode: int | None = None
        self._size = 0

    def add(self, frame: Frame) -> str | bytes | None:
        if frame.opcode == OP_CONTINUATION:
            if self._opcode is None:
                raise ConnectionClosed("continuation without a message", CLOSE_PROTOCOL_ERROR)
        elif self._opcode is not None:
            raise ConnectionClosed("new message inside a fragmented one", CLOSE_PROTOCOL_ERROR)
        elif frame.opcode not in (OP_TEXT, OP_BINARY):
            raise ConnectionClosed(f"unknown opcode {frame.opcode}", CLOSE_PROTOCOL_ERROR)
        else:
            self._opcode = frame.opcode
        self._size += len(frame.payload)
        if self._size > self._max_size:
            raise ConnectionClosed(f"message over {self._max_size} bytes", CLOSE_TOO_BIG)
        self._parts.append(frame.payload)
        if not frame.fin:
            return None
        data, opcode = b"".join(self._parts), self._opcode
        self._parts, self._opcode, self._size = [], None, 0
        if opcode == OP_BINARY:
            return data
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConnectionClosed("text message is not UTF-8", CLOSE_BAD_DATA) from None


def _close_payload(payload: bytes) -> tuple[int | None, str]:
    """Code and reason of a close frame (§5.5.1); a malformed one counts as a protocol error."""
    if not payload:
        return None, ""
    if len(payload) < 2:
        return CLOSE_PROTOCOL_ERROR, "malformed close frame"
    try:
        return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return CLOSE_PROTOCOL_ERROR, "malformed close frame"


_Item = str | bytes | ConnectionClosed


class WebSocket:
    """An open client connection: ``send`` and ``recv`` messages, then ``close``."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_size: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = FrameParser(max_size)
        self._assembler = _Assembler(max_size)
        self._messages: asyncio.Queue[_Item] = asyncio.Queue()
        self._closed: ConnectionClosed | None = None
        self._close_sent = False
        self._reading = asyncio.ensure_future(self._read_loop())

    async def send(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary message; ConnectionClosed once closed."""
        if self._closed is not None or self._close_sent:
            raise self._closed or ConnectionClosed("connection is closing")
        if isinstance(message, str):
            self._write(OP_TEXT, message.encode())
        else:
            self._write(OP_BINARY, message)
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionClosed(f"connection lost: {exc}") from exc

    async def recv(self) -> str | bytes:
        """The next message; ConnectionClosed once the server closed and all were read."""
        item = await self._messages.get()
        if isinstance(item, ConnectionClosed):
            self._messages.put_nowait(item)  # every later recv sees it too
            raise item
        return item

    async def close(self, code: int = CLOSE_NORMAL) -> None:
        """Closing handshake (§7.1.2), bounded by ``CLOSE_TIMEOUT``; then the socket closes."""
        if self._closed is None and not self._close_sent:
            self._send_close(code)
        try:
            if not self._reading.done():
                await asyncio.wait([self._reading], timeout=CLOSE_TIMEOUT)
        finally:
            await self._shut()

    def _write(self, opcode: int, payload: bytes) -> None:
        self._writer.write(encode_frame(opcode, payload, os.urandom(4)))

    def _send_close(self, code: int) -> None:
        self._close_sent = True
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            self._write(OP_CLOSE, code.to_bytes(2, "big"))

    async def _shut(self) -> None:
        self._reading.cancel()
        await asyncio.wait([self._reading])
        self._writer.close()
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            async with asyncio.timeout(CLOSE_TIMEOUT):  # a TLS shutdown may stall
                await self._writer.wait_closed()

    async def _read_loop(self) -> None:
        try:
            while self._closed is None:
                data = await self._reader.read(1 << 16)
                if not data:
                    raise ConnectionClosed("connection closed without a close frame")
                for frame in self._parser.feed(data):
                    self._handle(frame)
        except ConnectionClosed as exc:
            if exc.code is not None and exc.code != CLOSE_NORMAL and not self._close_sent:
                self._send_close(exc.code)  # our verdict on a bad frame (§7.1.7)
            self._finish(exc)
        except (ConnectionError, OSError) as exc:
            self._finish(ConnectionClosed(f"connection lost: {exc}"))
        except asyncio.CancelledError:
            self._finish(ConnectionClosed("connection closed"))
            raise
        else:
            await self._await_server_close()

    async def _await_server_close(self) -> None:
        """After both close frames the server closes TCP first (§7.1.1); bounded."""
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                while await self._reader.read(1 << 16):
                    pass

    def _handle(self, frame: Frame) -> None:
        if frame.opcode == OP_PING:
            if not self._close_sent:
                self._write(OP_PONG, frame.payload)
        elif frame.opcode == OP_PONG:
            pass
        elif frame.opcode == OP_CLOSE:
            code, reason = _close_payload(frame.payload)
            if not self._close_sent:
                self._send_close(CLOSE_NORMAL)
            self._finish(ConnectionClosed(f"closed by the server: {code} {reason}".strip(), code))
        else:
            message = self._assembler.add(frame)
            if message is not None:
                self._messages.put_nowait(message)

    def _finish(self, closed: ConnectionClosed) -> None:
        if self._closed is None:
            self._closed = closed
            self._messages.put_nowait(closed)


def _request(host: str, port: int, default_port: int, target: str, key: str) -> bytes:
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == default_port else f"{shown}:{port}"
    return (
        f"GET {target} HTTP/1.1\r\n"
        f"Host: {authority}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode()


def check_response(head: bytes, key: str) -> None:
    """Raise HandshakeError unless ``head`` (status line and headers) accepts ``key`` (§4.2.2)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or parts[1] != "101":
        raise HandshakeError(f"server answered {lines[0][:80]!r}, not 101 Switching Protocols")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("server did not upgrade to websocket")
    if "upgrade" not in (t.strip().lower() for t in headers.get("connection", "").split(",")):
        raise HandshakeError("server did not answer Connection: Upgrade")
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept from the server")
    if headers.get("sec-websocket-extensions") or headers.get("sec-websocket-protocol"):
        raise HandshakeError("server selected an extension or subprotocol we did not offer")


async def connect(url: str, *, timeout: float, max_size: int) -> WebSocket:
    """Open a WebSocket to ``ws://`` or ``wss://`` ``url`` within ``timeout`` seconds.

    Raises HandshakeError (bad URL or refused upgrade), OSError or TimeoutError.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise HandshakeError(f"not a ws:// or wss:// URL: {url!r}")
    default_port = 443 if parts.scheme == "wss" else 80
    try:
        port = parts.port or default_port
    except ValueError:
        raise HandshakeError(f"bad port in {url!r}") from None
    host = parts.hostname
    context = ssl.create_default_context() if parts.scheme == "wss" else None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=host if context else None, limit=MAX_HEADERS
        )
        try:
            writer.write(_request(host, port, default_port, target, key))
            head = await reader.readuntil(b"\r\n\r\n")
            check_response(head[:-4], key)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            writer.close()
            raise HandshakeError(f"no valid HTTP answer from the server: {exc}") from None
        except BaseException:
            writer.close()
            raise
    return WebSocket(reader, writer, max_size)
