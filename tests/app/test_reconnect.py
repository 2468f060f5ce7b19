"""A transfer heals itself when its relay dies and comes back (issue 14), on loopback, no root.

``send`` and ``receive`` run as real processes with ``--relay-only`` through a real
``delshare relay`` (TURN + rendezvous). Once the receiver's ``.part`` holds some data, the test
stops the receiver (SIGSTOP: the transfer cannot finish meanwhile, whatever the machine's
speed), kills the relay with SIGKILL, starts a new relay on the same ports and lets the receiver
go on (SIGCONT). The same two processes must reconnect through the new relay and finish with
identical bytes; with ``--reconnect-timeout 0`` both fail at once as before, keeping the
``.part``. A stranger who knows the reconnect mailbox's name but not the session key is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from delshare.app.common import SessionOptions
from delshare.app.connect import ConnectOptions, connect_peer
from delshare.app.events import Event, LinkLost
from delshare.app.session import reconnect_names, rendezvous_healer
from delshare.errors import PairingError
from delshare.pairing import pair, rejoin
from delshare.pairing.server import serve_rendezvous
from delshare.transfer.errors import TransferInterruptedError
from delshare.transfer.resume import temp_paths
from tests.app.harness import (
    Outcome,
    RelayProcess,
    assert_lost_without_reconnecting,
    env_for,
    finish,
    sha256_file,
    start,
    start_relay_process,
    stop,
    wait_for_part,
)

SIZE = int(os.environ.get("DELSHARE_TEST_RECONNECT_MIB", "64")) << 20
NAME = "big.bin"
WAIT = 60.0
RECONNECTED = re.compile(
    r"^reconnected: relay 127\.0\.0\.1:\d+, resuming at [\d.]+ (B|KiB|MiB|GiB) of 64(\.0)? MiB$"
)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("source") / NAME
    with path.open("wb") as f:
        for _ in range(SIZE >> 20):
            f.write(os.urandom(1 << 20))
    return path


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    relays = [start_relay_process(tmp_path)]
    yield relays
    for one in relays:
        stop(one.process)


def _break_the_relay(
    tmp_path: Path,
    relays: list[RelayProcess],
    source: Path,
    reconnect: str,
    relay_flags: tuple[str, ...] = (),
) -> tuple[Outcome, Outcome, Path]:
    """Relay-only transfer; the relay SIGKILLed mid-transfer and started again on its ports.

    With ``relay_flags`` (given to the new relay too) the clients have only the rendezvous URL
    and relay through the TURN server and credentials it hands out."""
    old = relays[0]
    env = env_for(old.rendezvous) if relay_flags else env_for(old.rendezvous, old.turn)
    out = tmp_path / "out"
    out.mkdir()
    flags = ["--relay-only", "--reconnect-timeout", reconnect]
    sender = start(["send", str(source), "--code", "5-guitar-orbit", *flags], env)
    receiver = start(["receive", "5-guitar-orbit", "-o", str(out), "--yes", *flags], env)
    try:
        wait_for_part(temp_paths(out / NAME)[0], [sender, receiver], WAIT, "the relay was killed")
        receiver.send_signal(signal.SIGSTOP)
        old.process.kill()  # SIGKILL: no goodbye to anyone
        old.process.wait(10)
        ports = (old.turn_port, old.rendezvous_port)
        relays.append(start_relay_process(tmp_path, ports=ports, extra=relay_flags))
        receiver.send_signal(signal.SIGCONT)
        received = finish(receiver)
    finally:
        receiver.send_signal(signal.SIGCONT)
        sent = finish(sender)
    return sent, received, out


def test_the_same_processes_finish_after_the_relay_is_killed_and_restarted(
    tmp_path: Path, relay: list[RelayProcess], source: Path
) -> None:
    sent, received, out = _break_the_relay(tmp_path, relay, source, "60")
    assert received.returncode == 0, received.stdout + received.stderr
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sha256_file(out / NAME) == sha256_file(source)
    assert not (temp_paths(out / NAME)[0]).exists()
    for outcome in (sent, received):
        assert outcome.line("link lost: ").endswith("; reconnecting\u2026")
        assert RECONNECTED.match(outcome.line("reconnected: ")), outcome.stdout
    resumed = re.search(r"^resuming big\.bin at ([\d.]+ \w+) of ", received.stdout, re.MULTILINE)
    assert resumed is not None and resumed.group(1) != "0 B"


def test_a_client_with_only_the_rendezvous_reconnects_through_the_handed_turn_server(
    tmp_path: Path, source: Path
) -> None:
    """The relay hands out TURN credentials (``--auth-secret``); after its restart the same
    short-lived credentials allocate again (the secret did not change)."""
    flags = ("--auth-secret", "rest-secret-for-tests")
    relays = [start_relay_process(tmp_path, extra=flags)]
    try:
        sent, received, out = _break_the_relay(tmp_path, relays, source, "60", flags)
    finally:
        for one in relays:
            stop(one.process)
    assert received.returncode == 0 and sent.returncode == 0, received.stderr + sent.stderr
    assert sha256_file(out / NAME) == sha256_file(source)
    for outcome in (sent, received):
        assert RECONNECTED.match(outcome.line("reconnected: ")), outcome.stdout


def test_reconnect_timeout_0_fails_as_before_and_keeps_the_part(
    tmp_path: Path, relay: list[RelayProcess], source: Path
) -> None:
    sent, received, out = _break_the_relay(tmp_path, relay, source, "0")
    assert_lost_without_reconnecting(sent, received, out / NAME)


def test_json_reports_link_lost_and_reconnected(
    tmp_path: Path, relay: list[RelayProcess], source: Path
) -> None:
    old = relay[0]
    env = env_for(old.rendezvous, old.turn, DELSHARE_RECONNECT_TIMEOUT="60")
    out = tmp_path / "out"
    out.mkdir()
    sender = start(["send", str(source), "--code", "6-guitar-orbit", "--relay-only"], env)
    receiver = start(
        ["receive", "6-guitar-orbit", "-o", str(out), "--yes", "--relay-only", "--json"], env
    )
    try:
        wait_for_part(temp_paths(out / NAME)[0], [sender, receiver], WAIT, "the relay was killed")
        old.process.kill()
        old.process.wait(10)
        relay.append(start_relay_process(tmp_path, ports=(old.turn_port, old.rendezvous_port)))
        received = finish(receiver)
    finally:
        sent = finish(sender)
    assert received.returncode == 0 and sent.returncode == 0, received.stderr + sent.stderr
    events = [json.loads(line) for line in received.stdout.splitlines()]
    names = [e["event"] for e in events]
    assert names.index("link-lost") < names.index("reconnected") < names.index("done")
    reconnected = next(e for e in events if e["event"] == "reconnected")
    assert reconnected["kind"] == "relay" and reconnected["total"] == SIZE
    assert 0 < reconnected["done"] < SIZE
    assert sha256_file(out / NAME) == sha256_file(source)


async def _paired_keys(url: str) -> tuple[bytes, bytes]:
    sender, receiver = await asyncio.gather(
        pair(url, "9-guitar-orbit", "sender", timeout=10),
        pair(url, "9-guitar-orbit", "receiver", timeout=10),
    )
    await sender.close()
    await receiver.close()
    return sender.key, receiver.key


def test_a_stranger_in_the_reconnect_mailbox_is_refused() -> None:
    """Someone who learned the mailbox's name (say, the rendezvous operator) but not the
    session key: what it seals does not open, the receiver never links to it, and the real
    sender still reconnects afterwards."""

    async def scenario() -> None:
        server = await serve_rendezvous("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{server.port}"
        try:
            key, _ = await _paired_keys(url)
            nameplate, _ = reconnect_names(key)
            events: list[Event] = []
            options = SessionOptions(url, ConnectOptions(), reconnect_timeout=20.0)
            receiver = rendezvous_healer(url, key, "receiver", options, events.append)
            healing = asyncio.ensure_future(
                receiver.reconnect(TransferInterruptedError("link lost while receiving: x"))
            )
            stranger = await rejoin(url, nameplate, os.urandom(32), "sender", timeout=5)
            with pytest.raises(PairingError):
                await connect_peer(stranger, "sender", ConnectOptions())
            await stranger.close()
            assert not healing.done()
            sender = rendezvous_healer(url, key, "sender", options, events.append)
            lost = TransferInterruptedError("link lost while sending: x")
            ours, theirs = await asyncio.gather(healing, sender.reconnect(lost))
            assert ours.link.path.kind == theirs.link.path.kind == "direct"
            await asyncio.gather(ours.close(), theirs.close())
            assert [e for e in events if isinstance(e, LinkLost)] == [LinkLost("x")] * 2
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(scenario(), 60))
