"""LAN discovery: announcements parse strictly; a sender is found by multicast in a namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delshare.pairing.lan import Announcement, parse_announcement


@given(st.from_regex(r"[0-9]{1,8}", fullmatch=True), st.integers(1, 65535))
def test_announcement_round_trip(nameplate: str, port: int) -> None:
    offer = Announcement(nameplate, port)
    assert parse_announcement(offer.encode()) == offer


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b'{"del":2,"nameplate":"7","port":1}',
        b'{"del":1,"nameplate":"seven","port":1}',
        b'{"del":1,"nameplate":"7","port":0}',
        b'{"del":1,"nameplate":"7","port":"80"}',
        b'{"del":1,"nameplate":"7","port":80,"pad":"' + b"x" * 300 + b'"}',
        b"[1,2]",
        # through delshare.fields: bools are not numbers, digits are ASCII, nesting is bounded
        b'{"del":true,"nameplate":"7","port":80}',
        b'{"del":1,"nameplate":"7","port":true}',
        '{"del":1,"nameplate":"\u0661\u0662","port":80}'.encode(),
        '{"del":1,"nameplate":"\u00b2","port":80}'.encode(),
        b'{"del":1,"nameplate":"123456789","port":80}',
        b'{"del":1,"port":80}',
        b"[" * 255,
    ],
)
def test_bad_announcements_are_ignored(data: bytes) -> None:
    assert parse_announcement(data) is None


SCRIPT = """
import asyncio, sys
from delshare.pairing.lan import Announcement, announce, discover

async def main() -> None:
    stop = asyncio.Event()
    sender = asyncio.create_task(announce(Announcement("42", 4242), stop))
    decoy = asyncio.create_task(announce(Announcement("41", 4141), stop))
    try:
        print(await discover("42", timeout=10.0))
    finally:
        stop.set()
        await asyncio.gather(sender, decoy)

asyncio.run(main())
"""


@pytest.mark.netns
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)
def test_discovery_in_a_loopback_only_namespace() -> None:
    """Multicast only inside a namespace this test makes (workplace network rules)."""
    name = f"del-lan-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "set", "lo", "multicast", "on"],
            ["ip", "route", "add", "224.0.0.0/4", "dev", "lo", "src", "127.0.0.1"],
        ):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
        out = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-c", SCRIPT],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "ws://127.0.0.1:4242"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
