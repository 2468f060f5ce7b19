"""Issue 10 item 9: no wait for a peer's message is without end.

Real ``delshare send`` / ``delshare receive`` subprocesses (``DELSHARE_PEER_TIMEOUT=2``) against a
hostile peer that pairs and connects like the real one and then goes silent while keeping the
link up. Old behaviour: both waited until the peer disconnected (300 s observed). The hostile
peer here holds the link for ``HOLD`` seconds, far longer than the timeout, and closes only when
the CLI has exited (or ``HOLD`` ran out: then the test fails on the CLI's message).
"""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from delshare.link.records import RecordChannel, Role
from delshare.transfer.errors import PeerTimeoutError
from delshare.transfer.manifest import BuiltManifest, Entry, Manifest
from delshare.transfer.protocol import (
    Accept,
    Offer,
    Wait,
    recv_message,
    send_message,
    write_message,
)
from delshare.transfer.sender import send_files
from tests.adversarial.conftest import scaled
from tests.adversarial.hostile_peer import (
    Script,
    as_peer,
    finish_cli,
    listing,
    start_cli,
)
from tests.app.harness import DELSHARE, RelayProcess, env_for
from tests.support.terminal import read_until
from tests.transfer.conftest import channel_pair

HOLD = 30.0
RECONNECT = "0"  # a silent link is also how a dead one looks: no reconnecting here (issue 14)


async def _hold_until_exit(process: subprocess.Popen[bytes]) -> None:
    for _ in range(int(HOLD * 10)):
        if process.poll() is not None:
            return
        await asyncio.sleep(0.1)


def _silent_sender(process: subprocess.Popen[bytes]) -> Script[None]:
    async def script(channel: RecordChannel) -> None:
        await _hold_until_exit(process)  # link up, no offer

    return script


def _accept_then_silence(process: subprocess.Popen[bytes]) -> Script[None]:
    async def script(channel: RecordChannel) -> None:
        assert isinstance(await recv_message(channel), Offer)
        await send_message(channel, Accept())
        await _hold_until_exit(process)  # the small file sits in buffers; never "done"

    return script


def _never_answer(process: subprocess.Popen[bytes]) -> Script[None]:
    async def script(channel: RecordChannel) -> None:
        assert isinstance(await recv_message(channel), Offer)
        await _hold_until_exit(process)

    return script


async def _gives_up(
    relay: RelayProcess,
    env: dict[str, str],
    argv: list[str],
    code: str,
    role: Role,
    script: Callable[[subprocess.Popen[bytes]], Script[None]],
) -> str:
    """``delshare ARGV`` against a hostile ``role`` pairing with ``code`` and running ``script``
    (bounded by ``HOLD``): the CLI must exit 1 by itself. Returns its stderr."""
    process = start_cli(argv, env)
    try:
        await asyncio.wait_for(as_peer(relay.rendezvous, code, role, script(process)), HOLD + 30)
    finally:
        returncode, _, stderr = await asyncio.to_thread(finish_cli, process)
    assert returncode == 1, stderr
    return stderr.decode()


async def test_a_receiver_that_gets_no_offer_gives_up(relay: RelayProcess, tmp_path: Path) -> None:
    env = env_for(relay.rendezvous, DELSHARE_PEER_TIMEOUT="2", DELSHARE_RECONNECT_TIMEOUT=RECONNECT)
    for attempt in range(scaled(1, 3)):
        out = tmp_path / f"out{attempt}"
        out.mkdir()
        code = f"{600 + attempt}-guitar-orbit"
        argv = ["receive", code, "-o", str(out), "--yes"]
        stderr = await _gives_up(relay, env, argv, code, "sender", _silent_sender)
        assert "no word from the peer for 2 s while waiting for the sender's offer" in stderr
        assert listing(out) == []


@pytest.mark.parametrize("script", [_accept_then_silence, _never_answer], ids=["done", "accept"])
async def test_a_sender_whose_receiver_goes_silent_gives_up(
    relay: RelayProcess, tmp_path: Path, script: Callable[[subprocess.Popen[bytes]], Script[None]]
) -> None:
    small = tmp_path / "small.txt"
    small.write_text("fits in any socket buffer\n")
    env = env_for(relay.rendezvous, DELSHARE_PEER_TIMEOUT="2", DELSHARE_RECONNECT_TIMEOUT=RECONNECT)
    code = f"{610 + (script is _never_answer)}-guitar-orbit"
    argv = ["send", str(small), "--code", code]
    text = await _gives_up(relay, env, argv, code, "receiver", script)
    if script is _accept_then_silence:
        assert "the receiver confirmed nothing for 2 s after the last byte" in text
    else:
        assert "no word from the peer for 2 s while waiting for the receiver's answer" in text


