"""Rendezvous nodes sharing their mailboxes through a real redis-server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from tests.support.ports import free_port
from tests.support.redis_server import redis_missing, redis_running, start_redis

if redis_missing():
    pytest.skip(str(redis_missing()), allow_module_level=True)

from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from delshare.errors import PairingError
from delshare.pairing import wire
from delshare.pairing.client import PairedChannel, pair
from delshare.pairing.envelope import Phase, encode_body
from delshare.pairing.mailbox import MailboxLimits, MailboxTable
from delshare.pairing.server import RendezvousServer, serve_rendezvous

CODE = "7-guitar-orbit"
WAIT = 10.0
BEAT = 0.2  # node heartbeat in these tests: a crashed node's sides lapse after MIN_LEASE (1 s)

NODE_SCRIPT = """
import asyncio, sys
from delshare.pairing.mailbox import MailboxLimits
from delshare.pairing.server import serve_rendezvous

async def main():
    limits = MailboxLimits(max_age=float(sys.argv[2]))
    server = await serve_rendezvous(
        "127.0.0.1", 0, limits=limits, redis_url=sys.argv[1], sweep_interval=0.2
    )
    print(server.port, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_running() as url:
        yield url


@pytest.fixture
async def db(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


Node = Callable[..., Awaitable[RendezvousServer]]


@pytest.fixture
async def node(redis_url: str, db: Redis) -> AsyncIterator[Node]:
    """Start rendezvous nodes on the test Redis; all are closed at the end."""
    started: list[RendezvousServer] = []

    async def start(limits: MailboxLimits | None = None) -> RendezvousServer:
        server = await serve_rendezvous(
            "127.0.0.1", 0, limits=limits, redis_url=redis_url, sweep_interval=BEAT
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT)
    assert await db.keys("del:*") == []  # closed nodes leave nothing behind


def _url(server: RendezvousServer) -> str:
    return f"ws://127.0.0.1:{server.port}"


async def _until(condition: Callable[[], Awaitable[bool]], tries: int = 500) -> None:
    """Wait (bounded) for something that happens asynchronously."""
    for _ in range(tries):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never became true")


def _exists(db: Redis, key: str, wanted: bool = True) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(await db.exists(key)) == wanted

    return check


async def _mailbox_keys(db: Redis) -> list[str]:
    keys = [str(key) for key in await db.keys("del:*")]
    nodes = ("del:node:", "del:nodes", "del:capacity")  # live nodes' own keys
    return sorted(key for key in keys if not key.startswith(nodes))


async def _pair_across(a: RendezvousServer, b: RendezvousServer) -> tuple[object, object]:
    sender, receiver = await asyncio.gather(
        pair(_url(a), CODE, "sender", timeout=WAIT),
        pair(_url(b), CODE, "receiver", timeout=WAIT),
        return_exceptions=True,
    )
    return sender, receiver


async def _open(server: RendezvousServer, nameplate: str) -> ClientConnection:
    raw = await connect(_url(server), proxy=None)
    await raw.send(wire.encode(wire.OpenMessage(nameplate)))
    return raw


async def _add(raw: ClientConnection, body: str) -> None:
    await raw.send(wire.encode(wire.AddMessage(body)))


async def _next(raw: ClientConnection) -> wire.ServerMessage:
    return wire.decode_server(await asyncio.wait_for(raw.recv(), WAIT))


async def test_peers_on_different_nodes_pair_and_talk_both_ways(node: Node, db: Redis) -> None:
    a, b = await node(), await node()
    sender, receiver = await _pair_across(a, b)
    assert isinstance(sender, PairedChannel) and isinstance(receiver, PairedChannel)
    assert sender.key == receiver.key
    await sender.send({"candidates": ["a", 1]})
    await sender.send({"offer": {"name": "a.txt"}})
    assert await receiver.receive() == {"candidates": ["a", 1]}
    assert await receiver.receive() == {"offer": {"name": "a.txt"}}
    await receiver.send({"answer": True})
    assert await sender.receive() == {"answer": True}
    await sender.close()
    with pytest.raises(PairingError, match="peer left"):
        await receiver.receive()
    await receiver.close()

    async def forgotten() -> bool:
        return await _mailbox_keys(db) == []

    await _until(forgotten)


async def test_wrong_code_fails_on_both_nodes(node: Node) -> None:
    a, b = await node(), await node()
    results = await asyncio.gather(
        pair(_url(a), CODE, "sender", timeout=WAIT),
        pair(_url(b), "7-guitar-otter", "receiver", timeout=WAIT),
        return_exceptions=True,
    )
    assert all(isinstance(r, PairingError) and "wrong code" in str(r) for r in results), results


async def test_third_client_is_refused_on_either_node(node: Node) -> None:
    a, b = await node(), await node()
    sender, receiver = await _pair_across(a, b)
    assert isinstance(sender, PairedChannel) and isinstance(receiver, PairedChannel)
    async with sender, receiver:
        for server in (a, b):
            with pytest.raises(PairingError, match="in use by another sender"):
                await pair(_url(server), CODE, "sender", timeout=WAIT)
        await sender.send({"still": "works"})
        assert await receiver.receive() == {"still": "works"}


async def test_bodies_wait_for_a_peer_on_another_node_and_messages_are_bounded(
    node: Node,
) -> None:
    limits = MailboxLimits(max_messages=3)
    a, b = await node(limits), await node(limits)
    async with await _open(a, "9") as first:
        await _add(first, "one")
        async with await _open(b, "9") as second:
            assert await _next(second) == wire.RelayMessage("one")
            await _add(second, "two")
            await _add(second, "three")
            assert await _next(first) == wire.RelayMessage("two")
            assert await _next(first) == wire.RelayMessage("three")
            await _add(first, "four")
            assert await _next(first) == wire.ErrorMessage("mailbox message limit reached")
            assert await _next(second) == wire.CloseMessage("peer left")


async def test_bytes_are_bounded_across_nodes(node: Node) -> None:
    limits = MailboxLimits(max_bytes=10)
    a, b = await node(limits), await node(limits)
    async with await _open(a, "9") as first, await _open(b, "9") as second:
        await _add(first, "x" * 6)
        assert await _next(second) == wire.RelayMessage("x" * 6)
        await _add(second, "é" * 3)  # 6 bytes in UTF-8
        assert await _next(second) == wire.ErrorMessage("mailbox byte limit reached")


async def test_mailbox_count_is_bounded_across_nodes_and_scales_with_them(
    node: Node, db: Redis
) -> None:
    limits = MailboxLimits(max_mailboxes=1)
    a, b = await node(limits), await node(limits)  # two nodes: two mailboxes in all

    async with await _open(a, "1"), await _open(b, "2"):
        await _until(_exists(db, "del:mb:1"))
        await _until(_exists(db, "del:mb:2"))
        async with await _open(a, "3") as third:
            assert await _next(third) == wire.ErrorMessage("server busy: too many open mailboxes")
        async with await _open(a, "2") as joiner:  # joining an existing mailbox is fine
            await _add(joiner, "ok")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(joiner.recv(), 0.3)


async def test_expired_mailbox_closes_both_nodes_and_redis_forgets_it(
    node: Node, db: Redis
) -> None:
    limits = MailboxLimits(max_age=0.6)
    a, b = await node(limits), await node(limits)
    async with await _open(a, "5") as first, await _open(b, "5") as second:
        await _add(first, "hello")
        assert await _next(second) == wire.RelayMessage("hello")
        assert await _next(first) == wire.CloseMessage("mailbox expired")
        assert await _next(second) == wire.CloseMessage("mailbox expired")

    async def forgotten() -> bool:  # the seats' per-address entries go as the sides close
        return await _mailbox_keys(db) == []

    await _until(forgotten)
    with pytest.raises(PairingError, match="mailbox expired"):
        await pair(_url(a), CODE, "sender", timeout=WAIT)
    await _until(forgotten)


async def test_node_restart_mid_wait_leaves_a_clean_mailbox(node: Node, db: Redis) -> None:
    a, b = await node(), await node()
    waiting = asyncio.create_task(pair(_url(a), CODE, "sender", timeout=WAIT))
    await _until(_exists(db, "del:mb:7:in2"))  # its PAKE message waits for side 2
    a.close()
    await a.wait_closed()
    with pytest.raises(PairingError, match="closed"):
        await waiting
    assert await _mailbox_keys(db) == []
    restarted = await node()
    sender, receiver = await _pair_across(restarted, b)
    assert isinstance(sender, PairedChannel) and isinstance(receiver, PairedChannel)
    async with sender, receiver:
        await receiver.send({"after": "restart"})
        assert await sender.receive() == {"after": "restart"}


Crashable = Callable[[float], Awaitable[tuple[asyncio.subprocess.Process, str]]]


@pytest.fixture
async def crashing_node(redis_url: str) -> AsyncIterator[Crashable]:
    """Nodes in their own processes, to be killed with SIGKILL (no clean-up runs)."""
    processes: list[asyncio.subprocess.Process] = []

    async def start(max_age: float = 600.0) -> tuple[asyncio.subprocess.Process, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", NODE_SCRIPT, redis_url, str(max_age), stdout=PIPE
        )
        processes.append(process)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), WAIT)
        return process, f"ws://127.0.0.1:{int(line)}"

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_crashed_node_frees_its_waiting_side_and_tells_its_peer(
    node: Node, db: Redis, crashing_node: Crashable
) -> None:
    process, doomed = await crashing_node(600.0)
    a, b = await node(), await node()
    async with connect(doomed, proxy=None) as lone, connect(doomed, proxy=None) as paired:
        # a lone side that already left a (garbage) PAKE message, and one side of a pair
        await lone.send(wire.encode(wire.OpenMessage("7")))
        await _add(lone, encode_body(Phase.PAKE, b"s" + b"\x01" * 5))
        await paired.send(wire.encode(wire.OpenMessage("8")))
        async with await _open(b, "8") as survivor:
            await _add(paired, "hi")
            assert await _next(survivor) == wire.RelayMessage("hi")
            process.kill()
            await process.wait()
            assert await _next(survivor) == wire.CloseMessage("peer left")

    await _until(_exists(db, "del:mb:7:live1", False))
    sender, receiver = await _pair_across(a, b)  # the dead side and its body are gone
    assert isinstance(sender, PairedChannel) and isinstance(receiver, PairedChannel)
    await sender.close()
    await receiver.close()


