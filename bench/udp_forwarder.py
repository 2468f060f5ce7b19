"""The case 4 reference in Python: a bare UDP forwarder, no STUN or TURN logic.

    python -m bench.udp_forwarder blocking|add_reader PEER_PORT RCVBUF_BYTES MAX_SECONDS

It binds a UDP socket on 127.0.0.1 (port printed on stdout), and for every datagram drops the
first 4 bytes (a ChannelData header, RFC 8656 §12.4, not even looked at) and sends the rest to
127.0.0.1:PEER_PORT from a second socket. This is what a Python process can relay at all: two
syscalls and a few bytecodes per datagram, the floor under any relay written in Python.

- ``blocking``: one plain loop, ``recv_into`` on a blocking socket then ``sendto``, no event
  loop at all (``SO_RCVTIMEO`` bounds each wait, so the loop notices its deadline).
- ``add_reader``: the event-loop shape of our relay: a readiness callback (uvloop's loop when
  installed) reads up to 64 datagrams per wake-up from a non-blocking socket.

The bench uses ``add_reader``, the faster of the two on this machine by a little
(``python -m bench.forwarder_modes``, see BENCHMARKS.md).
Python has no ``recvmmsg``; ``recv_into`` (no source address tuple) is the cheapest read it has.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time

HEADER = 4  # ChannelData: channel number and length (RFC 8656 §12.4)
BATCH = 64  # reads per wake-up in add_reader mode, as the relay's UDP_BATCH
ROUNDS = 4096  # datagrams between two looks at the clock in blocking mode


def _sockets(rcvbuf: int) -> tuple[socket.socket, socket.socket]:
    inp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    inp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    inp.bind(("127.0.0.1", 0))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.bind(("127.0.0.1", 0))
    return inp, out


def forward_blocking(
    inp: socket.socket, out: socket.socket, peer: tuple[str, int], end: float
) -> None:
    """Forward until ``end`` (monotonic): one blocking read, one send, per datagram."""
    inp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
    recv_into, sendto = inp.recv_into, out.sendto
    buf = bytearray(2048)
    view = memoryview(buf)
    while time.monotonic() < end:
        try:
            for _ in range(ROUNDS):
                n = recv_into(buf)
                sendto(view[HEADER:n], peer)
        except OSError:  # SO_RCVTIMEO expired (EAGAIN), or a refused send: look at the clock
            continue


def forward_add_reader(
    inp: socket.socket, out: socket.socket, peer: tuple[str, int], end: float
) -> None:
    """Forward until ``end`` from a readiness callback, up to ``BATCH`` datagrams per wake-up."""
    inp.setblocking(False)
    recv_into, sendto = inp.recv_into, out.sendto
    buf = bytearray(2048)
    view = memoryview(buf)

    def readable() -> None:
        try:
            for _ in range(BATCH):
                n = recv_into(buf)
                sendto(view[HEADER:n], peer)
        except OSError:  # drained (BlockingIOError), or a refused send
            return

    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    loop.add_reader(inp.fileno(), readable)
    loop.call_later(max(end - time.monotonic(), 0.0), loop.stop)
    try:
        loop.run_forever()
    finally:
        loop.close()


def main(argv: list[str]) -> int:
    mode, peer_port, rcvbuf, max_s = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    inp, out = _sockets(rcvbuf)
    print(inp.getsockname()[1], flush=True)
    end = time.monotonic() + max_s
    peer = ("127.0.0.1", peer_port)
    if mode == "blocking":
        forward_blocking(inp, out, peer, end)
    elif mode == "add_reader":
        forward_add_reader(inp, out, peer, end)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
