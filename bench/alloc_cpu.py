"""Relay CPU per TCP allocation, measured in-process, robust on a loaded machine.

Run: ``python -m bench.alloc_cpu [--allocs N] [--log] [--profile]``. A relay runs in this
process on uvloop (``start_relay``); the client runs in a separate process (no shared GIL) and
does what case 3 does: a fresh TCP control connection, Allocate (401, then signed), Refresh 0,
close, 4 allocations in flight. Only this thread's CPU clock (``time.thread_time``) is read, from
the client's first timed allocation to its last, so other processes on the machine do not count.

``--log`` logs at INFO to a file as ``delshare relay --log-file`` does (two lines per
allocation); without it, logging is at WARNING. ``--profile`` prints a cProfile of the relay
(on the thread CPU clock) sorted by ``--sort``.

``--workers N`` measures ``delshare relay --workers N`` instead, as a subprocess (the bench's
own start-up: INFO lines to its log, generous quotas): the CPU of its whole process tree
(parent and workers, from /proc, 10 ms ticks: use a few thousand allocations) per allocation.
For an A/B of two trees, put the other ``src`` first on ``PYTHONPATH`` (the relay, the client
and the in-process relay all honour it).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from delshare.aio.server import RelayConfig, start_relay
from delshare.turn.auth import AuthConfig
from delshare.turn.server_config import ServerConfig

HOST = "127.0.0.1"
CLIENT = r"""
import asyncio, sys, time
from delshare.aio.client import connect_turn
uri, count, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
async def one():
    client = await connect_turn(uri, user, password)
    try:
        await client.allocate_tcp()
    finally:
        await client.close()
async def main():
    await one()
    print("ready", flush=True)
    sys.stdin.readline()
    gate = asyncio.Semaphore(4)
    async def limited():
        async with gate:
            await one()
    start = time.perf_counter()
    await asyncio.gather(*(limited() for _ in range(count)))
    print(f"{count / (time.perf_counter() - start):.0f}", flush=True)
asyncio.run(main())
"""


async def measure(count: int, profile: cProfile.Profile | None) -> tuple[float, str]:
    """(relay CPU ms per allocation, the client's allocations per second)."""
    # no request rate limit, as the bench runs `delshare relay` (--max-request-rate 0)
    server = ServerConfig(auth=AuthConfig("alloc.bench", {"u": "p"}), request_rate=0)
    relay = await start_relay(RelayConfig(server=server, listen=((HOST, 0),)))
    try:
        uri = f"turn:{HOST}:{relay.turn_port}?transport=tcp"
        if profile is None:
            spent, rate = await _drive(uri, count, "u", "p", time.thread_time)
        else:
            spent, rate = await _drive(
                uri, count, "u", "p", time.thread_time, profile.enable, profile.disable
            )
    finally:
        await relay.close()
    return spent / count * 1e3, rate


async def _drive(
    uri: str,
    count: int,
    user: str,
    password: str,
    cpu: Callable[[], float],
    start: Callable[[], None] = lambda: None,
    stop: Callable[[], None] = lambda: None,
) -> tuple[float, str]:
    """Run the client; (``cpu()`` seconds spent meanwhile, the client's allocations/s)."""
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, uri, str(count), user, password,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert client.stdin is not None and client.stdout is not None
    try:
        await asyncio.wait_for(client.stdout.readline(), 60)  # "ready"
        start()
        before = cpu()
        client.stdin.write(b"go\n")
        rate = (await asyncio.wait_for(client.stdout.readline(), 600)).decode().strip()
        spent = cpu() - before
        stop()
    finally:
        if client.returncode is None:
            client.kill()
        await client.wait()
    return spent, rate


async def measure_workers(count: int, workers: int) -> tuple[float, str]:
    """(``delshare relay --workers N``'s CPU ms per allocation, all processes; the rate)."""
    from bench.servers import PASSWORD, USER, start_delshare_relay
    from bench.workers_case import _workers_ready

    server = start_delshare_relay(f"alloc-cpu-w{workers}", extra=["--workers", str(workers)])
    try:
        _workers_ready(server, workers)
        uri = f"turn:{HOST}:{server.port}?transport=tcp"
        spent, rate = await _drive(uri, count, USER, PASSWORD, server.child.cpu)
    finally:
        server.stop()
    return spent / count * 1e3, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--allocs", type=int, default=1000)
    parser.add_argument("--log", action="store_true", help="log at INFO to a file")
    parser.add_argument("--profile", action="store_true", help="cProfile the relay")
    parser.add_argument("--sort", default="tottime", help="cProfile sort key")
    parser.add_argument("--workers", type=int, default=0, help="delshare relay --workers N")
    args = parser.parse_args()
    if args.workers:
        cpu_ms, rate = asyncio.run(measure_workers(args.allocs, args.workers))
        print(f"{args.allocs} allocations: relay CPU {cpu_ms:.3f} ms each; client {rate}/s"
              f" (--workers {args.workers}, all processes)")  # fmt: skip
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.log:
            from delshare.cli.logsetup import setup_logging

            setup_logging(logging.INFO, "text", str(Path(tmp) / "relay.log"))
        else:
            logging.getLogger().setLevel(logging.WARNING)
        profile = cProfile.Profile(time.thread_time) if args.profile else None
        import uvloop

        cpu_ms, rate = uvloop.run(measure(args.allocs, profile))
    print(f"{args.allocs} allocations: relay CPU {cpu_ms:.3f} ms each; client {rate}/s")
    if profile is not None:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(40)


if __name__ == "__main__":
    main()
