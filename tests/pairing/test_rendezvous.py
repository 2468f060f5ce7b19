"""A real rendezvous server on 127.0.0.1 and real clients pairing through it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from delshare.errors import PairingError
from delshare.pairing import wire
from delshare.pairing.client import PairedChannel, pair
from delshare.pairing.codes import Code, parse_code
from delshare.pairing.envelope import Phase, encode_body
from delshare.pairing.mailbox import ClientId, Event, MailboxLimits, MailboxTable
from delshare.pairing.pake import Pake, Side
from delshare.pairing.server import RendezvousServer, serve_rendezvous

CODE = "7-guitar-orbit"
MARKER = "plaintext-marker-5f2a"
WAIT = 10.0


class RecordingTable(MailboxTable):
    """The real table, also keeping every body it was asked to relay."""

    def __init__(self, limits: MailboxLimits | None = None) -> None:
        super().__init__(limits)
        self.bodies: list[str] = []

    def add(self, client: ClientId, body: str, now: float) -> list[Event]:
        self.bodies.append(body)
        return super().add(client, body, now)


@pytest.fixture
async def table() -> RecordingTable:
    return RecordingTable()


@pytest.fixture
async def server(table: RecordingTable) -> AsyncIterator[RendezvousServer]:
    async with await serve_rendezvous("127.0.0.1", 0, store=table) as running:
        yield running


@pytest.fixture
def url(server: RendezvousServer) -> str:
    return f"ws://127.0.0.1:{server.port}"


async def _until(condition: Callable[[], bool], tries: int = 1000) -> None:
    """Wait (bounded) for the server to act on something it learns asynchronously."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


async def _pair_both(url: str, code_a: str = CODE, code_b: str = CODE) -> list[object]:
    return list(
        await asyncio.gather(
            pair(url, code_a, "sender", timeout=WAIT),
            pair(url, code_b, "receiver", timeout=WAIT),
            return_exceptions=True,
        )
    )


async def test_two_clients_pair_and_exchange_encrypted_dicts(
    url: str, table: RecordingTable
) -> None:
    sender, receiver = await _pair_both(url)
    assert isinstance(sender, PairedChannel) and isinstance(receiver, PairedChannel)
    async with sender, receiver:
        assert sender.key == receiver.key
        await sender.send({"candidates": [MARKER, 1]})
        await sender.send({"offer": {"name": "a.txt", "size": 3}})
        assert await receiver.receive() == {"candidates": [MARKER, 1]}
        assert await receiver.receive() == {"offer": {"name": "a.txt", "size": 3}}
        await receiver.send({"answer": MARKER})
        assert await sender.receive() == {"answer": MARKER}
    assert len(table.bodies) == 2 + 2 + 3  # PAKE, confirm, then sealed dicts
    for body in table.bodies:
        seen = body.encode() + base64.b64decode(body)
        assert MARKER.encode() not in seen
        assert b"guitar" not in seen and b"orbit" not in seen
    await _until(lambda: len(table) == 0)  # both closed: the server forgets the mailbox


