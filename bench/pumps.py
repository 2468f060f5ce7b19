"""Byte pumps shared by the relay cases: one stream, many streams at once, UDP flood.

The same pump runs for the plain loopback baseline and for every relay, so the only thing that
changes between rows is what sits between the two sockets. A load generator must not be what
limits a benchmark, so the pumps are as light as Python allows:

- Sender and receiver are separate processes (``python -m bench.pumps ROLE ...``), started before
  the clock and handed the sockets' descriptors, so they share no GIL with each other or with the
  bench. They wait for "go" and report their clock readings (``CLOCK_MONOTONIC``) as JSON.
- Blocks are large (4 MiB for the single stream; the receiver fills each with ``MSG_WAITALL``, so
  one syscall per block) and the many-stream pump is one ``epoll`` loop per side, not an asyncio
  task per socket, woken only when a socket holds a whole block (``SO_RCVLOWAT``).
- Integrity is a memcmp instead of a CRC: every block of ``block`` bytes is the same
  pseudo-random pattern with its first 8 bytes stamped with (stream number, block number). The
  receiver compares each whole block with the one it must be (``bytearray ==``, ~30 GB/s; CRC-32
  runs at ~4 GB/s), so a lost, duplicated, reordered, altered or crossed byte fails the comparison
  or the byte count, and bytes past the expected total count as a failure too.
"""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.common import REPO_DIR, host_busy_cores, host_cpu

BLOCK = 4 << 20  # case 1: bytes per send and per MSG_WAITALL receive
MANY_BLOCK = 64 << 10  # case 2: per-stream receive buffer (500 streams x 64 KiB)
_STAMP = struct.Struct("<II")  # (stream number, block number) at the start of every block
_ROUNDS = 64  # reads or writes per ready socket per epoll round (bounded work per event)


