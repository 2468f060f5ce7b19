"""Candidates and the connection race over real loopback sockets and an in-process relay."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delshare.aio.server import RelayConfig, RunningRelay, start_relay
from delshare.link.candidates import (
    Candidate,
    CandidateError,
    host_addresses,
    host_candidates,
    parse_candidates,
    start_listener,
)
from delshare.link.race import (
    GiveUp,
    LinkPath,
    LocalEndpoints,
    Mode,
    NoPathError,
    RaceConfig,
    RacedLink,
    combine_modes,
    race,
)
from delshare.link.records import LinkError, handshake
from delshare.link.relay import TurnRelay, TurnSettings, open_relay
from delshare.turn.auth import AuthConfig
from delshare.turn.server_config import ServerConfig
from delshare.turn.uri import parse_turn_uri

USER, PASSWORD = "racer", "pw-for-racing"


def test_host_addresses_include_loopback() -> None:
    assert "127.0.0.1" in host_addresses()


def test_candidate_wire_round_trip() -> None:
    for candidate in (
        Candidate("host", "127.0.0.1", 4000),
        Candidate("srflx", "2001:db8::1", 1),
        Candidate("relay", "203.0.113.5", 50000, "203.0.113.5:3478"),
    ):
        assert Candidate.from_wire(candidate.to_wire()) == candidate


@pytest.mark.parametrize(
    "wire",
    [
        {"kind": "host", "host": "example.com", "port": 1},
        {"kind": "host", "host": "0.0.0.0", "port": 1},
        {"kind": "host", "host": "224.0.0.1", "port": 1},
        {"kind": "host", "host": "127.0.0.1", "port": 0},
        {"kind": "host", "host": "127.0.0.1", "port": 70000},
        {"kind": "host", "host": "127.0.0.1", "port": True},
        {"kind": "peer", "host": "127.0.0.1", "port": 1},
        ["host", "127.0.0.1", 1],
    ],
)
def test_bad_candidates_are_refused(wire: object) -> None:
    with pytest.raises(CandidateError):
        Candidate.from_wire(wire)


def test_candidate_list_is_bounded_and_deduplicated() -> None:
    one = {"kind": "host", "host": "127.0.0.1", "port": 9}
    assert parse_candidates([one, one]) == [Candidate("host", "127.0.0.1", 9)]
    with pytest.raises(CandidateError):
        parse_candidates([one] * 65)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=8,
)


@given(JSON)
def test_any_json_parses_or_raises_candidate_error(obj: object) -> None:
    with contextlib.suppress(CandidateError):
        parse_candidates(obj)


@pytest.mark.parametrize(
    ("ours", "theirs", "both"),
    [("any", "any", "any"), ("any", "relay", "relay"), ("direct", "any", "direct"),
     ("relay", "relay", "relay")],
)  # fmt: skip
def test_combine_modes(ours: Mode, theirs: Mode, both: Mode) -> None:
    assert combine_modes(ours, theirs) == both


def test_direct_only_and_relay_only_cannot_meet() -> None:
    with pytest.raises(LinkError):
        combine_modes("direct", "relay")


def test_a_relayed_view_wins_over_a_direct_one() -> None:
    direct, relay = LinkPath("direct", "127.0.0.1:5"), LinkPath("relay", "turn:3478")
    assert direct.merged(relay) == relay
    assert relay.merged(direct) == relay
    assert direct.merged(LinkPath("direct", "other")) == direct
    assert relay.line() == "connected: relay turn:3478"


async def _race_both(
    key_a: bytes, key_b: bytes, a: LocalEndpoints, b: LocalEndpoints,
    cand_a: list[Candidate], cand_b: list[Candidate], mode: Mode = "any",
    relay_delay: float = 0.25, total: float = 10.0,
) -> tuple[RacedLink, RacedLink]:  # fmt: skip
    sender = RaceConfig(key_a, "sender", mode, relay_delay=relay_delay, total_timeout=total)
    receiver = RaceConfig(key_b, "receiver", mode, relay_delay=relay_delay, total_timeout=total)
    return await asyncio.gather(race(sender, a, cand_b), race(receiver, b, cand_a))


async def _exchange(a: RacedLink, b: RacedLink) -> None:
    await a.channel.send(b"ping")
    assert await b.channel.recv() == b"ping"
    await b.channel.send(b"pong")
    assert await a.channel.recv() == b"pong"
    await a.channel.close()
    await b.channel.close()


async def test_direct_race_on_loopback() -> None:
    key = os.urandom(32)
    la, lb = await start_listener(), await start_listener()
    try:
        ca = host_candidates(["127.0.0.1"], la.port, ipv6=la.ipv6)
        cb = host_candidates(["127.0.0.1", "::1"], lb.port, ipv6=lb.ipv6)
        a, b = await _race_both(key, key, LocalEndpoints(la), LocalEndpoints(lb), ca, cb)
        assert a.path.kind == b.path.kind == "direct"
        await _exchange(a, b)
    finally:
        la.close()
        lb.close()


def _established_tcp_sockets() -> int:
    """TCP sockets of this process in ESTABLISHED state (Linux /proc), both ends counted."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                count += fields[3] == "01" and fields[9] in inodes
    return count


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")
async def test_the_race_leaves_only_the_winner_connected() -> None:
    """Both sides dial each other, so two links authenticate; every loser is closed before
    the race returns (nothing competes with the transfer for the link or the CPU)."""
    key = os.urandom(32)
    before = _established_tcp_sockets()
    la, lb = await start_listener(), await start_listener()
    try:
        ca = host_candidates(["127.0.0.1"], la.port, ipv6=la.ipv6)
        cb = host_candidates(["127.0.0.1"], lb.port, ipv6=lb.ipv6)
        a, b = await _race_both(key, key, LocalEndpoints(la), LocalEndpoints(lb), ca, cb)
        for _ in range(100):  # an aborted transport closes its socket on the next loop pass
            if _established_tcp_sockets() - before <= 2:
                break
            await asyncio.sleep(0.01)
        assert _established_tcp_sockets() - before == 2  # the winner's two ends
        await _exchange(a, b)
    finally:
        la.close()
        lb.close()