class HoldingProxy:
    """A TCP proxy that can hold back what the server sends (the closing handshake's reply
    among it) and counts what its client sends."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.url = ""
        self.passing = asyncio.Event()  # cleared: the server's bytes wait here
        self.passing.set()
        self.sent_up = 0
        self.client_gone = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def up() -> None:
            while data := await reader.read(65536):
                self.sent_up += len(data)
                up_writer.write(data)
            self.client_gone.set()
            up_writer.close()

        async def down() -> None:
            while data := await up_reader.read(65536):
                await self.passing.wait()
                writer.write(data)
            writer.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(up(), down())


@contextlib.asynccontextmanager
async def holding_proxy(server: RendezvousServer) -> AsyncIterator[HoldingProxy]:
    proxy = HoldingProxy(server.port)
    listener = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy.url = f"ws://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    async with listener:
        yield proxy


async def test_leaving_the_channel_does_not_wait_for_the_closing_handshake(
    url: str, server: RendezvousServer, table: RecordingTable
) -> None:
    async with holding_proxy(server) as proxy:
        sender, receiver = await asyncio.gather(
            pair(proxy.url, CODE, "sender", timeout=WAIT), pair(url, CODE, "receiver", timeout=WAIT)
        )
        proxy.passing.clear()  # the server's close reply will wait at the proxy
        before = proxy.sent_up

        async def leave() -> None:
            async with sender:
                pass

        leaving = asyncio.create_task(leave())
        await _until(lambda: proxy.sent_up > before)  # the close frame went out ...
        assert leaving.done()  # ... and __aexit__ had returned without awaiting the reply
        await leaving
        assert not proxy.client_gone.is_set()
        proxy.passing.set()
        await _until(proxy.client_gone.is_set)  # the handshake ends in the background
        await receiver.close()
        await _until(lambda: len(table) == 0)


async def test_wrong_code_fails_cleanly_on_both_sides(url: str) -> None:
    results = await _pair_both(url, CODE, "7-guitar-otter")
    assert all(isinstance(r, PairingError) for r in results), results
    assert all("wrong code" in str(r) for r in results), results


async def test_third_client_on_a_full_mailbox_is_refused(url: str) -> None:
    sender, receiver = await _pair_both(url)
    assert isinstance(sender, PairedChannel) and isinstance(receiver, PairedChannel)
    async with sender, receiver:
        with pytest.raises(PairingError, match="in use by another sender"):
            await pair(url, CODE, "sender", timeout=WAIT)
        with pytest.raises(PairingError, match="in use by another receiver"):
            await pair(url, CODE, "receiver", timeout=WAIT)
        await sender.send({"still": "works"})
        assert await receiver.receive() == {"still": "works"}


async def test_older_clients_on_the_same_side_are_told(url: str, table: RecordingTable) -> None:
    """Clients that do not name their side get the first free seat; the PAKE tells them.

    The older client is written here from the public wire pieces: it opens without a side,
    takes the receiver's seat next to our sender, and starts its SPAKE2 as a sender would."""
    sender = asyncio.create_task(pair(url, CODE, "sender", timeout=WAIT))
    await _until(lambda: "7" in table)
    async with connect(url, proxy=None) as older:
        await older.send(wire.encode(wire.OpenMessage("7")))
        start = b"s" + Pake(parse_code(CODE).password, Side.SENDER).start()
        await older.send(wire.encode(wire.AddMessage(encode_body(Phase.PAKE, start))))
        with pytest.raises(PairingError, match="both peers chose side 'sender'"):
            await sender


async def test_a_sender_asks_the_server_for_a_number_and_the_receiver_uses_it(
    url: str, table: RecordingTable
) -> None:
    codes: list[Code] = []
    sender_task = asyncio.create_task(pair(url, None, "sender", timeout=WAIT, on_code=codes.append))
    await _until(lambda: bool(codes))
    assert codes[0].nameplate in table and 1 <= int(codes[0].nameplate) <= 999
    receiver = await pair(url, str(codes[0]), "receiver", timeout=WAIT)
    async with await sender_task as sender, receiver:
        await sender.send({"allocated": True})
        assert await receiver.receive() == {"allocated": True}


async def test_peer_leaving_ends_the_receive(url: str) -> None:
    sender, receiver = await _pair_both(url)
    assert isinstance(sender, PairedChannel) and isinstance(receiver, PairedChannel)
    await sender.send({"last": True})
    await sender.close()
    async with receiver:
        assert await receiver.receive() == {"last": True}
        with pytest.raises(PairingError, match="peer left"):
            await receiver.receive()


async def test_waiting_alone_times_out(url: str) -> None:
    with pytest.raises(PairingError, match="timed out"):
        await pair(url, CODE, "sender", timeout=0.2)


def _sealed(message: wire.ClientMessage) -> bool:
    """Is ``message`` the addition of a SEALED body (the phase is its first byte)?"""
    if not isinstance(message, wire.AddMessage):
        return False
    return base64.b64decode(message.body)[0] == Phase.SEALED


@contextlib.asynccontextmanager
async def tampering_proxy(upstream: str) -> AsyncIterator[str]:
    """A WebSocket proxy in an attacker's seat: it forwards every frame both ways, but swaps
    the ciphertext of each SEALED body its client adds for forged bytes. Yields its URL."""

    async def handle(client: ServerConnection) -> None:
        async with connect(upstream, proxy=None) as server:

            async def up() -> None:
                async for frame in client:
                    if _sealed(wire.decode_client(frame)):
                        frame = wire.encode(wire.AddMessage(encode_body(Phase.SEALED, bytes(40))))
                    await server.send(frame)

            async def down() -> None:
                async for frame in server:
                    await client.send(frame)

            ways = [asyncio.create_task(up()), asyncio.create_task(down())]
            await asyncio.wait(ways, return_when=asyncio.FIRST_COMPLETED)
            for way in ways:
                way.cancel()
            await asyncio.gather(*ways, return_exceptions=True)

    async with serve(handle, "127.0.0.1", 0) as proxy:
        yield f"ws://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"