def pattern(block: int) -> bytearray:
    """``block`` bytes of the fixed pseudo-random pattern (stamp not yet written)."""
    seed = bytes((i * 131 + 7) % 251 for i in range(4096))
    return bytearray((seed * (block // len(seed) + 1))[:block])


@dataclass
class StreamResult:
    """What one pumped stream delivered."""

    seconds: float
    received: int
    crc_ok: bool  # the content check (stamped-pattern compare), kept under the report's key
    host_busy_cores: float = 0.0  # all processes on the machine, during the stream
    pump_cpu_s: float = 0.0  # sender + receiver processes, during the stream


# ---- the worker processes --------------------------------------------------------------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wait_for_go() -> None:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")


def _report(**values: float | int | bool) -> None:
    print(json.dumps(values), flush=True)


def send_stream(fd: int, total: int, block: int) -> None:
    """Worker: write ``total`` bytes of stamped blocks, then half-close."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    buf = pattern(block)
    view = memoryview(buf)
    _wait_for_go()
    cpu, start = _cpu(), time.monotonic()
    left, index = total, 0
    try:
        while left > 0:
            n = min(left, block)
            _STAMP.pack_into(buf, 0, 0, index)
            sock.sendall(view[:n])
            left, index = left - n, index + 1
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    _report(start=start, sent=total - left, cpu=_cpu() - cpu)


def receive_stream(fd: int, total: int, block: int, idle: float, max_s: float) -> None:
    """Worker: read whole blocks (``MSG_WAITALL``) and compare each with what it must be."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)  # MSG_WAITALL needs a blocking socket; SO_RCVTIMEO bounds each wait
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(idle), 0))
    buf, want = bytearray(block), pattern(block)
    view = memoryview(buf)
    _wait_for_go()
    cpu, deadline = _cpu(), time.monotonic() + max_s
    got, index, ok, done_at = 0, 0, True, 0.0
    while got < total and time.monotonic() < deadline:
        size = min(block, total - got)
        filled = _fill(sock, view[:size])
        if filled:
            done_at = time.monotonic()
        _STAMP.pack_into(want, 0, 0, index)
        ok = ok and (buf == want if filled == block else buf[:filled] == want[:filled])
        got, index = got + filled, index + 1
        if filled < size:
            break
    extra = 0
    if got == total:  # then EOF, not more bytes (a relay passes the sender's FIN)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 2, 0))
        extra = _fill(sock, view[:1])
    _report(received=got, ok=ok and extra == 0, done_at=done_at, cpu=_cpu() - cpu)


def _fill(sock: socket.socket, view: memoryview) -> int:
    """Fill ``view`` from a blocking socket; short only at EOF, on error or after SO_RCVTIMEO."""
    filled = 0
    while filled < len(view):
        try:
            n = sock.recv_into(view[filled:], 0, socket.MSG_WAITALL)
        except OSError:  # timeout (EAGAIN), reset
            break
        if n == 0:
            break
        filled += n
    return filled


@dataclass
class _Stream:
    """One socket of the many-stream pump and where its stream stands."""

    sock: socket.socket
    number: int
    done: int = 0  # bytes sent, or received
    filled: int = 0  # receiver: bytes in the current block
    closed: bool = False  # EOF or an error before the end
    ok: bool = True  # receiver: every block so far was the block it must be


def _streams(fds: Sequence[int], events: int) -> tuple[dict[int, _Stream], select.epoll]:
    streams = {fd: _Stream(socket.socket(fileno=fd), i) for i, fd in enumerate(fds)}
    ep = select.epoll(len(fds))
    for fd, st in streams.items():
        st.sock.setblocking(False)
        ep.register(fd, events)
    return streams, ep


def send_many(fds: Sequence[int], per_stream: int, block: int, max_s: float) -> None:
    """Worker: push ``per_stream`` stamped bytes into every socket from one epoll loop."""
    streams, ep = _streams(fds, select.EPOLLOUT)
    buf = pattern(block)
    _wait_for_go()
    cpu, start = _cpu(), time.monotonic()
    pending, deadline = len(streams), start + max_s
    while pending and time.monotonic() < deadline:
        for fd, _ in ep.poll(1.0):
            st = streams[fd]
            _send_some(st, per_stream, buf)
            if st.done >= per_stream or st.closed:
                ep.unregister(fd)
                pending -= 1
    ep.close()
    sent = sum(st.done for st in streams.values())
    _report(start=start, sent=sent, cpu=_cpu() - cpu)


def _send_some(st: _Stream, per_stream: int, buf: bytearray) -> None:
    """Write until the socket is full (bounded), stamping each block as it starts."""
    view, block = memoryview(buf), len(buf)
    for _ in range(_ROUNDS):
        index, at = divmod(st.done, block)
        _STAMP.pack_into(buf, 0, st.number, index)
        try:
            n = st.sock.send(view[at : min(block, at + per_stream - st.done)])
        except BlockingIOError:
            return
        except OSError:
            st.closed = True
            return
        st.done += n
        if st.done >= per_stream:
            return


def receive_many(fds: Sequence[int], per_stream: int, block: int, max_s: float) -> None:
    """Worker: read every socket from one epoll loop into per-stream block buffers.

    Each full block is compared with the one it must be. ``SO_RCVLOWAT`` of one block keeps a
    slow relay's trickle from waking the loop for every small segment. There is no half-close
    in this pump (see ``pump_many``), so bytes past ``per_stream`` are not looked for.
    """
    streams, ep = _streams(fds, select.EPOLLIN)
    bufs = {fd: bytearray(block) for fd in fds}
    for st in streams.values():
        _wake_at(st, min(block, per_stream))
    want = pattern(block)
    _wait_for_go()
    cpu, deadline = _cpu(), time.monotonic() + max_s
    pending, done_at = len(streams), 0.0
    while pending and time.monotonic() < deadline:
        for fd, _ in ep.poll(1.0):
            st = streams[fd]
            if _receive_some(st, bufs[fd], per_stream, want):
                done_at = time.monotonic()
                if 0 < per_stream - st.done < block:
                    _wake_at(st, per_stream - st.done)
            if st.done >= per_stream or st.closed:
                ep.unregister(fd)
                pending -= 1
    ep.close()
    received = sum(st.done for st in streams.values())
    ok = all(st.ok for st in streams.values())
    _report(received=received, ok=ok, done_at=done_at, cpu=_cpu() - cpu)


def _wake_at(st: _Stream, size: int) -> None:
    """Readable only once ``size`` bytes are queued (or at EOF): no wakeup per small segment."""
    st.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)


