"""The TURN client code the relay cases drive, the same against every server.

``ours`` uses ``delshare.aio.client`` when it is importable; ``mini`` is the bench's own blocking
client on ``delshare.stun`` (bench/miniturn.py), used while ours is not built. Either way the
data moves on raw sockets with the same pump code, so only the server differs between rows.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from bench.miniturn import TCP, UDP, MiniTurn, channel_frame
from bench.servers import PASSWORD, USER

Address = tuple[str, int]
CHANNEL = 0x4000


@dataclass
class TcpStream:
    """A relayed TCP stream: the raw data socket plus whatever must stay open for it."""

    data: socket.socket
    close: Callable[[], None]


@dataclass
class UdpChannel:
    """A UDP allocation with a channel to one peer; ``send`` relays one payload."""

    sock: socket.socket
    channel: int
    close: Callable[[], None]

    def frame(self, payload: bytes) -> bytes:
        return channel_frame(self.channel, payload)


class Backend(Protocol):
    """What the relay cases need from a TURN client."""

    name: str

    def open_stream(self, server: Address, peer: Address) -> TcpStream: ...
    def allocate_once(self, server: Address) -> None: ...
    def open_udp_channel(self, server: Address, peer: Address) -> UdpChannel: ...


class MiniBackend:
    """The bench's own client (bench/miniturn.py)."""

    name = "bench-mini client"

    def open_stream(self, server: Address, peer: Address) -> TcpStream:
        """Allocate (TCP), permit, Connect to the peer, ConnectionBind (RFC 6062 §4.3, §4.4)."""
        ctl = MiniTurn.open(server, USER, PASSWORD, TCP)
        try:
            ctl.allocate(TCP)
            ctl.permit(peer)
            data = ctl.bind_data(ctl.connect(peer))
        except BaseException:
            ctl.close()
            raise

        def close() -> None:
            data.close()
            ctl.close()

        return TcpStream(data, close)

    def allocate_once(self, server: Address) -> None:
        """One authenticated TCP allocation on a fresh control connection, then close."""
        ctl = MiniTurn.open(server, USER, PASSWORD, TCP)
        try:
            ctl.allocate(TCP)
        finally:
            ctl.close()

    def open_udp_channel(self, server: Address, peer: Address) -> UdpChannel:
        """UDP allocation + ChannelBind to the peer (RFC 8656 §12)."""
        ctl = MiniTurn.open(server, USER, PASSWORD, UDP)
        try:
            ctl.allocate(UDP)
            ctl.channel_bind(peer, CHANNEL)
        except BaseException:
            ctl.close()
            raise
        return UdpChannel(ctl.sock, CHANNEL, ctl.close)


@cache
def backend() -> Backend:
    """Our asyncio client when it is there, else the bench's own (BENCH_CLIENT=mini forces it)."""
    if os.environ.get("BENCH_CLIENT") == "mini":
        return MiniBackend()
    try:
        from bench.ours_client import OursBackend
    except ImportError:
        return MiniBackend()
    try:
        return OursBackend()
    except ImportError:
        return MiniBackend()