async def test_redis_forgets_an_abandoned_mailbox_on_its_own(
    db: Redis, crashing_node: Crashable
) -> None:
    """Nobody is left to close the mailbox: only the keys' expiry removes it."""
    process, doomed = await crashing_node(0.8)
    async with connect(doomed, proxy=None) as lone:
        await lone.send(wire.encode(wire.OpenMessage("6")))
        await _add(lone, "buffered")
        await _until(_exists(db, "del:mb:6:in2"))
        process.kill()
        await process.wait()
    assert "del:mb:6" in await _mailbox_keys(db)

    async def forgotten() -> bool:
        return await _mailbox_keys(db) == []

    await _until(forgotten)


async def test_protocol_misuse_is_refused(node: Node) -> None:
    a = await node()
    async with connect(_url(a), proxy=None) as raw:
        await _add(raw, "x")
        assert await _next(raw) == wire.ErrorMessage("open a mailbox first")
    async with await _open(a, "7") as raw:
        await raw.send(wire.encode(wire.OpenMessage("8")))
        assert await _next(raw) == wire.ErrorMessage("mailbox already open on this connection")


async def test_a_second_sender_cannot_take_a_held_code_on_any_node(node: Node, db: Redis) -> None:
    a, b = await node(), await node()
    sender = asyncio.create_task(pair(_url(a), CODE, "sender", timeout=WAIT))
    await _until(_exists(db, "del:mb:7:in2"))
    with pytest.raises(PairingError, match="in use by another sender"):
        await pair(_url(b), CODE, "sender", timeout=WAIT)
    receiver = await pair(_url(b), CODE, "receiver", timeout=WAIT)
    async with await sender, receiver:
        await receiver.send({"still": "paired"})
        assert await (await sender).receive() == {"still": "paired"}