def _receive_some(st: _Stream, buf: bytearray, per_stream: int, want: bytearray) -> int:
    """Read what the socket has (bounded) into the block buffer; check each completed block."""
    view, got = memoryview(buf), 0
    for _ in range(_ROUNDS):
        size = min(len(buf), per_stream - st.done + st.filled)  # this block's length
        try:
            n = st.sock.recv_into(view[st.filled : size])
        except BlockingIOError:
            break
        except OSError:
            n = 0
        if n == 0:
            st.closed = True
            break
        st.filled, st.done, got = st.filled + n, st.done + n, got + n
        if st.filled == size:
            _STAMP.pack_into(want, 0, st.number, (st.done - 1) // len(buf))
            same = buf == want if size == len(buf) else buf[:size] == want[:size]
            st.ok, st.filled = st.ok and same, 0
        if st.done >= per_stream:
            break
    return got


# ---- the bench side --------------------------------------------------------------------------


class _Workers:
    """Pump worker processes: started and made ready before the clock, stopped by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, role: str, fds: Sequence[int], *args: float | int) -> None:
        argv = [sys.executable, "-m", "bench.pumps", role, ",".join(map(str, fds))]
        env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
        proc = subprocess.Popen(
            [*argv, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=tuple(fds),
            cwd=REPO_DIR,
            env=env,
        )
        self.procs.append(proc)

    def go(self) -> None:
        for proc in self.procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"pump worker {proc.args!r} did not start")
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

    def results(self, timeout: float) -> list[dict[str, float]]:
        out = []
        for proc in self.procs:
            stdout, _ = proc.communicate(timeout=timeout)
            out.append(json.loads(stdout.strip().splitlines()[-1]))
        return out

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5.0)


def pump_stream(
    sender: socket.socket, receiver: socket.socket, total: int, max_seconds: float
) -> StreamResult:
    """One stream, sender and receiver in their own processes; first send → last byte."""
    workers = _Workers()
    try:
        workers.start("recv", [receiver.fileno()], total, BLOCK, 10, max_seconds)
        workers.start("send", [sender.fileno()], total, BLOCK)
        workers.go()
        host0 = host_cpu()
        recv, sent = workers.results(max_seconds + 20.0)
        busy = host_busy_cores(host0, host_cpu())
    finally:
        workers.stop()
    seconds = max(recv["done_at"] - sent["start"], 1e-9)
    received = int(recv["received"])
    ok = bool(recv["ok"]) and received == total
    return StreamResult(seconds, received, ok, busy, recv["cpu"] + sent["cpu"])


def plain_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair (the plain-socket limit)."""
    with socket.create_server(("127.0.0.1", 0)) as lst:
        a = socket.create_connection(lst.getsockname())
        b, _ = lst.accept()
    return a, b


@dataclass
class ManyResult:
    """What the many-stream pump delivered."""

    seconds: float
    received: int
    ok: bool  # every block of every stream compared equal, no stream carried extra bytes
    pump_cpu_s: float
    host_busy_cores: float = 0.0  # all processes on the machine, during the pump


def pump_many(
    pairs: Sequence[tuple[socket.socket, socket.socket]],
    per_stream: int,
    max_seconds: float,
) -> ManyResult:
    """Push ``per_stream`` bytes through every pair at once: one sender and one receiver process.

    No half-close at the end: the receivers stop at the byte count, and coturn drops the tail
    of a stream on close (case 1 measures that); case 2 measures throughput.
    """
    workers = _Workers()
    try:
        workers.start(
            "recv-many", [b.fileno() for _, b in pairs], per_stream, MANY_BLOCK, max_seconds
        )
        workers.start(
            "send-many", [a.fileno() for a, _ in pairs], per_stream, MANY_BLOCK, max_seconds
        )
        workers.go()
        host0 = host_cpu()
        recv, sent = workers.results(max_seconds + 20.0)
        busy = host_busy_cores(host0, host_cpu())
    finally:
        workers.stop()
    seconds = max(recv["done_at"] - sent["start"], 1e-9)
    cpu = recv["cpu"] + sent["cpu"]
    return ManyResult(seconds, int(recv["received"]), bool(recv["ok"]), cpu, busy)


def _worker_main(argv: list[str]) -> None:
    role, fds, args = argv[0], [int(x) for x in argv[1].split(",")], argv[2:]
    if role == "send":
        send_stream(fds[0], int(args[0]), int(args[1]))
    elif role == "recv":
        receive_stream(fds[0], int(args[0]), int(args[1]), float(args[2]), float(args[3]))
    elif role == "send-many":
        send_many(fds, int(args[0]), int(args[1]), float(args[2]))
    elif role == "recv-many":
        receive_many(fds, int(args[0]), int(args[1]), float(args[2]))
    else:
        raise SystemExit(f"unknown pump role {role!r}")


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


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