async def test_tampered_sealed_message_is_detected(url: str) -> None:
    """Someone between the sender and the server who swaps a sealed message's ciphertext (the
    server or the network) is caught by receive()."""
    async with tampering_proxy(url) as tampered:
        sender, receiver = await asyncio.gather(
            pair(tampered, CODE, "sender", timeout=WAIT), pair(url, CODE, "receiver", timeout=WAIT)
        )
        async with sender, receiver:
            await sender.send({"x": 1})
            with pytest.raises(PairingError, match="wrong code or tampered message"):
                await receiver.receive()


async def test_garbage_pake_message_fails_pairing(url: str) -> None:
    async with connect(url, proxy=None) as rogue:
        await rogue.send(wire.encode(wire.OpenMessage("7")))
        await rogue.send(wire.encode(wire.AddMessage(encode_body(Phase.PAKE, b"s" + b"\x01" * 5))))
        with pytest.raises(PairingError, match="PAKE"):
            await pair(url, CODE, "receiver", timeout=WAIT)


async def test_server_refuses_bad_frames_and_closes(url: str) -> None:
    async with connect(url, proxy=None) as raw:
        await raw.send("not json")
        reply = wire.decode_server(await asyncio.wait_for(raw.recv(), WAIT))
        assert isinstance(reply, wire.ErrorMessage)
        await asyncio.wait_for(raw.wait_closed(), WAIT)


async def test_server_refuses_add_before_open(url: str) -> None:
    async with connect(url, proxy=None) as raw:
        await raw.send(wire.encode(wire.AddMessage("x")))
        reply = wire.decode_server(await asyncio.wait_for(raw.recv(), WAIT))
        assert reply == wire.ErrorMessage("open a mailbox first")


async def test_expired_mailbox_is_closed_by_the_server() -> None:
    limits = MailboxLimits(max_age=0.3)
    async with await serve_rendezvous("127.0.0.1", 0, limits=limits, sweep_interval=0.05) as srv:
        with pytest.raises(PairingError, match="mailbox expired"):
            await pair(f"ws://127.0.0.1:{srv.port}", CODE, "sender", timeout=WAIT)


async def test_unreachable_server_is_a_pairing_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PairingError, match="cannot reach"):
        await pair(f"ws://127.0.0.1:{port}", CODE, "sender", timeout=WAIT)


async def test_server_on_ipv6_loopback() -> None:
    async with await serve_rendezvous("::1", 0) as srv:
        results = await _pair_both(f"ws://[::1]:{srv.port}")
        for channel in results:
            assert isinstance(channel, PairedChannel)
            await channel.close()


async def test_a_sender_picks_its_own_number_with_an_older_server() -> None:
    """An older rendezvous refuses ``allocate`` as an unknown type; the sender then chooses the
    number itself and opens it, as older senders did."""
    seen: list[dict[str, object]] = []

    async def older(connection: ServerConnection) -> None:  # the previous server's answers
        async for frame in connection:
            fields = json.loads(frame)
            seen.append(fields)
            if fields["type"] != "open":
                reason = f"unknown message type {fields['type']!r}"
                await connection.send(json.dumps({"type": "error", "reason": reason}))
                return
            await connection.send(json.dumps({"type": "close", "reason": "mailbox expired"}))
            return

    codes: list[Code] = []
    async with serve(older, "127.0.0.1", 0) as fake:
        url = f"ws://127.0.0.1:{fake.sockets[0].getsockname()[1]}"
        with pytest.raises(PairingError, match="mailbox expired"):
            await pair(url, None, "sender", timeout=WAIT, on_code=codes.append)
    assert [f["type"] for f in seen] == ["allocate", "open"]
    assert seen[1]["nameplate"] == codes[0].nameplate and 1 <= int(codes[0].nameplate) <= 999
