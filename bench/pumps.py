"""Byte pumps shared by the relay cases: one blocking stream, many streams in asyncio, UDP flood.

The same pump runs for the plain loopback baseline and for every relay, so the only thing that
changes between rows is what sits between the two sockets. The receiver counts bytes and keeps
a CRC-32 of everything (zlib, ~4 GB/s), so a lost or altered byte shows up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from functools import cache

from bench.common import host_busy_cores, host_cpu

BLOCK = 1 << 20
_PATTERN = bytes((i * 131 + 7) % 251 for i in range(BLOCK))


@cache
def expected_crc(total: int, block: int = BLOCK) -> int:
    """CRC-32 of ``total`` bytes of the repeated pattern (computed once per size)."""
    crc, left, view = 0, total, memoryview(_PATTERN)[:block]
    while left > 0:
        n = min(left, block)
        crc = zlib.crc32(view[:n], crc)
        left -= n
    return crc


@dataclass
class StreamResult:
    """What one pumped stream delivered."""

    seconds: float
    received: int
    crc_ok: bool
    host_busy_cores: float = 0.0  # all processes on the machine, during the stream


def send_all(sock: socket.socket, total: int, block: int = BLOCK) -> None:
    """Write ``total`` bytes of the pattern, then half-close."""
    view, left = memoryview(_PATTERN)[:block], total
    while left > 0:
        n = min(left, block)
        sock.sendall(view[:n])
        left -= n
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def receive_all(
    sock: socket.socket, total: int, idle: float, deadline: float
) -> tuple[int, int, float]:
    """Read until ``total`` bytes, EOF, ``idle`` seconds of silence or ``deadline``."""
    buf = bytearray(BLOCK)
    view, got, crc, done_at = memoryview(buf), 0, 0, 0.0
    sock.settimeout(idle)
    while got < total and time.monotonic() < deadline:
        try:
            n = sock.recv_into(view)
        except (TimeoutError, OSError):
            break
        if n == 0:
            break
        crc = zlib.crc32(view[:n], crc)
        got += n
        done_at = time.perf_counter()
    return got, crc, done_at


def pump_stream(
    sender: socket.socket, receiver: socket.socket, total: int, max_seconds: float
) -> StreamResult:
    """One stream: a thread receives, this thread sends; time from first send to last byte."""
    out: list[tuple[int, int, float]] = []
    deadline = time.monotonic() + max_seconds
    thread = threading.Thread(
        target=lambda: out.append(receive_all(receiver, total, 10.0, deadline)), daemon=True
    )
    thread.start()
    start, host0 = time.perf_counter(), host_cpu()
    with contextlib.suppress(OSError):
        send_all(sender, total)
    thread.join(max_seconds + 15.0)
    busy = host_busy_cores(host0, host_cpu())
    got, crc, done_at = out[0] if out else (0, 0, start)
    ok = got == total and crc == expected_crc(total)
    return StreamResult(max(done_at - start, 1e-9), got, ok, busy)


def plain_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair (the plain-socket limit)."""
    with socket.create_server(("127.0.0.1", 0)) as lst:
        a = socket.create_connection(lst.getsockname())
        b, _ = lst.accept()
    return a, b


# ---- many streams at once (case 2) -----------------------------------------------------------


async def _send_async(sock: socket.socket, total: int, block: int) -> None:
    loop = asyncio.get_running_loop()
    view, left = memoryview(_PATTERN)[:block], total
    while left > 0:
        n = min(left, block)
        await loop.sock_sendall(sock, view[:n])
        left -= n
    # No half-close here: the receivers stop at the byte count, and coturn drops the tail of a
    # stream on close (case 1 measures that); case 2 measures throughput only.


async def _recv_async(sock: socket.socket, total: int, block: int) -> int:
    loop = asyncio.get_running_loop()
    buf = bytearray(block)
    got = 0
    while got < total:
        n = await loop.sock_recv_into(sock, buf)
        if n == 0:
            break
        got += n
    return got


async def _many(
    pairs: list[tuple[socket.socket, socket.socket]],
    per_stream: int,
    max_seconds: float,
    block: int,
) -> tuple[float, int]:
    for a, b in pairs:
        a.setblocking(False)
        b.setblocking(False)
    start = time.perf_counter()
    senders = [asyncio.ensure_future(_send_async(a, per_stream, BLOCK)) for a, _ in pairs]
    receivers = [asyncio.ensure_future(_recv_async(b, per_stream, block)) for _, b in pairs]
    done, pending = await asyncio.wait(receivers, timeout=max_seconds)
    elapsed = time.perf_counter() - start
    for task in [*pending, *senders]:
        task.cancel()
    await asyncio.gather(*senders, *pending, return_exceptions=True)
    got = sum(t.result() for t in done if not t.cancelled() and t.exception() is None)
    return elapsed, got


def pump_many(
    pairs: list[tuple[socket.socket, socket.socket]],
    per_stream: int,
    max_seconds: float,
    block: int = 256 << 10,
) -> tuple[float, int]:
    """Push ``per_stream`` bytes through every pair at once; (seconds, bytes received)."""
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_many(pairs, per_stream, max_seconds, block))
    finally:
        loop.close()


# ---- UDP flood (case 4) ----------------------------------------------------------------------


_COUNTER = """
import socket, sys, time
sock = socket.socket(fileno=int(sys.argv[1]))
sock.settimeout(0.5)
buf = bytearray(2048)
got, deadline = 0, time.monotonic() + float(sys.argv[2])
print("ready", flush=True)
while time.monotonic() < deadline:
    try:
        sock.recv_into(buf)
    except TimeoutError:
        if got:
            break
        continue
    got += 1
print(got, flush=True)
"""


def udp_flood(
    sock: socket.socket, frame: bytes, peer: socket.socket, seconds: float, max_packets: int
) -> tuple[int, int, float]:
    """Send ``frame`` for ``seconds``; count what reaches ``peer``. (sent, received, seconds).

    The peer's counter runs in its own process (no GIL shared with the sender); it stops after
    0.5 s of silence once packets have arrived, or at its own deadline.
    """
    counter = subprocess.Popen(
        [sys.executable, "-c", _COUNTER, str(peer.fileno()), str(seconds + 20.0)],
        pass_fds=(peer.fileno(),),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert counter.stdout is not None
        counter.stdout.readline()  # "ready"
        sent, start = 0, time.perf_counter()
        end = start + seconds
        while sent < max_packets:
            for _ in range(256):
                try:
                    sock.send(frame)
                    sent += 1
                except (BlockingIOError, ConnectionRefusedError):
                    pass
            if time.perf_counter() >= end:
                break
        elapsed = time.perf_counter() - start
        out, _ = counter.communicate(timeout=seconds + 25.0)
        got = int(out.split()[-1])
    finally:
        if counter.poll() is None:
            counter.kill()
            counter.wait(5.0)
    return sent, got, elapsed
