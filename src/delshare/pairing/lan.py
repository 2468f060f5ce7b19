"""Zero-config LAN discovery: find a sender's own rendezvous service by UDP multicast.

With no rendezvous configured, the sender serves the rendezvous itself and announces
``{"del": 1, "nameplate": N, "port": P}`` to an administratively scoped IPv4 group (RFC 2365)
every ``ANNOUNCE_INTERVAL``; the receiver listens for its code's nameplate and dials
``ws://<announcer address>:P``. Only the nameplate is announced, never the secret words: the
PAKE still authenticates the peer, so a spoofed announcement only causes a failed pairing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
from dataclasses import dataclass

from delshare.address import format_address
from delshare.errors import PairingError
from delshare.fields import Fields

GROUP = "239.255.67.76"  # RFC 2365 organisation-local scope
PORT = 47689
ANNOUNCE_INTERVAL = 0.25
MAX_ANNOUNCEMENT = 256
VERSION = 1
_NAMEPLATE = re.compile(r"[0-9]{1,8}")  # decimal digits (ASCII: str.isdigit takes others)


@dataclass(frozen=True)
class Announcement:
    """One sender's offer of a rendezvous service for one nameplate."""

    nameplate: str
    port: int

    def encode(self) -> bytes:
        """The datagram sent to the group."""
        body = {"del": VERSION, "nameplate": self.nameplate, "port": self.port}
        return json.dumps(body, separators=(",", ":")).encode()


class _NotAnnouncement(Exception):
    """A datagram on the group that is not a valid announcement (it is ignored)."""


def parse_announcement(data: bytes) -> Announcement | None:
    """Decode a datagram; anything that is not a valid announcement gives None."""
    if len(data) > MAX_ANNOUNCEMENT:
        return None
    try:
        fields = Fields.load(data, _NotAnnouncement, "announcement")
        fields.one_of("del", (VERSION,))
        nameplate = fields.text("nameplate", max_len=8, matching=_NAMEPLATE)
        return Announcement(nameplate, fields.integer("port", 1, 65535))
    except _NotAnnouncement:
        return None


async def announce(announcement: Announcement, stop: asyncio.Event, ttl: int = 1) -> None:
    """Send ``announcement`` to the group until ``stop`` is set (TTL 1: this link only)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    sock.setblocking(False)
    data = announcement.encode()
    try:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                sock.sendto(data, (GROUP, PORT))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ANNOUNCE_INTERVAL)
    finally:
        sock.close()


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, nameplate: str, found: asyncio.Future[str]) -> None:
        self._nameplate = nameplate
        self._found = found

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        offer = parse_announcement(data)
        if offer and offer.nameplate == self._nameplate and not self._found.done():
            self._found.set_result(f"ws://{format_address(addr[0], offer.port)}")


def _group_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with contextlib.suppress(AttributeError, OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("", PORT))
    membership = struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton("0.0.0.0"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setblocking(False)
    return sock


async def discover(nameplate: str, timeout: float) -> str:
    """Wait for a sender announcing ``nameplate``; return its rendezvous URL."""
    loop = asyncio.get_running_loop()
    found: asyncio.Future[str] = loop.create_future()
    try:
        sock = _group_socket()
    except OSError as exc:
        raise PairingError(f"LAN discovery unavailable: {exc.strerror or exc}") from exc
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Listener(nameplate, found), sock=sock
    )
    try:
        return await asyncio.wait_for(found, timeout)
    except TimeoutError:
        raise PairingError(
            f"no sender for code {nameplate}-… found on the local network in {timeout:.0f} s"
        ) from None
    finally:
        transport.close()
