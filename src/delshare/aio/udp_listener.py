"""A TURN listener on a wildcard UDP address that answers from the address each client used.

A socket bound to ``0.0.0.0`` or ``::`` lets the kernel pick a reply's source address by route,
which on a host with several addresses may differ from the one the client sent to; a client
behind a NAT (or any client matching responses by 5-tuple) then drops the reply. With
``IP_PKTINFO`` / ``IPV6_RECVPKTINFO`` (RFC 3542 §6) each datagram reports its destination
address, and replies to that client carry it back as their source (``sendmsg`` with the same
ancillary data). Linux only; elsewhere :func:`udp_listener` returns the plain endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable

from delshare.aio.relay_sockets import UDP_RECV_SIZE, Datagrams, UdpEndpoint, is_unspecified
from delshare.stun.attributes import Address

__all__ = ["LISTENER_BUFFER", "AnsweringUdpEndpoint", "grow_buffers", "udp_listener"]

_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python 3.11 lacks the name
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_ANCILLARY = socket.CMSG_SPACE(20)  # room for one in_pktinfo (12 bytes) or in6_pktinfo (20)
MAX_CLIENTS = 65536
"""Clients whose local address is remembered; beyond, the oldest fall back to the route's."""
LISTENER_BUFFER = 2 << 20
"""SO_RCVBUF/SO_SNDBUF asked for on a UDP listener (Linux doubles it, capped by
``net.core.rmem_max``/``wmem_max``), as coturn does (its listeners show 4 MiB in ``ss -m``).
Every client's datagrams share this one socket: with the ~208 KiB default, ~270 small
ChannelData fit, so a relay that is off the CPU for a moment (other work, another process on
a busy host) drops what arrives meanwhile and then idles once it has drained the rest."""


def grow_buffers(sock: socket.socket, size: int = LISTENER_BUFFER) -> None:
    """Ask for ``size`` bytes of receive and send buffer; the kernel's limits have the last word."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        if sock.getsockopt(socket.SOL_SOCKET, option) < size:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, size)


class AnsweringUdpEndpoint(UdpEndpoint):
    """A wildcard-bound UDP endpoint whose replies leave from each client's destination address."""

    def _prepare(self) -> None:
        self._v6 = self.sock.family == socket.AF_INET6
        if self._v6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
        else:
            self.sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
        self._reply_info: OrderedDict[Address, bytes] = OrderedDict()

    def _receive(self) -> tuple[bytes, Address]:
        data, ancillary, _flags, addr = self.sock.recvmsg(UDP_RECV_SIZE, _ANCILLARY)
        client: Address = addr[:2]
        for level, kind, info in ancillary:
            if self._v6 and (level, kind) == (socket.IPPROTO_IPV6, _IPV6_PKTINFO):
                self._remember(client, info[:20])  # in6_pktinfo: our address, interface
            elif not self._v6 and (level, kind) == (socket.IPPROTO_IP, _IP_PKTINFO):
                # in_pktinfo: interface, local address (the destination, or for a broadcast the
                # interface's own), header destination; ipi_spec_dst is the source to reply from
                _ifindex, local, _destination = struct.unpack("=i4s4s", info[:12])
                self._remember(client, struct.pack("=i4s4s", 0, local, bytes(4)))
        return data, client

    def _remember(self, client: Address, info: bytes) -> None:
        if self._reply_info.get(client) == info:
            return
        self._reply_info[client] = info
        if len(self._reply_info) > MAX_CLIENTS:
            self._reply_info.popitem(last=False)

    def sendto(self, data: bytes, addr: Address) -> None:
        """Like :meth:`UdpEndpoint.sendto`, from the address ``addr`` last wrote to."""
        info = self._reply_info.get(addr)
        if info is None:
            super().sendto(data, addr)
            return
        level, kind = (
            (socket.IPPROTO_IPV6, _IPV6_PKTINFO) if self._v6 else (socket.IPPROTO_IP, _IP_PKTINFO)
        )
        try:
            self.sock.sendmsg([data], [(level, kind, info)], 0, addr)
        except OSError:
            return


def udp_listener(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    on_datagrams: Callable[[Datagrams], None],
) -> UdpEndpoint:
    """The endpoint for a TURN listener socket: answering from the right address if needed,
    with room for bursts (``LISTENER_BUFFER``)."""
    grow_buffers(sock)
    host = str(sock.getsockname()[0])
    if is_unspecified(host) and sys.platform.startswith("linux"):
        return AnsweringUdpEndpoint(loop, sock, on_datagrams)
    return UdpEndpoint(loop, sock, on_datagrams)
