"""Issue 11 defect 6: a race that ends while attempts are still scheduled leaves no coroutine
unawaited (``RuntimeWarning: coroutine '_Racer._dial' was never awaited`` reached the screen).

The race is run many times, ending at every stage: before any attempt has started (a zero
total timeout), and as soon as a link wins while relayed attempts are being spawned. Every
warning is recorded and the garbage is collected after each run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import warnings

from delshare.link.candidates import Candidate, host_candidates, start_listener
from delshare.link.race import LocalEndpoints, NoPathError, RaceConfig, _Racer, race
from tests.support.ports import free_port

RUNS = 40


def _unawaited(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "never awaited" in str(w.message)]


async def _race_ending_at_once(dead: list[Candidate]) -> None:
    """The race ends in the very step that scheduled its attempts (a winner arriving in the
    same loop iteration as the relayed attempts' spawn): none of them ever starts."""
    config = RaceConfig(os.urandom(32), "sender", relay_delay=0.0, total_timeout=0.0)
    racer = _Racer(config, LocalEndpoints(), dead)
    racer.start()
    await racer.finish(None)
    with contextlib.suppress(NoPathError):
        await race(config, LocalEndpoints(), dead)


async def _race_won_while_spawning(dead: list[Candidate]) -> None:
    key = os.urandom(32)
    a, b = await start_listener(), await start_listener()
    try:
        to_b = host_candidates(["127.0.0.1"], b.port, ipv6=b.ipv6)
        to_a = host_candidates(["127.0.0.1"], a.port, ipv6=a.ipv6)
        relayed = [Candidate("relay", c.host, c.port, f"{c.host}:{c.port}") for c in dead]
        sender = RaceConfig(key, "sender", relay_delay=0.0, total_timeout=10.0)
        receiver = RaceConfig(key, "receiver", relay_delay=0.0, total_timeout=10.0)
        won = await asyncio.gather(
            race(sender, LocalEndpoints(a), [*to_b, *dead, *relayed]),
            race(receiver, LocalEndpoints(b), [*to_a, *dead, *relayed]),
        )
        for link in won:
            await link.channel.close()
    finally:
        a.close()
        b.close()


async def test_no_coroutine_is_left_unawaited_when_a_race_ends() -> None:
    dead = [Candidate("host", "127.0.0.1", free_port("tcp")) for _ in range(4)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(RUNS):
            await _race_ending_at_once(dead)
            gc.collect()
        for _ in range(RUNS // 4):
            await _race_won_while_spawning(dead)
            gc.collect()
    assert _unawaited(caught) == []
