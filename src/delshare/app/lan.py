"""Zero-config LAN mode: no rendezvous server configured, so the sender runs its own.

The sender serves the rendezvous on all its IPv4 addresses and announces the code's nameplate
(never the secret words) by multicast (:mod:`delshare.pairing.lan`) until the receiver paired;
the receiver listens for that nameplate and dials the announcer. The PAKE still authenticates
the peer: a spoofed announcement only leads to a failed pairing. Nothing of it is imported
until LAN mode is used.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from delshare.errors import PairingError

__all__ = ["check_lan_route", "find_lan_rendezvous", "lan_rendezvous"]

NO_ROUTE_HINT = (
    "use a rendezvous server on both sides (--rendezvous ws://HOST:PORT, e.g. one run by "
    "`delshare relay`), or connect this device to a network"
)


def check_lan_route() -> None:
    """PairingError unless this host has a route for the announcements' multicast group.

    A UDP ``connect`` only looks the route up (no packet leaves): without one, announcing would
    fail silently for as long as the sender waits.
    """
    from delshare.pairing.lan import GROUP, PORT  # LAN mode only: not at start-up

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((GROUP, PORT))
        except OSError as exc:
            raise PairingError(
                f"no rendezvous server set and no multicast route for LAN mode "
                f"({exc.strerror or exc}): {NO_ROUTE_HINT}"
            ) from None


@asynccontextmanager
async def lan_rendezvous(nameplate: str) -> AsyncIterator[str]:
    """Serve a rendezvous and announce ``nameplate`` while inside; yields the local URL."""
    from delshare.pairing.lan import Announcement, announce  # LAN mode only: not at start-up
    from delshare.pairing.server import serve_rendezvous

    server = await serve_rendezvous("0.0.0.0", 0)
    stop = asyncio.Event()
    announcer = asyncio.create_task(announce(Announcement(nameplate, server.port), stop))
    try:
        yield f"ws://127.0.0.1:{server.port}"
    finally:
        stop.set()
        await announcer
        server.close()
        await server.wait_closed()


async def find_lan_rendezvous(nameplate: str, timeout: float) -> str:
    """The rendezvous URL of the sender announcing ``nameplate`` on this network."""
    from delshare.pairing.lan import discover

    try:
        return await discover(nameplate, timeout)
    except PairingError as exc:
        if "unavailable" in str(exc):
            raise PairingError(
                f"no rendezvous server set and {exc}: pass the --rendezvous URL the sender "
                "uses (or set DELSHARE_RENDEZVOUS)"
            ) from exc
        raise PairingError(
            f"{exc}: check the code; if the sender uses a rendezvous server, pass the same "
            "--rendezvous URL (or DELSHARE_RENDEZVOUS) here"
        ) from exc
