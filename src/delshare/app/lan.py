"""Zero-config LAN mode: no rendezvous server configured, so the sender runs its own.

The sender serves the rendezvous on all its IPv4 addresses and announces the code's nameplate
(never the secret words) by multicast (:mod:`delshare.pairing.lan`) until the receiver paired;
the receiver listens for that nameplate and dials the announcer. The PAKE still authenticates
the peer: a spoofed announcement only leads to a failed pairing. Nothing of it is imported
until LAN mode is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["find_lan_rendezvous", "lan_rendezvous"]


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

    return await discover(nameplate, timeout)
