"""Issue 10 item 2: one unauthenticated client must not deny pairing to everyone else.

Each test runs a real ``delshare relay --no-turn`` and attacks it from 127.0.0.2 (or a few
addresses) with raw WebSocket clients, then checks that a real ``delshare send`` /
``delshare receive`` pair on 127.0.0.1 still pairs and transfers.
"""

from __future__ import annotations

from pathlib import Path

from tests.adversarial.conftest import scaled
from tests.adversarial.rendezvous import (
    ATTACKER,
    allocate_frame,
    hold_mailboxes,
    holding,
    open_frame,
    real_pair,
    rendezvous,
)

PER_IP = 20  # --rendezvous-max-mailboxes-per-ip (the default)


async def test_one_client_cannot_open_all_mailboxes(tmp_path: Path) -> None:
    """The issue's attacker opened all 1,000 mailboxes in 0.7 s; then every real send failed."""
    total = scaled(200, 1000)  # of the default 1,000
    with rendezvous(tmp_path) as server:
        requests = [allocate_frame() for _ in range(total)]
        async with holding(await hold_mailboxes(server.url, requests, [ATTACKER])) as held:
            assert len(held.connections) <= PER_IP, held.refusals[:3]
            assert any("too many" in reason for reason in held.refusals), held.refusals[:3]
            assert server.metric("delshare_rendezvous_mailboxes") <= PER_IP
            assert (
                server.metric("delshare_rendezvous_refusals_total", 'reason="ip_mailboxes"')
                + (server.metric("delshare_rendezvous_refusals_total", 'reason="ip_connections"'))
                > 0
            )
            _, seconds = real_pair(tmp_path, server.url)  # while the attacker holds what it got
            print(f"\nallocate x{total} from one address: held {len(held.connections)}, "
                  f"refused {len(held.refusals)}; real pair {seconds:.1f} s; "
                  f"peak RSS {server.rss_kib('VmHWM') // 1024} MiB")  # fmt: skip
        assert server.alive()


async def test_squatted_code_numbers_do_not_stop_a_real_pair(tmp_path: Path) -> None:
    """The issue's attacker held all 999 numbers; the real sender then joined its mailbox and
    the real receiver got "mailbox full". Now numbers are allocated by the server and one
    address holds at most PER_IP seats."""
    numbers = scaled(300, 999)
    with rendezvous(tmp_path) as server:
        # Older clients' open (no side) was the attack; a sender's seat is the same squat.
        requests = [open_frame(str(n), None if n % 2 else "sender") for n in range(1, numbers + 1)]
        async with holding(await hold_mailboxes(server.url, requests, [ATTACKER])) as held:
            assert len(held.connections) <= PER_IP
            for _ in range(3):  # several real pairs, each with a server-allocated number
                _, seconds = real_pair(tmp_path, server.url)
            print(f"\nsquat x{numbers} numbers from one address: held {len(held.connections)}, "
                  f"refused {len(held.refusals)}; 3 real pairs paired (last {seconds:.1f} s); "
                  f"peak RSS {server.rss_kib('VmHWM') // 1024} MiB")  # fmt: skip
        assert server.alive()


async def test_a_squatter_on_many_addresses_still_cannot_take_a_held_number(
    tmp_path: Path,
) -> None:
    """A sender's number, once held, is refused to every other sender (from any address)."""
    with rendezvous(tmp_path) as server:
        first = await hold_mailboxes(server.url, [open_frame("42", "sender")], [ATTACKER])
        async with holding(first):
            assert len(first.connections) == 1
            others = [open_frame("42", "sender")] * 5
            addresses = [f"127.0.0.{n}" for n in range(3, 8)]
            async with holding(await hold_mailboxes(server.url, others, addresses)) as held:
                assert held.connections == []
                assert all("in use by another sender" in r for r in held.refusals), held.refusals
