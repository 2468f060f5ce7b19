"""The bench's reference relays without TURN (bench/references.py) relay exactly what they get.

Real processes on loopback: the C splice relay carries several connections at once in both
directions and passes each half-close on; the UDP forwarders drop the 4-byte ChannelData header
and nothing else.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from bench.servers import Server

from bench import c_relays, references

pytestmark = pytest.mark.timeout(60)
HAVE_CC = c_relays.compiler() is not None


def _read_to_eof(sock: socket.socket) -> bytes:
    sock.settimeout(10.0)
    data = bytearray()
    for _ in range(10_000):  # bounded: far more reads than these few KiB need
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError("no EOF")


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: the bench row says so too")
def test_c_splice_relay_carries_both_directions_and_half_closes() -> None:
    server = references.start_c_splice_relay()
    try:
        with references.direct_pairs(server, 3) as pairs:
            for i, (client, peer) in enumerate(pairs):
                client.sendall(bytes([i]) * (300_000 + i))
                peer.sendall(b"reply %d" % i)
            for i, (client, peer) in enumerate(pairs):
                client.shutdown(socket.SHUT_WR)
                assert _read_to_eof(peer) == bytes([i]) * (300_000 + i)
                peer.sendall(b" after the client's EOF")
                peer.shutdown(socket.SHUT_WR)
                assert _read_to_eof(client) == b"reply %d after the client's EOF" % i
    finally:
        server.stop()
    assert not server.child.alive()


def _forwards_payloads(start: Callable[[], Server]) -> None:
    server = start()
    try:
        sock, peer = references.udp_sender(server)
        peer.settimeout(10.0)
        with sock:
            for i in range(20):
                sock.send(references.frame(b"payload %d" % i))
                assert peer.recv(2048) == b"payload %d" % i
    finally:
        server.stop()
    assert not server.child.alive()


def test_python_forwarder_strips_the_channel_header_only() -> None:
    _forwards_payloads(references.start_python_forwarder)


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: the bench row says so too")
def test_c_forwarder_strips_the_channel_header_only() -> None:
    _forwards_payloads(references.start_c_forwarder)
