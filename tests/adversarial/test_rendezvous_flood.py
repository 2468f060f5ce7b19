"""Issue 10 item 2: a flood of open/message cycles from one client, and idle connections.

The issue measured 816 open/message cycles per second from one client, never refused, and idle
WebSocket connections without a mailbox living ~10 minutes. Each test runs a real
``delshare relay --no-turn``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.adversarial.conftest import scaled
from tests.adversarial.rendezvous import (
    ATTACKER,
    WAIT,
    add_frame,
    allocate_frame,
    raw,
    real_pair,
    rendezvous,
    reply,
)

IDLE = 1.0  # --rendezvous-idle-timeout in these tests


async def _cycle(url: str) -> str:
    """One hostile cycle: connect, ask for a mailbox, put a message, leave. 'ok' or the refusal."""
    try:
        connection = await raw(url, ATTACKER)
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        return f"connect failed: {exc}"
    async with connection:
        with contextlib.suppress(ConnectionClosed):
            await connection.send(allocate_frame())
            await connection.send(add_frame("x" * 64))
        answer = await reply(connection, WAIT)
        if answer is None or answer.get("type") != "allocated":
            return str(answer and answer.get("reason"))
        # The add was sent before the allocation came back: a refusal of it comes next.
        late = await reply(connection, 0.05)
        return "ok" if late is None else str(late.get("reason"))


async def test_open_message_cycles_from_one_client_are_refused(tmp_path: Path) -> None:
    cycles = scaled(250, 4000)
    with rendezvous(tmp_path) as server:
        begin = time.monotonic()
        outcomes = [await _cycle(server.url) for _ in range(cycles)]
        elapsed = time.monotonic() - begin
        refused = [o for o in outcomes if o != "ok"]
        rate_refusals = [o for o in refused if "too many requests" in o]
        # Default: 20 tokens per second, bursts of 100; a cycle costs 3 (connect, allocate, add).
        assert rate_refusals, outcomes[-3:]
        assert outcomes.count("ok") <= (100 + 20 * elapsed) / 3 + 1, (outcomes.count("ok"), elapsed)
        assert server.metric("delshare_rendezvous_refusals_total", 'reason="rate"') > 0
        _, seconds = real_pair(tmp_path, server.url)  # another address pairs meanwhile
        peak = server.rss_kib("VmHWM") // 1024
        print(f"\n{cycles} cycles in {elapsed:.1f} s ({cycles / elapsed:.0f}/s): "
              f"{outcomes.count('ok')} served, {len(rate_refusals)} refused for rate; "
              f"real pair {seconds:.1f} s; peak RSS {peak} MiB")  # fmt: skip
        assert server.alive()


async def test_idle_connections_without_a_mailbox_are_closed(tmp_path: Path) -> None:
    idle = scaled(30, 40)  # at most --rendezvous-max-connections-per-ip (40) from one address
    flags = ("--rendezvous-idle-timeout", str(IDLE))
    with rendezvous(tmp_path, *flags) as server:
        connections = await asyncio.gather(*(raw(server.url) for _ in range(idle)))
        half_open = [socket.create_connection(("127.0.0.1", server.relay.rendezvous_port or 0))]
        begin = time.monotonic()
        try:
            answers = await asyncio.gather(*(reply(c, WAIT) for c in connections))
            assert all(a is not None and "idle" in str(a.get("reason")) for a in answers), answers
            for connection in connections:
                await asyncio.wait_for(connection.wait_closed(), WAIT)
            half_open[0].settimeout(WAIT)
            assert half_open[0].recv(1024) == b""  # a connection that never said hello, too
            assert server.metric("delshare_rendezvous_connections") == 0
            assert server.metric("delshare_rendezvous_refusals_total", 'reason="idle"') == idle
            print(f"\n{idle} idle + 1 half-open connections closed in "
                  f"{time.monotonic() - begin:.1f} s (idle timeout {IDLE:g} s)")  # fmt: skip
        finally:
            for sock in half_open:
                sock.close()


async def test_silent_tcp_connections_from_one_address_are_capped(tmp_path: Path) -> None:
    """TCP connections that never start the WebSocket handshake would each hold a descriptor
    until the handshake timeout; one address may hold at most twice its connection limit."""
    count = scaled(200, 2000)
    cap = 2 * 40  # twice --rendezvous-max-connections-per-ip (the default)
    with rendezvous(tmp_path) as server:
        port = server.relay.rendezvous_port or 0
        silent: list[socket.socket] = []
        try:
            for _ in range(count):
                sock = socket.socket()
                sock.bind((ATTACKER, 0))
                sock.connect(("127.0.0.1", port))
                silent.append(sock)
            deadline = time.monotonic() + 5  # bounded, well within the 10 s idle timeout
            kept = [s for s in silent if _still_open(s)]
            while len(kept) > cap and time.monotonic() < deadline:  # until the server saw all
                await asyncio.sleep(0.1)
                kept = [s for s in silent if _still_open(s)]
            assert 0 < len(kept) <= cap, len(kept)  # some kept: the cap closed them, not a timeout
            _, seconds = real_pair(tmp_path, server.url)  # another address is served meanwhile
            print(f"\n{count} silent connections from one address: {len(kept)} kept open; "
                  f"real pair {seconds:.1f} s")  # fmt: skip
        finally:
            for sock in silent:
                sock.close()
        assert server.alive()


def _still_open(sock: socket.socket) -> bool:
    """Whether the server has not closed ``sock`` (nothing to read, no EOF, no reset)."""
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return True
    except OSError:
        return False
