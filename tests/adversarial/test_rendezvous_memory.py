"""Issue 10 item 2: mailboxes filled to their size limit must not grow the server without bound.

The issue filled 1,000 mailboxes to their 256 KiB limit and took the server from 102 to 496 MB.
Now all mailboxes together hold at most ``--rendezvous-max-total-bytes``; beyond it the server
refuses ("memory limit"). The attack comes from many addresses, so that only the total bound,
not the per-address ones, can stop it; the peak RSS (VmHWM) of the real relay process is
measured against that bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.adversarial.conftest import scaled
from tests.adversarial.rendezvous import (
    WAIT,
    Rendezvous,
    add_frame,
    allocate_frame,
    raw,
    real_pair,
    rendezvous,
    reply,
    sources,
)

MESSAGE = 16 * 1024  # --rendezvous-max-message-size (default)
PER_MAILBOX = 4  # messages of MESSAGE bytes: the default 64 KiB per mailbox
PER_ADDRESS = 10  # mailboxes per attacking address (under every per-address limit)
MIB = 1024 * 1024


async def _fill(url: str, source: str) -> tuple[ClientConnection | None, str]:
    """A mailbox from ``source`` filled to its byte limit: (connection, 'ok' or the refusal)."""
    try:
        connection = await raw(url, source)
    except OSError as exc:
        return None, f"connect failed: {exc}"
    with contextlib.suppress(ConnectionClosed):
        await connection.send(allocate_frame())
        for _ in range(PER_MAILBOX):
            await connection.send(add_frame("x" * MESSAGE))
    first = await reply(connection, WAIT)
    if first is None or first.get("type") != "allocated":
        return connection, str(first and first.get("reason"))
    refusal = await reply(connection, 0.5)
    return connection, "ok" if refusal is None else str(refusal.get("reason"))


async def test_full_mailboxes_stay_within_the_memory_bound(tmp_path: Path) -> None:
    bound = scaled(4, 32) * MIB  # quick: a small bound; long: the default
    mailboxes = 2 * bound // (MESSAGE * PER_MAILBOX)  # try to hold twice the bound
    addresses = sources(mailboxes // PER_ADDRESS + 1)
    flags = ("--rendezvous-max-total-bytes", str(bound))
    with rendezvous(tmp_path, *flags) as server:
        before = server.rss_kib()
        results = await asyncio.gather(
            *(_fill(server.url, addresses[i // PER_ADDRESS]) for i in range(mailboxes))
        )
        try:
            outcomes = [outcome for _, outcome in results]
            full = outcomes.count("ok")
            assert any("memory limit" in o for o in outcomes), outcomes[-3:]
            assert full * MESSAGE * PER_MAILBOX <= bound
            assert server.metric("delshare_rendezvous_refusals_total", 'reason="memory"') > 0
            peak = server.rss_kib(field="VmHWM")
            growth = (peak - before) * 1024
            # The bound, plus what the connections themselves cost (buffers, TLS-less sockets).
            assert growth <= 3 * bound + 40 * MIB, (growth // MIB, bound // MIB)
            print(f"\nmailboxes tried {mailboxes}, full {full}, RSS {before // 1024} -> "
                  f"peak {peak // 1024} MiB, bound {bound // MIB} MiB")  # fmt: skip
        finally:
            await asyncio.gather(
                *(c.close() for c, _ in results if c is not None), return_exceptions=True
            )
        _, seconds = real_pair(tmp_path, server.url)  # once the attacker left, pairing works
        begin = time.monotonic()
        settled = await _settled_rss(server, before + bound // 1024 + 16 * 1024)
        print(f"real pair after {seconds:.1f} s; RSS back to {settled // 1024} MiB "
              f"in {time.monotonic() - begin:.1f} s")  # fmt: skip
        assert settled <= before + bound // 1024 + 16 * 1024, (settled // 1024, before // 1024)
        assert server.alive()


async def _settled_rss(server: Rendezvous, target_kib: int, wait: float = 15.0) -> int:
    """The relay's RSS once it is at most ``target_kib``, or after ``wait`` s (bounded poll)."""
    deadline = time.monotonic() + wait
    rss = server.rss_kib()
    while rss > target_kib and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        rss = server.rss_kib()
    return rss