async def test_redis_outage_refuses_cleanly_and_nodes_recover() -> None:
    port = free_port("tcp")
    process, url = start_redis(port)
    try:
        limits = MailboxLimits()
        a = await serve_rendezvous(limits=limits, redis_url=url, sweep_interval=BEAT)
        b = await serve_rendezvous(limits=limits, redis_url=url, sweep_interval=BEAT)
        async with a, b:
            process.kill()
            process.wait()
            async with await _open(a, "4") as raw:
                refusal = wire.ErrorMessage("rendezvous store unavailable, try again later")
                assert await _next(raw) == refusal
            process, _ = start_redis(port)
            sender, receiver = await _pair_across(a, b)
            assert isinstance(sender, PairedChannel) and isinstance(receiver, PairedChannel)
            async with sender, receiver:
                await sender.send({"back": True})
                assert await receiver.receive() == {"back": True}
    finally:
        process.kill()
        process.wait()


async def test_unreachable_redis_fails_at_start() -> None:
    with pytest.raises(PairingError, match="Redis"):
        await serve_rendezvous(redis_url=f"redis://127.0.0.1:{free_port('tcp')}/0")


async def test_store_and_redis_url_together_are_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="not both"):
        await serve_rendezvous(store=MailboxTable(), redis_url=redis_url)


