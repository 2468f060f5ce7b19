"""Issue 10 item 6: text from a hostile peer never reaches the terminal raw.

The real ``delshare send`` / ``delshare receive`` run as subprocesses; the other side is a hostile
peer that pairs and connects like the real one (:mod:`tests.adversarial.hostile_peer`) and sends a
refusal reason or a file name built to take over the terminal: an OSC window title, a clear
screen, a cursor move and a forged "transfer complete" line, or a bidi override (U+202E) that
shows ``evil\\u202etxt.exe`` as ``evilexe.txt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from delshare.errors import PairingError
from delshare.link.records import RecordChannel
from delshare.pairing import pair
from delshare.transfer.manifest import Entry, Manifest
from delshare.transfer.protocol import (
    ErrorMessage,
    Message,
    Offer,
    Reject,
    recv_message,
    send_message,
)
from tests.adversarial.conftest import scaled
from tests.adversarial.hostile_peer import as_peer, finish_cli, listing, start_cli
from tests.app.harness import RelayProcess, env_for

FORGED = "transfer complete, all files verified"
HOSTILE_REASON = (
    "\x1b]0;pwned\x07"  # OSC: set the window title
    "\x1b[2J\x1b[H"  # clear the screen, cursor home
    f"\r\n{FORGED}\n"  # a fake last line
    "\x9b31m"  # 8-bit CSI
    "\u202e"  # bidi override
)
RAW_BYTES = [b"\x1b", b"\x07", b"\r", "\u202e".encode(), "\x9b".encode()]
EVIL = "evil\u202etxt.exe"


def _assert_no_raw_control(output: bytes) -> None:
    for raw in RAW_BYTES:
        assert raw not in output, (raw, output)
    for line in output.decode().splitlines():
        assert not line.startswith(FORGED), output


async def _refuse_with_hostile_reason(channel: RecordChannel) -> Message:
    offer = await recv_message(channel)
    await send_message(channel, Reject(HOSTILE_REASON))
    return offer


async def _abort_with_hostile_reason(channel: RecordChannel) -> None:
    await send_message(channel, ErrorMessage(HOSTILE_REASON))


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
async def test_a_hostile_receivers_refusal_reason_is_escaped_on_the_senders_terminal(
    relay: RelayProcess, tmp_path: Path, json_output: bool
) -> None:
    small = tmp_path / "small.txt"
    small.write_text("hello\n")
    for attempt in range(scaled(1, 5)):
        code = f"{300 + attempt + 10 * json_output}-guitar-orbit"
        flags = ["--json"] if json_output else []
        sender = start_cli(["send", str(small), "--code", code, *flags], env_for(relay.rendezvous))
        try:
            offer = await asyncio.wait_for(
                as_peer(relay.rendezvous, code, "receiver", _refuse_with_hostile_reason), 60
            )
        finally:
            returncode, out, err = await asyncio.to_thread(finish_cli, sender)
        assert isinstance(offer, Offer)
        assert returncode == 3, (out, err)
        _assert_no_raw_control(out + err)
        if json_output:
            error = json.loads(out.decode().splitlines()[-1])
            assert error["event"] == "error"
            assert HOSTILE_REASON in error["message"]  # the raw text, JSON-escaped on the wire
        else:
            assert err.decode().startswith("error: refused by peer: \\x1b]0;pwned\\x07\\x1b[2J")
            assert len(err.decode().splitlines()) == 1, err


async def test_a_hostile_senders_error_reason_is_escaped_on_the_receivers_terminal(
    relay: RelayProcess, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code = "320-guitar-orbit"
    receiver = start_cli(["receive", code, "-o", str(out), "--yes"], env_for(relay.rendezvous))
    try:
        await asyncio.wait_for(
            as_peer(relay.rendezvous, code, "sender", _abort_with_hostile_reason), 60
        )
    finally:
        returncode, stdout, stderr = await asyncio.to_thread(finish_cli, receiver)
    assert returncode == 3, (stdout, stderr)
    _assert_no_raw_control(stdout + stderr)
    assert "\\x1b]0;pwned" in stderr.decode()
    assert listing(out) == []


async def _offer_evil_name(channel: RecordChannel) -> Message:
    await send_message(channel, Offer(Manifest((Entry(EVIL, "file", 5),))))
    return await recv_message(channel)


async def test_a_bidi_name_is_refused_and_shown_escaped_never_written(
    relay: RelayProcess, tmp_path: Path
) -> None:
    """Old behaviour: shown as ``eviltxt.exe``, written to disk as ``evil\\u202etxt.exe``."""
    out = tmp_path / "out"
    out.mkdir()
    code = "321-guitar-orbit"
    receiver = start_cli(["receive", code, "-o", str(out), "--yes"], env_for(relay.rendezvous))
    try:
        reply = await asyncio.wait_for(
            as_peer(relay.rendezvous, code, "sender", _offer_evil_name), 60
        )
    finally:
        returncode, stdout, stderr = await asyncio.to_thread(finish_cli, receiver)
    assert isinstance(reply, Reject), reply  # the sender is told why
    assert "evil\\u202etxt.exe" in reply.reason
    assert returncode == 1, (stdout, stderr)
    _assert_no_raw_control(stdout + stderr)
    assert "evil\\u202etxt.exe" in stderr.decode()
    assert listing(out) == []


def test_the_real_sender_refuses_a_bidi_name_up_front_and_shows_it_escaped(
    relay: RelayProcess, tmp_path: Path
) -> None:
    evil = tmp_path / EVIL
    evil.write_text("MZ")
    sender = start_cli(["send", str(evil), "--code", "322-guitar-orbit"], env_for(relay.rendezvous))
    returncode, stdout, stderr = finish_cli(sender)
    assert returncode == 2, (stdout, stderr)
    _assert_no_raw_control(stdout + stderr)
    assert "evil\\u202etxt.exe" in stderr.decode()
    assert b"code:" not in stdout  # refused before a code is spent


async def test_a_malformed_text_is_refused_by_name(relay: RelayProcess, tmp_path: Path) -> None:
    """A sender whose ``text`` is no string is refused through delshare.fields, by field name."""
    out = tmp_path / "out"
    out.mkdir()
    code = "321-guitar-orbit"
    receiver = start_cli(["receive", code, "-o", str(out), "--yes"], env_for(relay.rendezvous))
    try:
        async with await pair(relay.rendezvous, code, "sender", timeout=30) as paired:
            await asyncio.wait_for(paired.receive(), 30)  # the receiver's candidates
            await paired.send({"t": "text", "v": 2, "text": ["not", "a", "string"]})
            with contextlib.suppress(PairingError):
                await paired.receive(timeout=30)  # until the receiver gives up and leaves
    finally:
        returncode, stdout, stderr = await asyncio.to_thread(finish_cli, receiver)
    assert returncode == 1, (stdout, stderr)
    assert "the sender's text: 'text' must be a string" in stderr.decode(), stderr
    assert listing(out) == []
