"""The relay's UDP reader (``UdpEndpoint``) reads datagrams in bounded batches, on real sockets.

One readiness callback reads until the socket is empty or ``UDP_BATCH`` datagrams were read: a
flooded socket must not starve another one, datagrams reach the handler in arrival order, the
owner hears about each batch's end once, and an error reported by a read (ICMP port unreachable
from an earlier send) costs that read only.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from typing import Any

import pytest

from delshare.aio.client import connect_turn
from delshare.aio.relay_sockets import UDP_BATCH, Datagrams, UdpEndpoint
from delshare.aio.server import RelayConfig, start_relay
from delshare.aio.udp_listener import LISTENER_BUFFER
from delshare.stun.framing import ChannelData
from delshare.turn.auth import AuthConfig
from delshare.turn.server_config import ServerConfig

HOST = "127.0.0.1"
STEP = 10.0
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)  # <linux/in.h>


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((HOST, 0))
    return sock


class _Recorder:
    """Every datagram handled, in order, tagged by endpoint; the batches seen."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.batches = 0
        self.wanted = 0
        self.done = asyncio.Event()

    def handler(self, tag: str) -> Callable[[Datagrams], None]:
        def on_datagrams(batch: Datagrams) -> None:
            assert 0 < len(batch) <= UDP_BATCH
            self.batches += 1
            self.seen += [(tag, data) for data, _addr in batch]
            if len(self.seen) >= self.wanted:
                self.done.set()

        return on_datagrams


async def test_a_flooded_socket_does_not_starve_another_and_order_is_kept() -> None:
    loop = asyncio.get_running_loop()
    flooded, quiet, source = _udp(), _udp(), _udp()
    record = _Recorder()
    count = 3 * UDP_BATCH + 5
    record.wanted = count + 1
    a = UdpEndpoint(loop, flooded, record.handler("a"))
    b = UdpEndpoint(loop, quiet, record.handler("b"))
    try:
        # queued before the loop looks at either socket: both are readable at the next poll
        for n in range(count):
            source.sendto(n.to_bytes(4, "big"), a.address)
        source.sendto(b"quiet", b.address)
        await asyncio.wait_for(record.done.wait(), STEP)
        tags = [tag for tag, _ in record.seen]
        # the quiet socket's datagram is read after at most one batch of the flooded one
        assert tags.index("b") <= UDP_BATCH
        numbers = [int.from_bytes(data, "big") for tag, data in record.seen if tag == "a"]
        assert numbers == list(range(count))
        # the flooded socket took several wake-ups, each handing on one batch
        assert record.batches >= count // UDP_BATCH + 2
    finally:
        a.close()
        b.close()
        source.close()


@pytest.mark.skipif(sys.platform != "linux", reason="IP_RECVERR is Linux's")
async def test_an_icmp_error_on_read_costs_that_read_only() -> None:
    loop = asyncio.get_running_loop()
    closed = _udp()
    gone = closed.getsockname()
    closed.close()  # nothing listens there: a datagram to it draws ICMP port unreachable

    # control: with IP_RECVERR the next read of an unconnected socket reports the ICMP error
    with _udp() as probe:
        probe.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        probe.settimeout(STEP)
        probe.sendto(b"x", gone)
        with pytest.raises(ConnectionRefusedError):
            probe.recvfrom(2048)

    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    sock, source = _udp(), _udp()
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    record = _Recorder()
    record.wanted = 5
    endpoint = UdpEndpoint(loop, sock, record.handler("a"))
    try:
        endpoint.sendto(b"x", gone)  # the error waits in the socket for its next read
        for n in range(5):
            source.sendto(bytes([n]), endpoint.address)
        await asyncio.wait_for(record.done.wait(), STEP)
        assert [data for _, data in record.seen] == [bytes([n]) for n in range(5)]
        assert errors == []
    finally:
        loop.set_exception_handler(None)
        endpoint.close()
        source.close()


def _rmem_max() -> int:
    try:
        with open("/proc/sys/net/core/rmem_max") as limit:
            return int(limit.read())
    except OSError:
        return 0


@pytest.mark.skipif(
    _rmem_max() < 2 * LISTENER_BUFFER,
    reason="net.core.rmem_max caps UDP socket buffers below what the listener asks for",
)
async def test_a_burst_beyond_the_default_buffer_is_relayed_whole() -> None:
    """2000 ChannelData datagrams reach the listener while the relay cannot read (this test
    holds the loop): with the kernel's default ~208 KiB buffer only ~270 would be kept."""
    server = ServerConfig(auth=AuthConfig("burst.test", {"u": "p"}), allow_peers=("127.0.0.0/8",))
    relay = await start_relay(RelayConfig(server=server, listen=((HOST, 0),)))
    peer = _udp()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    peer.setblocking(False)
    count, got = 2000, 0
    try:
        uri = f"turn:{HOST}:{relay.turn_port}?transport=udp"
        async with await connect_turn(uri, "u", "p") as client:
            allocation = await client.allocate_udp()
            channel = await allocation.bind_channel(peer.getsockname())
            transport = client._transport
            assert transport is not None
            with transport.get_extra_info("socket").dup() as source:
                for n in range(count):  # no await: the relay reads only once this is done
                    frame = ChannelData(channel, n.to_bytes(4, "big") + bytes(96))
                    source.sendto(frame.encode(pad=False), (HOST, relay.turn_port))
            loop = asyncio.get_running_loop()
            while got < count:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(peer, 2048), STEP)
                except TimeoutError:
                    pytest.fail(f"only {got} of {count} datagrams relayed")
                assert int.from_bytes(data[:4], "big") == got  # none lost, in order
                got += 1
    finally:
        peer.close()
        await relay.close()
