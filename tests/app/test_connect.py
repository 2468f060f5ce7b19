"""Candidate exchange through a real rendezvous: which steps cross it, and an old peer still works.

Without a relay anywhere the reflexive and ready steps would carry nothing, so two version 2
peers skip them (fewer rendezvous round trips before the first byte); a version 1 peer (written
out here as it behaved) always takes them, and a version 2 peer takes them with it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from delshare.app.connect import (
    LINK_KEY_PURPOSE,
    Connection,
    ConnectOptions,
    Gathered,
    connect_peer,
    gather,
    race_gathered,
)
from delshare.link.candidates import host_candidates, parse_candidates
from delshare.link.race import NoPathError
from delshare.pairing import PairedChannel, derive_key, pair
from delshare.pairing.mailbox import ClientId, Event, MailboxTable
from delshare.pairing.server import RendezvousServer, serve_rendezvous

CODE = "31-guitar-orbit"
WAIT = 10.0
DIRECT = ConnectOptions(mode="direct", total_timeout=WAIT)


class CountingTable(MailboxTable):
    """The real table, counting the bodies each client adds (they are sealed: only counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.added: dict[ClientId, int] = {}

    def add(self, client: ClientId, body: str, now: float) -> list[Event]:
        self.added[client] = self.added.get(client, 0) + 1
        return super().add(client, body, now)


@pytest.fixture
async def table() -> CountingTable:
    return CountingTable()


@pytest.fixture
async def url(table: CountingTable) -> AsyncIterator[str]:
    server: RendezvousServer
    async with await serve_rendezvous("127.0.0.1", 0, store=table) as server:
        yield f"ws://127.0.0.1:{server.port}"


async def _paired(url: str) -> tuple[PairedChannel, PairedChannel]:
    return await asyncio.gather(
        pair(url, CODE, "sender", timeout=WAIT), pair(url, CODE, "receiver", timeout=WAIT)
    )


async def _exchange(sender: Connection, receiver: Connection) -> None:
    await sender.link.channel.send(b"first byte")
    assert await receiver.link.channel.recv() == b"first byte"
    await sender.close()
    await receiver.close()


async def test_two_current_peers_skip_the_empty_relay_steps(url: str, table: CountingTable) -> None:
    a, b = await _paired(url)
    async with a, b:
        sender, receiver = await asyncio.gather(
            connect_peer(a, "sender", DIRECT), connect_peer(b, "receiver", DIRECT)
        )
    assert sender.link.path.kind == receiver.link.path.kind == "direct"
    await _exchange(sender, receiver)
    # per side: SPAKE2 message, key confirmation, candidates; no reflexive, no ready
    assert sorted(table.added.values()) == [3, 3]


async def test_a_version_1_peer_gets_every_step(url: str, table: CountingTable) -> None:
    a, b = await _paired(url)
    seen: list[str] = []

    async def old_receiver() -> Connection:
        """``connect_peer`` as version 1 did it: every step, whatever the candidates."""
        gathered = await gather(DIRECT)
        wire = [c.to_wire() for c in gathered.candidates]
        await b.send({"t": "candidates", "v": 1, "mode": "direct", "candidates": wire})
        theirs = await b.receive()
        seen.append(theirs["t"])
        await b.send({"t": "reflexive", "candidates": []})
        seen.append((await b.receive())["t"])
        await b.send({"t": "ready"})
        seen.append((await b.receive())["t"])
        peer = parse_candidates(theirs["candidates"])
        key = derive_key(b.key, LINK_KEY_PURPOSE)
        return await race_gathered(gathered, key, "receiver", "direct", peer, DIRECT)

    async with a, b:
        sender, receiver = await asyncio.gather(connect_peer(a, "sender", DIRECT), old_receiver())
    assert seen == ["candidates", "reflexive", "ready"]
    await _exchange(sender, receiver)
    assert sorted(table.added.values()) == [5, 5]


def _dead_end() -> Gathered:
    """Endpoints nobody can reach: no listener, a candidate on a port that refuses."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return Gathered(None, None, host_candidates(["127.0.0.1"], port, ipv6=False))


async def test_with_no_path_both_sides_fail_early_through_the_rendezvous(
    url: str, table: CountingTable
) -> None:
    patient = ConnectOptions(mode="direct", total_timeout=120.0)  # the early end must stop it
    a, b = await _paired(url)
    async with a, b:
        results = await asyncio.wait_for(
            asyncio.gather(
                connect_peer(a, "sender", patient, gathered=_dead_end()),
                connect_peer(b, "receiver", patient, gathered=_dead_end()),
                return_exceptions=True,
            ),
            30,
        )
    for result in results:
        assert isinstance(result, NoPathError), result
        assert "every attempt failed on both sides" in str(result)
    # per side: SPAKE2, confirmation, candidates, and the "exhausted" notice
    assert sorted(table.added.values()) == [4, 4]
