"""Throughput of ``delshare.aio.pipe.bridge`` against a plain loopback TCP stream, in one run.

Sender and receiver run in their own processes; this process only relays. Topology:

    plain:   sender ──TCP──▶ receiver
    bridged: sender ──TCP──▶ [bridge in this process] ──TCP──▶ receiver

Throughput = bytes / (receiver's EOF time - sender's first send), both on CLOCK_MONOTONIC.

    python bench/pipe_bench.py                      # 1 GiB, splice path, 3 trials each
    python bench/pipe_bench.py --paths splice copy stream --size-mib 256 --uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import socket
import statistics
import time
from collections.abc import Callable, Coroutine
from multiprocessing.queues import Queue
from typing import Any

from delshare.aio import pipe

CHUNK = 1 << 20


def run_receiver(ports: Queue[Any], results: Queue[Any]) -> None:
    """Accept one connection, read to EOF, report (bytes, monotonic time at EOF)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        ports.put(server.getsockname()[1])
        conn, _ = server.accept()
    buf = bytearray(CHUNK)
    total = 0
    with conn:
        while n := conn.recv_into(buf):
            total += n
    results.put(("received", total, time.monotonic()))


def run_sender(port: int, size: int, results: Queue[Any]) -> None:
    """Connect, send ``size`` bytes in 1 MiB writes, close; report the start time."""
    data = memoryview(bytes(CHUNK))
    with socket.create_connection(("127.0.0.1", port)) as conn:
        start = time.monotonic()
        left = size
        while left:
            conn.sendall(data[: min(left, CHUNK)])
            left -= min(left, CHUNK)
    results.put(("started", start))


def collect(results: Queue[Any], size: int) -> float:
    """Wait for both reports; return GB/s."""
    got: dict[str, tuple[Any, ...]] = {}
    while len(got) < 2:
        item = results.get(timeout=300)
        got[item[0]] = item[1:]
    received, end = got["received"]
    assert received == size, f"receiver got {received} of {size} bytes"
    start: float = got["started"][0]
    return size / (float(end) - start) / 1e9


def trial_plain(ctx: Any, size: int) -> float:
    ports, results = ctx.Queue(), ctx.Queue()
    receiver = ctx.Process(target=run_receiver, args=(ports, results))
    receiver.start()
    sender = ctx.Process(target=run_sender, args=(ports.get(timeout=30), size, results))
    sender.start()
    try:
        return collect(results, size)
    finally:
        sender.join(30)
        receiver.join(30)


def trial_bridged(
    ctx: Any, size: int, path: str, runner: Callable[[Coroutine[Any, Any, Any]], Any]
) -> tuple[float, float]:
    """Return (GB/s, CPU seconds this relaying process spent per GiB)."""
    ports, results = ctx.Queue(), ctx.Queue()
    receiver = ctx.Process(target=run_receiver, args=(ports, results))
    receiver.start()
    peer = socket.create_connection(("127.0.0.1", ports.get(timeout=30)))
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = ctx.Process(target=run_sender, args=(server.getsockname()[1], size, results))
        sender.start()
        client, _ = server.accept()
    pipe.SPLICE_SUPPORTED = path == "splice" and splice_available
    try:
        cpu_before = cpu_seconds()
        stats = runner(relay(client, peer, path))
        cpu = (cpu_seconds() - cpu_before) * (1 << 30) / size
        assert stats.a_to_b == size and stats.path == path, stats
        return collect(results, size), cpu
    finally:
        sender.join(30)
        receiver.join(30)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def relay(client: socket.socket, peer: socket.socket, path: str) -> pipe.BridgeStats:
    if path == "stream":
        a = await asyncio.open_connection(sock=client, limit=pipe.STREAM_CHUNK)
        b = await asyncio.open_connection(sock=peer, limit=pipe.STREAM_CHUNK)
        return await pipe.bridge(a, b)
    return await pipe.bridge(client, peer)


splice_available = pipe.SPLICE_SUPPORTED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument(
        "--paths",
        nargs="+",
        default=["splice" if splice_available else "copy"],
        choices=["splice", "copy", "stream"],
    )
    parser.add_argument("--uvloop", action="store_true", help="run the bridge on uvloop")
    args = parser.parse_args()
    size = args.size_mib * CHUNK
    ctx = mp.get_context("spawn")
    runner: Callable[[Coroutine[Any, Any, Any]], Any] = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    # Interleave the runs so that load from elsewhere on the host hits both sides alike.
    plain: list[float] = []
    bridged: dict[str, list[tuple[float, float]]] = {path: [] for path in args.paths}
    for _ in range(args.trials):
        plain.append(trial_plain(ctx, size))
        for path in args.paths:
            bridged[path].append(trial_bridged(ctx, size, path, runner))
    base = statistics.median(plain)
    loop_name = "uvloop" if args.uvloop else "asyncio"
    print(
        f"size {args.size_mib} MiB, {args.trials} trials, {os.cpu_count()} CPUs;"
        " median GB/s (1e9 B/s) [all trials]"
    )
    print(f"{'plain loopback TCP':<26}{base:6.2f} GB/s   {fmt(plain)}")
    for path, runs in bridged.items():
        speed = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        label = f"bridge {path} ({loop_name})"
        print(
            f"{label:<26}{speed:6.2f} GB/s   {fmt([r[0] for r in runs])}"
            f"   ratio {speed / base:5.1%}   relay CPU {cpu:.2f} s/GiB"
        )


def fmt(runs: list[float]) -> str:
    return "[" + " ".join(f"{r:.2f}" for r in runs) + "]"


if __name__ == "__main__":
    main()
