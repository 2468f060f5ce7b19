"""Relayed sockets of the TURN server: port choice, binding, UDP relays, TCP relay listeners.

Ports come from ``[min_port, max_port]`` (RFC 8656 §7.2: the server picks the relayed port),
never twice at once: TCP relay listeners use SO_REUSEPORT so that outgoing Connect sockets can
bind the same relayed address (RFC 6062 §5.2), which would also let a second listener share
the port, so the pool keeps its own record of ports in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import sys
from collections.abc import Callable, Iterator
from functools import partial

from delshare.stun.attributes import Address

_BIND_ATTEMPTS = 128
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)  # Linux: a socket born non-blocking
UDP_RECV_SIZE = 65536
UDP_BATCH = 64  # datagrams read per readiness callback
Datagrams = list[tuple[bytes, Address]]
"""One read batch: (payload, sender) in arrival order."""


def family_of(host: str) -> socket.AddressFamily:
    """AF_INET6 for IPv6 literals, else AF_INET."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def wildcard(family: int) -> str:
    """The unspecified address of IP version ``family`` (4 or 6)."""
    return "::" if family == 6 else "0.0.0.0"


def is_unspecified(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def route_source(client_ip: str) -> str:
    """The local IP the kernel would use to reach ``client_ip`` (a UDP connect sends nothing)."""
    with socket.socket(family_of(client_ip), socket.SOCK_DGRAM) as probe:
        probe.connect((client_ip, 9))
        return str(probe.getsockname()[0])


def host_addresses() -> set[str]:
    """Every IPv4 and IPv6 address of this host (Linux: /proc/net/fib_trie, if_inet6).

    Python has no getifaddrs; the kernel's local routing table lists each local IPv4 address
    as a ``/32 host LOCAL`` leaf. Elsewhere the set is empty (the caller adds what it knows).
    """
    found: set[str] = set()
    with contextlib.suppress(OSError):
        last = ""
        with open("/proc/net/fib_trie") as trie:
            for line in trie:
                words = line.split()
                if words[:1] == ["|--"] and len(words) > 1:
                    last = words[1]
                elif words[:3] == ["/32", "host", "LOCAL"] and last:
                    found.add(last)
    with contextlib.suppress(OSError, ValueError), open("/proc/net/if_inet6") as table:
        for line in table:
            hexa = line.split()[0]
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(hexa))))
    return found


