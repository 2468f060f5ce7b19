"""Throughput of ``delshare.aio.pipe.bridge`` against a plain loopback TCP stream, in one run.

Sender and receiver run in their own processes; this process only relays. Topology:

    plain:   sender ──TCP──▶ receiver
    bridged: sender ──TCP──▶ [bridge in this process] ──TCP──▶ receiver

Throughput = bytes / (receiver's EOF time - sender's first send), both on CLOCK_MONOTONIC.
Plain and bridged trials are interleaved so that load from elsewhere on the host hits both.
The reference in the same run is a minimal C relay that splices the same way (compiled with
``cc`` at start; skipped without a compiler). Also printed: CPU seconds per GiB of the endpoints
(sender + receiver) and of the relay, and the ratio a CPU-bound host could reach at best,
endpoints_plain / (endpoints_bridged + relay).

    python bench/pipe_bench.py                      # 1 GiB, splice path, 3 trials each
    python bench/pipe_bench.py --paths splice copy stream --size-mib 256 --uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from delshare.aio import pipe

CHUNK = 1 << 20
GIB = 1 << 30
Runner = Callable[[Coroutine[Any, Any, pipe.BridgeStats]], pipe.BridgeStats]


@dataclass(frozen=True)
class Trial:
    gbps: float
    endpoint_cpu: float  # sender + receiver, CPU s per GiB
    relay_cpu: float = 0.0  # this process, CPU s per GiB
    relay_user: float = 0.0  # the part of relay_cpu spent in user space (Python)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def user_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def pin(cpus: set[int] | None) -> None:
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def run_receiver(ports: Queue[Any], results: Queue[Any], cpus: set[int] | None) -> None:
    """Accept one connection, read to EOF; report bytes, EOF time and CPU used."""
    pin(cpus)
    with socket.create_server(("127.0.0.1", 0)) as server:
        ports.put(server.getsockname()[1])
        conn, _ = server.accept()
    buf = bytearray(CHUNK)
    total = 0
    cpu = cpu_seconds()
    with conn:
        while n := conn.recv_into(buf):
            total += n
    results.put(("received", total, time.monotonic(), cpu_seconds() - cpu))


def run_sender(port: int, size: int, results: Queue[Any], cpus: set[int] | None) -> None:
    """Connect, send ``size`` bytes in 1 MiB writes, close; report start time and CPU used."""
    pin(cpus)
    data = memoryview(bytes(CHUNK))
    with socket.create_connection(("127.0.0.1", port)) as conn:
        cpu = cpu_seconds()
        start = time.monotonic()
        left = size
        while left:
            conn.sendall(data[: min(left, CHUNK)])
            left -= min(left, CHUNK)
    results.put(("started", start, cpu_seconds() - cpu))


def collect(
    results: Queue[Any], size: int, relay_cpu: float = 0.0, relay_user: float = 0.0
) -> Trial:
    got: dict[str, tuple[Any, ...]] = {}
    while len(got) < 2:
        item = results.get(timeout=300)
        got[item[0]] = item[1:]
    received, end, receiver_cpu = got["received"]
    start, sender_cpu = got["started"]
    assert received == size, f"receiver got {received} of {size} bytes"
    per_gib = GIB / size
    return Trial(
        gbps=size / (float(end) - float(start)) / 1e9,
        endpoint_cpu=(float(sender_cpu) + float(receiver_cpu)) * per_gib,
        relay_cpu=relay_cpu * per_gib,
        relay_user=relay_user * per_gib,
    )


def trial_plain(ctx: Any, size: int, cpus: set[int] | None) -> Trial:
    ports, results = ctx.Queue(), ctx.Queue()
    receiver = ctx.Process(target=run_receiver, args=(ports, results, cpus))
    receiver.start()
    sender = ctx.Process(target=run_sender, args=(ports.get(timeout=30), size, results, cpus))
    sender.start()
    try:
        return collect(results, size)
    finally:
        sender.join(30)
        receiver.join(30)


def trial_bridged(ctx: Any, size: int, path: str, runner: Runner, cpus: set[int] | None) -> Trial:
    ports, results = ctx.Queue(), ctx.Queue()
    receiver = ctx.Process(target=run_receiver, args=(ports, results, cpus))
    receiver.start()
    peer = socket.create_connection(("127.0.0.1", ports.get(timeout=30)))
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        sender = ctx.Process(target=run_sender, args=(port, size, results, cpus))
        sender.start()
        client, _ = server.accept()
    try:
        cpu, user = cpu_seconds(), user_seconds()
        stats = runner(relay(client, peer, path))
        cpu, user = cpu_seconds() - cpu, user_seconds() - user
        assert stats.a_to_b == size and stats.path == path, stats
        return collect(results, size, cpu, user)
    finally:
        sender.join(30)
        receiver.join(30)


# The reference: the smallest C relay that splices the same way (blocking, one direction).
C_RELAY = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in ra = la;
    ra.sin_port = htons(atoi(argv[1]));
    socklen_t len = sizeof la;
    int l = socket(AF_INET, SOCK_STREAM, 0), b = socket(AF_INET, SOCK_STREAM, 0), p[2];
    if (bind(l, (void *)&la, len) || listen(l, 1) || getsockname(l, (void *)&la, &len)) return 1;
    printf("%d\n", ntohs(la.sin_port));
    fflush(stdout);
    if (connect(b, (void *)&ra, sizeof ra)) return 1;
    int a = accept(l, 0, 0);
    if (a < 0 || pipe(p)) return 1;
    fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    for (ssize_t n; (n = splice(a, 0, p[1], 0, 1 << 20, SPLICE_F_MOVE)) > 0;)
        for (ssize_t m; n > 0; n -= m)
            if ((m = splice(p[0], 0, b, 0, n, SPLICE_F_MOVE)) <= 0) return 2;
    shutdown(b, SHUT_WR);
    return 0;
}
"""


