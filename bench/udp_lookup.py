"""What per-client connected UDP sockets on the relay's port would cost every other datagram.

A relay could give each UDP client its own socket, bound to the listening address with
``SO_REUSEPORT`` and ``connect``-ed to the client: the kernel then delivers that client's
datagrams to it, so the relay reads them with ``recv`` (no source address to build) and needs no
route lookup by sender. The price is in the kernel's socket lookup: every socket bound to the
port sits in the same hash chain, so a datagram from any *other* source (a new client, a Binding
request, an attacker) is scored against each of them.

Run: ``python -m bench.udp_lookup [--counts 0,100,1000,5000]``. Loopback only (127.0.0.1 to
127.0.0.3). For each count it adds that many connected sockets on the listener's port (to
127.0.0.3, which never sends) and prints the best of 100 bursts of the time one 100-byte
``send`` from an unconnected source takes (on loopback the sender's ``send`` also runs the
receiving side's lookup and queueing), then what a connected socket's ``recv`` saves over the
listener's ``recvfrom`` plus a route lookup for the same datagrams.
"""

from __future__ import annotations

import argparse
import resource
import socket
import time

PORT_HOST = "127.0.0.1"
BURST = 200


def _shared_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def _drain(sock: socket.socket) -> None:
    for _ in range(BURST * 2):
        try:
            sock.recv(2048)
        except BlockingIOError:
            return


def _send_cost(source: socket.socket, listener: socket.socket) -> float:
    """Best of 100 bursts: microseconds per ``send`` of 100 bytes to the listener."""
    best = float("inf")
    payload = bytes(100)
    for _ in range(100):
        start = time.perf_counter()
        for _ in range(BURST):
            source.send(payload)
        best = min(best, time.perf_counter() - start)
        _drain(listener)
    return best / BURST * 1e6


def _read_cost(reader: socket.socket, source: socket.socket, *, with_address: bool) -> float:
    """Best of 100 bursts: microseconds per datagram read (and, unconnected, routed by sender)."""
    routes = {(source.getsockname(), 0x4000): 1}
    frame = b"\x40\x00\x00\x64" + bytes(100)
    best = float("inf")
    for _ in range(100):
        for _ in range(BURST):
            source.send(frame)
        start = time.perf_counter()
        if with_address:
            for _ in range(BURST):
                data, sender = reader.recvfrom(65536)
                routes.get((sender, (data[0] << 8) | data[1]))
        else:
            by_channel = {0x4000: 1}
            for _ in range(BURST):
                data = reader.recv(65536)
                by_channel.get((data[0] << 8) | data[1])
        best = min(best, time.perf_counter() - start)
    return best / BURST * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--counts", default="0,100,1000,5000")
    args = parser.parse_args()
    counts = sorted(int(word) for word in args.counts.split(","))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < counts[-1] + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, counts[-1] + 64), hard))
    listener = _shared_socket()
    listener.bind((PORT_HOST, 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    others = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    others.bind(("127.0.0.2", 0))
    others.connect((PORT_HOST, port))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind((PORT_HOST, 0))
    client.connect((PORT_HOST, port))
    own = _shared_socket()
    own.bind((PORT_HOST, port))
    own.connect(client.getsockname())
    own.setblocking(False)
    print(
        f"read + route, per datagram: recvfrom + lookup by sender "
        f"{_read_cost(listener, others, with_address=True):.3f} us, "
        f"connected recv {_read_cost(own, client, with_address=False):.3f} us"
    )
    connected: list[socket.socket] = [own]
    try:
        for count in counts:
            while len(connected) - 1 < count:
                sock = _shared_socket()
                sock.bind((PORT_HOST, port))
                sock.connect(("127.0.0.3", 10000 + len(connected)))
                connected.append(sock)
            cost = _send_cost(others, listener)
            print(f"{count:6d} connected sockets on the port: {cost:8.3f} us per datagram")
    finally:
        for sock in (*connected, listener, others, client):
            sock.close()


if __name__ == "__main__":
    main()