def allow_port_sharing(sock: socket.socket) -> None:
    """SO_REUSEADDR + SO_REUSEPORT: a relay listener and Connect sockets share one address."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def new_socket(host: str, kind: socket.SocketKind, *, blocking: bool = True) -> socket.socket:
    """A socket of ``host``'s family (IPv6 only for an IPv6 host); ``blocking=False`` makes
    it non-blocking from the start (``SOCK_NONBLOCK`` where the OS has it: no ``ioctl``)."""
    sock = socket.socket(family_of(host), kind if blocking else kind | _NONBLOCK)
    if not blocking and not _NONBLOCK:
        sock.setblocking(False)
    if ":" in host:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def set_dont_fragment(sock: socket.socket) -> None:
    """Set DF on a UDP relay socket (DONT-FRAGMENT, RFC 8656 §18.8) where the OS allows it."""
    if sock.family == socket.AF_INET6:
        option = getattr(socket, "IPV6_DONTFRAG", None)
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, option, 1)
        return
    linux = sys.platform == "linux"  # <linux/in.h> values; Python does not export them
    discover = getattr(socket, "IP_MTU_DISCOVER", 10 if linux else None)
    do = getattr(socket, "IP_PMTUDISC_DO", 2 if linux else None)
    if discover is not None and do is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, discover, do)


class PortPool:
    """Chooses and binds relay ports in a range; remembers which (host, port) are ours."""

    def __init__(self, min_port: int, max_port: int) -> None:
        self.min_port = min_port
        self.max_port = max_port
        self.in_use: set[Address] = set()
        self._held: dict[Address, socket.socket] = {}

    def _candidates(self, even: bool) -> Iterator[int]:
        """Up to ``_BIND_ATTEMPTS`` random ports, drawn lazily: the first one usually binds."""
        ports = range(self.min_port + (even and self.min_port % 2), self.max_port + 1, 1 + even)
        count = len(ports)
        if count <= _BIND_ATTEMPTS:
            picks = list(ports)
            random.shuffle(picks)
            yield from picks
            return
        for _ in range(_BIND_ATTEMPTS):
            yield ports[random.randrange(count)]

    def bind(
        self, host: str, kind: socket.SocketKind, *, even: bool = False, reserve_next: bool = False
    ) -> tuple[socket.socket, socket.socket | None]:
        """Bind a relay socket (and, with ``reserve_next``, hold port + 1); OSError if full."""
        for port in self._candidates(even or reserve_next):
            if (host, port) in self.in_use or (reserve_next and (host, port + 1) in self.in_use):
                continue
            if reserve_next and port + 1 > self.max_port:
                continue
            sock = self._try_bind(host, port, kind)
            if sock is None:
                continue
            held = None
            if reserve_next:
                held = self._try_bind(host, port + 1, socket.SOCK_DGRAM)
                if held is None:
                    self.release((host, port), sock)
                    continue
                self._held[(host, port + 1)] = held
            return sock, held
        raise OSError("no free relay port in range")

    def _try_bind(self, host: str, port: int, kind: socket.SocketKind) -> socket.socket | None:
        sock = new_socket(host, kind, blocking=False)
        if kind == socket.SOCK_STREAM:
            allow_port_sharing(sock)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            return None
        self.in_use.add((host, port))
        return sock

    def take_held(self, address: Address) -> socket.socket | None:
        """The socket holding a reserved address (RFC 8656 §7.2 RESERVATION-TOKEN)."""
        return self._held.pop(address, None)

    def release(self, address: Address, sock: socket.socket | None = None) -> None:
        """Forget ``address`` and close its socket (or the held one)."""
        self.in_use.discard(address)
        held = self._held.pop(address, None)
        for item in (sock, held):
            if item is not None:
                item.close()


class UdpEndpoint:
    """A non-blocking UDP socket read through loop readiness callbacks, in batches.

    One readiness callback reads until the socket is empty (``EAGAIN``) or ``UDP_BATCH``
    datagrams have been read, whichever comes first: a flooded socket costs one wake-up per
    batch instead of one per datagram, and the bound keeps one busy socket from starving the
    loop's other sockets and timers. The batch goes to ``on_datagrams`` in one call, in arrival
    order (one Python call per batch, not per datagram); an error reported by a read (an ICMP
    port unreachable from an earlier send) skips that read only.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        on_datagrams: Callable[[Datagrams], None],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.address: Address = sock.getsockname()[:2]
        self._on_datagrams = on_datagrams
        self._prepare()
        self._read_one: Callable[[], tuple[bytes, Address]] = self._receive
        if sock.family == socket.AF_INET and type(self)._receive is UdpEndpoint._receive:
            # an IPv4 address is already (host, port): no slicing, no method hop per datagram
            self._read_one = partial(sock.recvfrom, UDP_RECV_SIZE)
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)

    def _prepare(self) -> None:
        """Subclasses set socket options and their own state here, before reading starts."""

    def _readable(self) -> None:
        """Read up to ``UDP_BATCH`` datagrams, then let the owner act on them all at once."""
        read_one = self._read_one
        batch: Datagrams = []
        keep = batch.append
        for _ in range(UDP_BATCH):
            try:
                keep(read_one())
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # e.g. ICMP port unreachable reported on a later recv
        if batch:
            self._on_datagrams(batch)

    def _receive(self) -> tuple[bytes, Address]:
        data, addr = self.sock.recvfrom(UDP_RECV_SIZE)
        return data, addr[:2]

    def sendto(self, data: bytes, addr: Address) -> None:
        """Best effort, like UDP itself: a full send buffer drops the datagram."""
        try:
            self.sock.sendto(data, addr)
        except OSError:
            return

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