def build_c_relay(directory: Path) -> Path | None:
    """Compile the C reference relay, if this host has a C compiler and splice."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not SPLICE_AVAILABLE:
        return None
    source, binary = directory / "relay.c", directory / "relay"
    source.write_text(C_RELAY)
    subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def children_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_utime


def trial_c_relay(ctx: Any, size: int, binary: Path, cpus: set[int] | None) -> Trial:
    ports, results = ctx.Queue(), ctx.Queue()
    receiver = ctx.Process(target=run_receiver, args=(ports, results, cpus))
    receiver.start()
    cpu, user = children_cpu()
    command = [str(binary), str(ports.get(timeout=30))]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as relay_process:
        assert relay_process.stdout is not None
        port = int(relay_process.stdout.readline())
        sender = ctx.Process(target=run_sender, args=(port, size, results, cpus))
        sender.start()
        assert relay_process.wait(300) == 0
    cpu_after, user_after = children_cpu()  # before joining sender/receiver: the relay only
    try:
        return collect(results, size, cpu_after - cpu, user_after - user)
    finally:
        sender.join(30)
        receiver.join(30)


async def relay(client: socket.socket, peer: socket.socket, path: str) -> pipe.BridgeStats:
    if path == "stream":
        a = await asyncio.open_connection(sock=client, limit=pipe.STREAM_CHUNK)
        b = await asyncio.open_connection(sock=peer, limit=pipe.STREAM_CHUNK)
        return await pipe.bridge(a, b)
    return await pipe.bridge(client, peer, tuning=pipe.BridgeTuning(splice=path == "splice"))


SPLICE_AVAILABLE = pipe.SPLICE_SUPPORTED


def median(trials: list[Trial], field: str) -> float:
    return statistics.median(float(getattr(t, field)) for t in trials)


def report(plain: list[Trial], relayed: dict[str, list[Trial]], header: str) -> None:
    base = median(plain, "gbps")
    plain_cpu = median(plain, "endpoint_cpu")
    print(header)
    print(
        f"{'plain loopback TCP':<26}{base:6.2f} GB/s  {fmt(plain)}  endpoints {plain_cpu:.2f} s/GiB"
    )
    for label, runs in relayed.items():
        speed, relay_cpu = median(runs, "gbps"), median(runs, "relay_cpu")
        endpoint_cpu = median(runs, "endpoint_cpu")
        ceiling = plain_cpu / (endpoint_cpu + relay_cpu)
        print(
            f"{label:<26}{speed:6.2f} GB/s  {fmt(runs)}"
            f"  ratio {speed / base:5.1%}"
            f"  endpoints {endpoint_cpu:.2f} + relay {relay_cpu:.2f}"
            f" (user {median(runs, 'relay_user'):.2f}) s/GiB"
            f"  (CPU-bound ceiling {ceiling:.0%})"
        )


def fmt(runs: list[Trial]) -> str:
    return "[" + " ".join(f"{r.gbps:.2f}" for r in runs) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument(
        "--paths",
        nargs="+",
        default=["splice" if SPLICE_AVAILABLE else "copy"],
        choices=["splice", "copy", "stream"],
    )
    parser.add_argument("--uvloop", action="store_true", help="run the bridge on uvloop")
    parser.add_argument(
        "--no-c-relay", action="store_true", help="skip the C splice relay used as reference"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="sender and receiver on CPU 0, the relay on CPU 1 (a relay host has its own cores)",
    )
    args = parser.parse_args()
    size = args.size_mib * CHUNK
    ctx = mp.get_context("spawn")
    runner: Runner = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    endpoint_cpus: set[int] | None = None
    if args.pin:
        endpoint_cpus = {0}
        os.sched_setaffinity(0, {1})
    loop = "uvloop" if args.uvloop else "asyncio"
    with tempfile.TemporaryDirectory() as tmp:
        c_relay = None if args.no_c_relay else build_c_relay(Path(tmp))
        plain: list[Trial] = []
        relayed: dict[str, list[Trial]] = {f"bridge {p} ({loop})": [] for p in args.paths}
        if c_relay is not None:
            relayed["C splice relay (ref)"] = []
        for _ in range(args.trials):
            plain.append(trial_plain(ctx, size, endpoint_cpus))
            for path in args.paths:
                trial = trial_bridged(ctx, size, path, runner, endpoint_cpus)
                relayed[f"bridge {path} ({loop})"].append(trial)
            if c_relay is not None:
                relayed["C splice relay (ref)"].append(
                    trial_c_relay(ctx, size, c_relay, endpoint_cpus)
                )
    load = os.getloadavg()[0]
    header = (
        f"size {args.size_mib} MiB, {args.trials} trials, {os.cpu_count()} CPUs, load {load:.1f}"
        f"{', endpoints pinned to CPU 0, relay to CPU 1' if args.pin else ''};"
        " median GB/s (1e9 B/s) [all trials]"
    )
    report(plain, relayed, header)


if __name__ == "__main__":
    main()