async def test_a_wrong_key_never_connects() -> None:
    la, lb = await start_listener(), await start_listener()
    try:
        ca = host_candidates(["127.0.0.1"], la.port, ipv6=la.ipv6)
        cb = host_candidates(["127.0.0.1"], lb.port, ipv6=lb.ipv6)
        with pytest.raises(NoPathError, match="could not connect"):
            await _race_both(os.urandom(32), os.urandom(32), LocalEndpoints(la),
                             LocalEndpoints(lb), ca, cb, total=2.0)  # fmt: skip
    finally:
        la.close()
        lb.close()


async def test_a_path_record_nested_too_deeply_is_a_protocol_error() -> None:
    """A peer that knows the key but sends a ``path`` record JSON cannot parse (nesting deeper
    than the decoder recurses) fails that path with a clear "not JSON", not a RecursionError."""
    key = os.urandom(32)
    deep = b'{"t":"path","path":' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    async def rogue(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = await handshake(reader, writer, key, "receiver", 5.0)
        await channel.send_control(deep)
        with contextlib.suppress(LinkError, OSError):
            await channel.recv()  # until the racer drops this path

    server = await asyncio.start_server(rogue, "127.0.0.1", 0)
    la = await start_listener()
    try:
        peer = [Candidate("host", "127.0.0.1", server.sockets[0].getsockname()[1])]
        config = RaceConfig(key, "sender", "direct", total_timeout=2.0)
        with pytest.raises(NoPathError, match="'path' control record is not JSON"):
            await race(config, LocalEndpoints(la), peer)
    finally:
        la.close()
        server.close()


@pytest.fixture
async def turn_server() -> AsyncIterator[RunningRelay]:
    server = ServerConfig(auth=AuthConfig("race.test", {USER: PASSWORD}),
                          allow_peers=("127.0.0.0/8",))  # fmt: skip
    running = await start_relay(RelayConfig(server=server, listen=(("127.0.0.1", 0),)))
    yield running
    await running.close()


@pytest.fixture
async def relays(turn_server: RunningRelay) -> AsyncIterator[tuple[TurnRelay, TurnRelay]]:
    uri = parse_turn_uri(f"turn:127.0.0.1:{turn_server.turn_port}?transport=tcp")
    settings = TurnSettings(uri, USER, PASSWORD)
    a, b = await open_relay(settings), await open_relay(settings)
    yield a, b
    await a.close()
    await b.close()


async def test_relay_only_race_through_turn(
    relays: tuple[TurnRelay, TurnRelay], turn_server: RunningRelay
) -> None:
    a, b = relays
    ca, cb = a.candidates(), b.candidates()
    assert [c.kind for c in ca] == ["srflx", "relay"]
    assert await a.permit([c.host for c in cb]) == []
    assert await b.permit([c.host for c in ca]) == []
    key = os.urandom(32)
    la, lb = LocalEndpoints(allocation=a), LocalEndpoints(allocation=b)
    x, y = await _race_both(key, key, la, lb, ca, cb, mode="relay")
    server = f"127.0.0.1:{turn_server.turn_port}"
    assert x.path == y.path == LinkPath("relay", server)
    await _exchange(x, y)


async def test_direct_wins_when_relay_is_late(relays: tuple[TurnRelay, TurnRelay]) -> None:
    a, b = relays
    la, lb = await start_listener(), await start_listener()
    try:
        ca = host_candidates(["127.0.0.1"], la.port, ipv6=la.ipv6) + a.candidates()
        cb = host_candidates(["127.0.0.1"], lb.port, ipv6=lb.ipv6) + b.candidates()
        await a.permit([c.host for c in cb])
        await b.permit([c.host for c in ca])
        key = os.urandom(32)
        x, y = await _race_both(key, key, LocalEndpoints(la, a), LocalEndpoints(lb, b), ca, cb,
                                relay_delay=5.0)  # fmt: skip
        assert x.path.kind == y.path.kind == "direct"
        await _exchange(x, y)
    finally:
        la.close()
        lb.close()


async def test_permission_refusals_are_reported_not_raised(
    relays: tuple[TurnRelay, TurnRelay],
) -> None:
    a, _ = relays
    refused = await a.permit(["127.0.0.1", "10.1.2.3", "::1"])
    assert refused == ["10.1.2.3", "::1"]  # not an allowed peer; other address family


async def test_relay_only_without_any_relay_fails_at_once() -> None:
    config = RaceConfig(os.urandom(32), "sender", "relay", total_timeout=60.0)
    with pytest.raises(NoPathError, match="no relayed path"):
        await asyncio.wait_for(race(config, LocalEndpoints(), [Candidate("host", "127.0.0.1", 9)]),
                               5)  # fmt: skip


@pytest.mark.parametrize("relayed_side", ["sender", "receiver"])
async def test_peer_dials_the_relayed_address_of_the_only_allocation(
    relays: tuple[TurnRelay, TurnRelay], turn_server: RunningRelay, relayed_side: str
) -> None:
    """Only one side allocates: the other dials its relayed address (RFC 6062 §5.3)."""
    relay, _ = relays
    assert await relay.permit(["127.0.0.1"]) == []
    with_relay, without = LocalEndpoints(allocation=relay), LocalEndpoints()
    key = os.urandom(32)
    if relayed_side == "sender":
        x, y = await _race_both(key, key, with_relay, without, relay.candidates(), [], "relay")
    else:
        x, y = await _race_both(key, key, without, with_relay, [], relay.candidates(), "relay")
    assert x.path == y.path == LinkPath("relay", f"127.0.0.1:{turn_server.turn_port}")
    owner, dialer = (x, y) if relayed_side == "sender" else (y, x)
    assert owner.via_own_allocation and not dialer.via_own_allocation
    await _exchange(x, y)


def test_a_named_turn_server_wins_over_a_bare_relayed_address() -> None:
    bare = LinkPath("relay", "203.0.113.1:50000", labelled=False)
    named = LinkPath("relay", "203.0.113.1:3478")
    assert bare.merged(named) == named
    assert named.merged(bare) == named
    assert bare.merged(LinkPath("direct", "x")) == bare


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _crossed_give_ups() -> tuple[GiveUp, GiveUp]:
    """What the app does over the rendezvous: each side says it is spent, waits for the other."""
    spent = (asyncio.Event(), asyncio.Event())

    def side(mine: asyncio.Event, theirs: asyncio.Event) -> GiveUp:
        async def give_up() -> None:
            mine.set()
            await theirs.wait()

        return give_up

    return side(spent[0], spent[1]), side(spent[1], spent[0])


async def test_when_every_attempt_fails_on_both_sides_the_race_ends_early() -> None:
    key, total = os.urandom(32), 60.0  # the early end, not this timeout, must stop the race
    give_a, give_b = _crossed_give_ups()
    port_a, port_b = _closed_port(), _closed_port()
    dead_a = host_candidates(["127.0.0.1"], port_a, ipv6=False)
    dead_b = host_candidates(["127.0.0.1"], port_b, ipv6=False)
    sender = RaceConfig(key, "sender", "direct", total_timeout=total)
    receiver = RaceConfig(key, "receiver", "direct", total_timeout=total)
    results = await asyncio.wait_for(
        asyncio.gather(
            race(sender, LocalEndpoints(), dead_b, give_up=give_a),
            race(receiver, LocalEndpoints(), dead_a, give_up=give_b),
            return_exceptions=True,
        ),
        20,
    )
    for result, dialled in zip(results, (port_b, port_a), strict=True):
        assert isinstance(result, NoPathError), result
        assert "every attempt failed on both sides" in str(result)
        assert f"direct 127.0.0.1:{dialled}:" in str(result)  # says what it tried


async def test_a_spent_side_still_takes_the_peer_dialling_in() -> None:
    key = os.urandom(32)
    give_a, give_b = _crossed_give_ups()
    listener = await start_listener()
    try:
        own = host_candidates(["127.0.0.1"], listener.port, ipv6=listener.ipv6)
        sender = RaceConfig(key, "sender", "direct", total_timeout=20)
        receiver = RaceConfig(key, "receiver", "direct", total_timeout=20)
        a, b = await asyncio.gather(  # the receiver has nothing to dial: spent at once
            race(sender, LocalEndpoints(), own, give_up=give_a),
            race(receiver, LocalEndpoints(listener), [], give_up=give_b),
        )
        assert a.path.kind == b.path.kind == "direct"
        await _exchange(a, b)
    finally:
        listener.close()


async def test_a_peer_that_never_gives_up_leaves_the_race_to_its_timeout() -> None:
    async def never() -> None:
        await asyncio.Event().wait()

    config = RaceConfig(os.urandom(32), "sender", "direct", total_timeout=1.0)
    dead = host_candidates(["127.0.0.1"], _closed_port(), ipv6=False)
    with pytest.raises(NoPathError, match="within 1 s"):
        await race(config, LocalEndpoints(), dead, give_up=never)
