"""Pair with a peer through the rendezvous server: ``pair(url, code, side)``.

Steps: connect, ``open`` the code's nameplate (or, for a sender without a code, ``allocate`` a
fresh number from the server, add secret words drawn here, and hand the code to ``on_code``),
exchange SPAKE2 messages and key-confirmation MACs through the mailbox (a wrong code fails here,
on both sides), then return a ``PairedChannel`` whose ``send``/``receive`` carry JSON objects
sealed by ``MessageCipher``. The server only ever sees the nameplate, SPAKE2 messages, MACs and
ciphertext. Every wait is bounded by ``timeout`` seconds and every failure surfaces as
``PairingError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from delshare.errors import PairingError
from delshare.pairing import wire
from delshare.pairing.cipher import MessageCipher
from delshare.pairing.codes import (
    DEFAULT_WORDS,
    Code,
    generate_code,
    generate_words,
    parse_code,
)
from delshare.pairing.envelope import Phase, decode_body, encode_body
from delshare.pairing.pake import Pake, Side
from delshare.tls import client_context, describe_secure_connect_error

DEFAULT_TIMEOUT = 30.0
_OLDER_SERVER = "unknown message type 'allocate'"  # how a rendezvous without allocate refuses
_SIDE_BYTES = {Side.SENDER: b"s", Side.RECEIVER: b"r"}
_CLOSING: set[asyncio.Future[None]] = set()  # closing handshakes finishing in the background


TurnHandler = Callable[[tuple[wire.TurnServer, ...]], None]


class _Mailbox:
    """Our end of a mailbox: add bodies, await the peer's, with timeouts.

    With ``on_turn``, ``open``/``allocate`` ask for TURN servers, which go to ``on_turn``
    whenever they come (a server that cannot hand any out answers with none, an older one not
    at all).
    """

    def __init__(
        self, connection: ClientConnection, timeout: float, on_turn: TurnHandler | None = None
    ) -> None:
        self.connection = connection
        self.timeout = timeout
        self.on_turn = on_turn

    async def _send(self, message: wire.ClientMessage) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.connection.send(wire.encode(message))
        except ConnectionClosed as exc:
            raise PairingError("rendezvous connection closed") from exc
        except TimeoutError as exc:
            raise PairingError("timed out sending to the rendezvous server") from exc

    async def open(self, nameplate: str, side: Side) -> None:
        await self._send(wire.OpenMessage(nameplate, side.value, self.on_turn is not None))

    async def allocate(self) -> str:
        """Ask the server for a fresh code number; the nameplate it gave."""
        await self._send(wire.AllocateMessage(self.on_turn is not None))
        message = await self._receive(self.timeout)
        if isinstance(message, wire.AllocatedMessage):
            return message.nameplate
        raise PairingError("rendezvous server sent a message before allocating a code")

    async def add(self, phase: Phase, payload: bytes) -> None:
        await self._send(wire.AddMessage(encode_body(phase, payload)))

    async def next(self, phase: Phase, wait: float | None = None) -> bytes:
        """The payload of the peer's next body, which must be in ``phase``."""
        message = await self._receive(self.timeout if wait is None else wait)
        if isinstance(message, wire.RelayMessage):
            return decode_body(message.body, phase)
        raise PairingError("rendezvous server sent an unexpected message")

    async def _receive(self, wait: float) -> wire.RelayMessage | wire.AllocatedMessage:
        """The server's next frame; refusals and closes become PairingError."""
        try:
            async with asyncio.timeout(wait):
                while True:
                    match wire.decode_server(await self.connection.recv()):
                        case wire.ErrorMessage(reason):
                            raise PairingError(f"rendezvous server refused: {reason}")
                        case wire.CloseMessage(reason):
                            raise PairingError(f"mailbox closed: {reason}")
                        case wire.TurnMessage(servers):
                            if self.on_turn is not None:
                                self.on_turn(servers)
                        case message:
                            return message
        except ConnectionClosed as exc:
            raise PairingError("rendezvous connection closed") from exc
        except TimeoutError as exc:
            raise PairingError("timed out waiting for the peer") from exc


class PairedChannel:
    """An authenticated, encrypted JSON channel to the paired peer, relayed by the mailbox.

    ``key`` is the PAKE session key; derive purpose keys from it with ``pake.derive_key``.
    """

    def __init__(self, mailbox: _Mailbox, key: bytes, side: Side) -> None:
        self._mailbox = mailbox
        self._cipher = MessageCipher(key, side)
        self.key = key
        self.side = side

    async def send(self, obj: dict[str, Any]) -> None:
        """Seal and send one JSON object to the peer."""
        await self._mailbox.add(Phase.SEALED, self._cipher.seal(obj))

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """The peer's next JSON object; PairingError on tampering, close or timeout.

        ``timeout`` overrides the channel's per-wait timeout for this call.
        """
        return self._cipher.open(await self._mailbox.next(Phase.SEALED, timeout))

    async def close(self) -> None:
        """Close the rendezvous connection, closing handshake included."""
        await self._mailbox.connection.close()

    def close_soon(self) -> None:
        """Start closing and return at once; the closing handshake ends in the background.

        What follows (the transfer) then does not wait a round trip to the rendezvous server.
        """
        task = asyncio.ensure_future(self.close())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    async def __aenter__(self) -> PairedChannel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_soon()


