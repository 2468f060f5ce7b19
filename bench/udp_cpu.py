"""Relay CPU per UDP ChannelData datagram, measured in-process and robust on a loaded machine.

Run: ``python -m bench.udp_cpu [--rounds N]``. A relay runs in this process (``start_relay``);
our client allocates a UDP relay and binds a channel to a peer socket; the listener's readiness
callback is then driven by hand: 400 datagrams are queued in the listener's socket, the
callback drains them, and only the callback is timed with this thread's CPU clock
(``time.thread_time``, from the scheduler, not a tick sample). Printed per datagram, medians of
``--rounds`` rounds of 40 bursts:

- ``relay``: ``recvfrom`` + the relay's handling + ``sendto`` to the peer, as in case 4;
- ``relay without send``: the same with the relay socket's ``sendto`` replaced by a no-op;
- ``read loop only``: the listener's read loop with a no-op handler;
- ``bare loop``: plain ``recvfrom`` + ``sendto`` of the same datagrams in a Python loop (the floor
  for any Python relay doing two syscalls per datagram).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time
from collections.abc import Callable

from delshare.aio.client import connect_turn
from delshare.aio.server import RelayConfig, start_relay
from delshare.stun.framing import ChannelData
from delshare.turn.auth import AuthConfig
from delshare.turn.server_config import ServerConfig

BURST, BURSTS, PAYLOAD = 400, 40, 100
HOST = "127.0.0.1"


def _udp(rcvbuf: int = 4 << 20) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return sock


def _drain(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return count
        count += 1


def _rounds(
    rounds: int, send_burst: Callable[[], None], work: Callable[[], None], peer: socket.socket
) -> float:
    """Median CPU microseconds per datagram that reached ``peer`` (or per datagram sent)."""
    per = []
    for _ in range(rounds):
        spent, count = 0.0, 0
        for _ in range(BURSTS):
            send_burst()
            start = time.thread_time()
            work()
            spent += time.thread_time() - start
            count += _drain(peer) or BURST
        per.append(spent / count * 1e6)
    return statistics.median(per)


async def _relay_figures(rounds: int) -> dict[str, float]:
    server = ServerConfig(auth=AuthConfig("udp.bench", {"u": "p"}), allow_peers=("127.0.0.0/8",))
    relay = await start_relay(RelayConfig(server=server, listen=((HOST, 0),)))
    peer, source = _udp(), None
    try:
        uri = f"turn:{HOST}:{relay.turn_port}?transport=udp"
        client = await connect_turn(uri, "u", "p")
        allocation = await client.allocate_udp()
        channel = await allocation.bind_channel(peer.getsockname())
        # the datagrams must come from the client's own address: send on a duplicate of it
        transport = client._transport
        assert transport is not None
        view = transport.get_extra_info("socket")
        source = view.dup()
        frame = ChannelData(channel, bytes(PAYLOAD)).encode(pad=False)
        target = (HOST, relay.turn_port)
        (listener,) = relay.server._udp_listeners.values()
        asyncio.get_running_loop().remove_reader(listener.sock.fileno())  # driven by hand

        def burst() -> None:
            for _ in range(BURST):
                source.sendto(frame, target)

        def drain_listener() -> None:
            for _ in range(BURST // 64 + 2):
                listener._readable()

        figures = {"relay": _rounds(rounds, burst, drain_listener, peer)}
        for routes in relay.server._channel_routes.values():  # the cached routes' sendto
            for key, route in routes.items():
                routes[key] = (_no_send, *route[1:])
        figures["relay without send"] = _rounds(rounds, burst, drain_listener, peer)
        listener._on_datagrams = _no_handler
        figures["read loop only"] = _rounds(rounds, burst, drain_listener, peer)
        await client.close()
        return figures
    finally:
        if source is not None:
            source.close()
        peer.close()
        await relay.close()


def _no_send(data: bytes, addr: tuple[str, int]) -> int:
    return 0


def _no_handler(batch: list[tuple[bytes, tuple[str, int]]]) -> None:
    return None


def _bare_loop(rounds: int) -> float:
    inbound, outbound, peer = _udp(), _udp(), _udp()
    source = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    frame, target, to_peer = bytes(PAYLOAD + 4), inbound.getsockname(), peer.getsockname()

    def burst() -> None:
        for _ in range(BURST):
            source.sendto(frame, target)

    def relay() -> None:
        while True:
            try:
                data, _addr = inbound.recvfrom(65536)
            except BlockingIOError:
                return
            outbound.sendto(data[4:], to_peer)

    try:
        return _rounds(rounds, burst, relay, peer)
    finally:
        for sock in (inbound, outbound, peer, source):
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    figures = asyncio.run(_relay_figures(args.rounds))
    figures["bare loop"] = _bare_loop(args.rounds)
    for name, value in figures.items():
        print(f"{name:20} {value:5.2f} us CPU per datagram")


if __name__ == "__main__":
    main()