def test_a_user_slower_than_the_timeout_at_the_prompt_is_not_a_silent_peer(
    relay: RelayProcess, tmp_path: Path
) -> None:
    """The receiver says ``wait`` while its user decides; the sender keeps waiting."""
    small = tmp_path / "small.txt"
    small.write_text("hello\n")
    out = tmp_path / "out"
    out.mkdir()
    env = env_for(relay.rendezvous, DELSHARE_PEER_TIMEOUT="1")
    code = "620-guitar-orbit"
    sender = start_cli(["send", str(small), "--code", code], env)
    master, slave = pty.openpty()
    try:
        receiver = subprocess.Popen(
            [DELSHARE, "receive", code, "-o", str(out)],
            env=env,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        slave = -1
        read_until(master, b"[y/N]", 60)
        time.sleep(4)  # four peer timeouts at the prompt
        os.write(master, b"y\n")
        received = finish_cli(receiver)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
        sent = finish_cli(sender)
    assert (received[0], sent[0]) == (0, 0), (received, sent)
    assert (out / "small.txt").read_text() == "hello\n"


async def test_a_big_offer_to_a_receiver_that_reads_nothing_gives_up(tmp_path: Path) -> None:
    """~16 MiB of file list, more than the socket buffers hold; the receiver never reads."""
    names = [f"{n:06d}-{'x' * 240}" for n in range(65_000)]
    entries = tuple(Entry(name, "file", 1) for name in names)
    built = BuiltManifest(Manifest(entries), tuple(tmp_path / name for name in names))
    sender, receiver = await channel_pair()
    try:
        with pytest.raises(PeerTimeoutError, match="the peer read nothing for 1 s"):
            await asyncio.wait_for(send_files(sender, built, wait_timeout=1), HOLD)
    finally:
        sender.abort()
        receiver.abort()


BUSY_TIMEOUT = "0.4"  # busy limit: 15 x 0.4 s = 6 s


async def _say_wait_until_exit(channel: RecordChannel, process: subprocess.Popen[bytes]) -> None:
    """Keepalives every 0.1 s, far within the peer timeout, until the CLI gives up."""
    for _ in range(int(HOLD * 10)):
        if process.poll() is not None:
            return
        write_message(channel, Wait())
        await asyncio.sleep(0.1)


def _busy_sender(process: subprocess.Popen[bytes]) -> Script[None]:
    async def script(channel: RecordChannel) -> None:
        await _say_wait_until_exit(channel, process)  # "busy" forever, never an offer

    return script


def _busy_at_the_offer(process: subprocess.Popen[bytes]) -> Script[None]:
    async def script(channel: RecordChannel) -> None:
        assert isinstance(await recv_message(channel), Offer)
        await _say_wait_until_exit(channel, process)  # "at the prompt" forever

    return script


def _busy_instead_of_done(process: subprocess.Popen[bytes]) -> Script[None]:
    async def script(channel: RecordChannel) -> None:
        assert isinstance(await recv_message(channel), Offer)
        await send_message(channel, Accept())
        await _say_wait_until_exit(channel, process)  # "syncing" forever, never "done"

    return script


async def test_a_receiver_kept_waiting_by_keepalives_alone_gives_up(
    relay: RelayProcess, tmp_path: Path
) -> None:
    """Issue 10 item 9, "a timeout on every wait": ``wait`` forever is not a way around it."""
    env = env_for(
        relay.rendezvous, DELSHARE_PEER_TIMEOUT=BUSY_TIMEOUT, DELSHARE_RECONNECT_TIMEOUT=RECONNECT
    )
    out = tmp_path / "out"
    out.mkdir()
    code = "630-guitar-orbit"
    argv = ["receive", code, "-o", str(out), "--yes"]
    stderr = await _gives_up(relay, env, argv, code, "sender", _busy_sender)
    assert "the peer said it was busy for over 6 s while waiting for the sender's offer" in stderr
    assert listing(out) == []


@pytest.mark.parametrize(
    "script", [_busy_at_the_offer, _busy_instead_of_done], ids=["accept", "done"]
)
async def test_a_sender_kept_waiting_by_keepalives_alone_gives_up(
    relay: RelayProcess, tmp_path: Path, script: Callable[[subprocess.Popen[bytes]], Script[None]]
) -> None:
    small = tmp_path / "small.txt"
    small.write_text("fits in any socket buffer\n")
    env = env_for(
        relay.rendezvous, DELSHARE_PEER_TIMEOUT=BUSY_TIMEOUT, DELSHARE_RECONNECT_TIMEOUT=RECONNECT
    )
    code = f"{631 + (script is _busy_instead_of_done)}-guitar-orbit"
    argv = ["send", str(small), "--code", code]
    stderr = await _gives_up(relay, env, argv, code, "receiver", script)
    waited = "confirmation" if script is _busy_instead_of_done else "answer to the offer"
    assert f"the peer said it was busy for over 6 s while waiting for the receiver's {waited}" in (
        stderr
    )