async def pair(
    rendezvous_url: str,
    code: str | Code | None,
    side: Side | str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    on_code: Callable[[Code], None] | None = None,
    words: int = DEFAULT_WORDS,
    connect_timeout: float | None = None,
    on_turn: TurnHandler | None = None,
    ca: str | None = None,
) -> PairedChannel:
    """Meet the peer holding ``code`` and return the encrypted channel to it.

    ``side`` is ``"sender"`` or ``"receiver"``; the two peers must take different sides.
    ``timeout`` bounds each wait (connect, every message), here and on the channel;
    ``connect_timeout``, when given, bounds the connection and WebSocket handshake instead. A
    sender may pass ``code=None``: the server then allocates the number, ``words`` secret words
    are drawn here, and ``on_code`` gets the code to show before the wait for the receiver.
    ``on_turn`` asks the server for TURN servers with credentials and gets them when they come.
    ``ca``: a CA file to trust for a ``wss:`` server instead of the system's (default:
    ``DELSHARE_CA``, see ``delshare.tls.client_context``).
    """
    our_side = Side(side)
    parsed = code if isinstance(code, Code) or code is None else parse_code(code)
    if parsed is None and our_side is not Side.SENDER:
        raise PairingError("only a sender can ask for a new code")
    connection = await _connect(rendezvous_url, connect_timeout or timeout, ca)
    try:
        mailbox = _Mailbox(connection, timeout, on_turn)
        if parsed is None:
            try:
                nameplate = await mailbox.allocate()
            except PairingError as exc:
                if _OLDER_SERVER not in str(exc):
                    raise
                # An older rendezvous cannot allocate: choose the number here, as it did.
                await connection.close()
                connection = await _connect(rendezvous_url, connect_timeout or timeout, ca)
                mailbox = _Mailbox(connection, timeout, on_turn)
                nameplate = parse_code(generate_code()).nameplate
                await mailbox.open(nameplate, our_side)
            parsed = Code(nameplate, generate_words(words=words))
            if on_code is not None:
                on_code(parsed)
        else:
            await mailbox.open(parsed.nameplate, our_side)
        key = await _agree_key(mailbox, parsed.password, our_side)
    except BaseException:
        await connection.close()
        raise
    return PairedChannel(mailbox, key, our_side)


async def rejoin(
    rendezvous_url: str,
    nameplate: str,
    key: bytes,
    side: Side | str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    ca: str | None = None,
) -> PairedChannel:
    """Meet an already paired peer again in the mailbox ``nameplate``, sealed with ``key``.

    No PAKE: both sides derived ``nameplate`` and ``key`` from the session key they agreed on,
    so only they can name the mailbox, and a stranger who joins it anyway cannot seal a
    message that opens (:class:`MessageCipher`). Used to reconnect a broken link.
    """
    our_side = Side(side)
    connection = await _connect(rendezvous_url, timeout, ca)
    try:
        mailbox = _Mailbox(connection, timeout)
        await mailbox.open(nameplate, our_side)
    except BaseException:
        await connection.close()
        raise
    return PairedChannel(mailbox, key, our_side)


async def _connect(url: str, open_timeout: float, ca: str | None = None) -> ClientConnection:
    secure = url.lower().startswith("wss://")
    tls: dict[str, Any] = {"ssl": client_context(ca)} if secure else {}
    try:
        return await connect(
            url,
            open_timeout=open_timeout,
            proxy=None,
            compression=None,
            max_size=wire.MAX_FRAME,
            **tls,
        )
    except TimeoutError as exc:
        raise PairingError(
            f"rendezvous server {url} did not answer the WebSocket handshake in "
            f"{open_timeout:g} s: is it a delshare rendezvous (`delshare relay`) on that port?"
        ) from exc
    except (OSError, InvalidURI, InvalidHandshake) as exc:
        raise PairingError(f"cannot reach rendezvous server {url}: {_why(exc, url)}") from exc


def _why(exc: BaseException, url: str) -> str:
    """A non-empty cause: the TLS failure in words, else the error (or its cause's) text."""
    host = urlsplit(url).hostname or ""
    secure = url.lower().startswith("wss://")
    for error in (exc, exc.__cause__, exc.__context__):
        if error is None:
            continue
        tls = describe_secure_connect_error(error, host) if secure else None
        if tls is not None:
            return tls
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or str(exc.__cause__ or "")
    return text or type(exc).__name__


async def _agree_key(mailbox: _Mailbox, password: bytes, side: Side) -> bytes:
    """SPAKE2 then key confirmation, both through the mailbox; the confirmed key."""
    pake = Pake(password, side)
    await mailbox.add(Phase.PAKE, _SIDE_BYTES[side] + pake.start())
    peer = await mailbox.next(Phase.PAKE)
    if peer[:1] == _SIDE_BYTES[side]:
        raise PairingError(f"both peers chose side {side.value!r}: one must send, one receive")
    pake.finish(peer[1:])
    await mailbox.add(Phase.CONFIRM, pake.confirmation())
    pake.verify_confirmation(await mailbox.next(Phase.CONFIRM))
    return pake.key