async def test_a_redis_restart_is_reported_as_lost_state_not_expiry() -> None:
    """Issue 12 item 6: after Redis lost everything, waiting clients are told so."""
    port = free_port("tcp")
    process, url = start_redis(port)
    try:
        a = await serve_rendezvous(redis_url=url, sweep_interval=BEAT)
        async with a:
            db = Redis.from_url(url, decode_responses=True)
            waiting = asyncio.create_task(pair(_url(a), CODE, "sender", timeout=WAIT))
            await _until(_exists(db, "del:mb:7:in2"))
            await db.aclose()
            process.kill()
            process.wait()
            process, _ = start_redis(port)  # empty: no persistence
            with pytest.raises(PairingError, match=r"lost its state.*ask for a new code"):
                await waiting
            sender, receiver = await _pair_across(a, a)
            assert isinstance(sender, PairedChannel) and isinstance(receiver, PairedChannel)
            async with sender, receiver:
                await sender.send({"after": "loss"})
                assert await receiver.receive() == {"after": "loss"}
    finally:
        process.kill()
        process.wait()


async def test_a_message_after_a_redis_restart_is_refused_as_lost_state() -> None:
    port = free_port("tcp")
    process, url = start_redis(port)
    try:
        a = await serve_rendezvous(redis_url=url, sweep_interval=5.0)  # no beat meanwhile
        async with a, await _open(a, "6") as raw:
            await _add(raw, "before")
            db = Redis.from_url(url, decode_responses=True)
            await _until(_exists(db, "del:mb:6:in2"))
            await db.aclose()
            process.kill()
            process.wait()
            process, _ = start_redis(port)
            await _add(raw, "after")
            reply = await _next(raw)
            assert isinstance(reply, wire.ErrorMessage) and "lost its state" in reply.reason
    finally:
        process.kill()
        process.wait()
