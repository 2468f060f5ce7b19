"""Candidates: the addresses at which a peer may reach us, and the listener behind them.

Theory of operation. A side gathers three kinds of candidates (the vocabulary of ICE, RFC 8445
§5.1.1, applied to TCP):

- ``host``: every interface address (IPv4 and IPv6, loopback included so that same-machine
  transfers work), each paired with the port of one listening TCP socket bound to all interfaces;
- ``srflx``: the server-reflexive address a STUN Binding on the TURN server saw (RFC 8489 §5);
  over TCP its port is that of the connection to the server, so it mostly serves to learn the
  public IP the peer must permit on its allocation;
- ``relay``: the relayed transport address of a TURN TCP allocation (RFC 6062 §5.1), labelled
  with the TURN server so that a link through it can be described.

Candidates travel as JSON objects through the paired channel; :meth:`Candidate.from_wire` treats
the peer's list as hostile input (types, sizes, address syntax).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from delshare.address import display_address
from delshare.errors import DelshareError
from delshare.fields import Fields
from delshare.portable import PORTABLE

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = [
    "MAX_CANDIDATES",
    "Candidate",
    "CandidateError",
    "Listener",
    "host_addresses",
    "host_candidates",
    "parse_candidates",
    "start_listener",
]

Kind = Literal["host", "srflx", "relay"]
MAX_CANDIDATES = 64
_KINDS: tuple[Kind, ...] = ("host", "srflx", "relay")
_MAX_HOST = 64  # an IPv6 literal has at most 45 characters


class CandidateError(DelshareError):
    """The peer sent a malformed candidate list."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One address at which the peer may be reached; ``server`` labels relayed ones."""

    kind: Kind
    host: str
    port: int
    server: str = ""

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        return display_address(self.host, self.port)

    def to_wire(self) -> dict[str, object]:
        wire: dict[str, object] = {"kind": self.kind, "host": self.host, "port": self.port}
        if self.server:
            wire["server"] = self.server
        return wire

    @classmethod
    def from_wire(cls, obj: object) -> Candidate:
        """Parse one peer candidate; raise CandidateError on anything unexpected."""
        fields = Fields(obj, CandidateError, "candidate")
        kind = fields.one_of("kind", _KINDS)
        host = fields.text("host", max_len=_MAX_HOST)
        port = fields.integer("port", 1, 65535)
        server = fields.text("server", max_len=300, default="")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise CandidateError("candidate host is not an IP address") from None
        if ip.is_multicast or ip.is_unspecified:
            raise CandidateError(f"unusable candidate address {host}")
        return cls(kind, ip.compressed, port, server)


def parse_candidates(obj: object) -> list[Candidate]:
    """Parse the peer's candidate list (bounded, duplicates dropped, order kept)."""
    if not isinstance(obj, list) or len(obj) > MAX_CANDIDATES:
        raise CandidateError(f"candidates must be a list of at most {MAX_CANDIDATES}")
    return list(dict.fromkeys(Candidate.from_wire(item) for item in obj))


# --- interface addresses -------------------------------------------------------------------


def _getifaddrs() -> list[str]:
    """Addresses of interfaces that are up, via libc ``getifaddrs(3)``.

    ctypes is imported here, not at start-up; libc is reached through the process's own
    symbols (``dlopen(NULL)``), as ``ctypes.util.find_library`` would spawn ``ldconfig``.
    """
    import ctypes

    class Sockaddr(ctypes.Structure):
        _fields_ = [("family", ctypes.c_uint16), ("data", ctypes.c_uint8 * 26)]

    class Ifaddrs(ctypes.Structure):
        pass

    Ifaddrs._fields_ = [
        ("next", ctypes.POINTER(Ifaddrs)),
        ("name", ctypes.c_char_p),
        ("flags", ctypes.c_uint),
        ("addr", ctypes.POINTER(Sockaddr)),
        ("netmask", ctypes.c_void_p),
        ("broadaddr", ctypes.c_void_p),
        ("data", ctypes.c_void_p),
    ]
    libc = ctypes.CDLL(None, use_errno=True)
    head = ctypes.POINTER(Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        raise OSError(ctypes.get_errno(), "getifaddrs failed")
    found: list[str] = []
    try:
        node = head
        while node:
            entry = node.contents
            if entry.addr and entry.flags & _IFF_UP:
                sa = entry.addr.contents
                address = _decode_sockaddr(sa.family, bytes(sa.data))
                if address is not None:
                    found.append(address)
            node = entry.next
    finally:
        libc.freeifaddrs(head)
    return found


_IFF_UP = 0x1


def _decode_sockaddr(family: int, raw: bytes) -> str | None:
    """The address in a ``sockaddr`` (family field, then the bytes after it)."""
    if sys.platform != "linux":  # BSD layout: sa_len (1 byte) then sa_family (1 byte)
        family = family >> 8 if sys.byteorder == "little" else family & 0xFF
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[2:6])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[6:22])
    return None


def _resolver_addresses() -> list[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


def _usable(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    # Link-local IPv6 needs the peer's scope id, which it cannot know.
    return not (ip.is_multicast or ip.is_unspecified or (ip.version == 6 and ip.is_link_local))


def host_addresses(chosen: Sequence[IPAddress] = ()) -> list[str]:
    """Every usable local interface address, IPv4 first, loopback included.

    ``chosen`` (the ``DELSHARE_HOST_ADDRESSES`` setting, read by the command line:
    :func:`delshare.config.chosen_host_addresses`) replaces the gathered list, in its order: for
    hosts that must advertise only some interfaces, and for tests that must stay on loopback.
    """
    if chosen:
        return [address.compressed for address in chosen]
    found: list[str] | None = None
    if not PORTABLE:  # portable mode: getifaddrs not used
        with contextlib.suppress(OSError, AttributeError, TypeError):  # no getifaddrs (Windows)
            found = _getifaddrs()
    if found is None:  # resolver, probing
        found = ["127.0.0.1", "::1", *_resolver_addresses(), *_probed_addresses()]
    unique = dict.fromkeys(ipaddress.ip_address(a).compressed for a in found if _usable(a))
    return sorted(unique, key=lambda a: ipaddress.ip_address(a).version)


def _probed_addresses() -> list[str]:
    """The source address of the default route, per family: ``connect`` on a UDP socket picks
    it without sending anything (to documentation addresses, RFC 5737 / RFC 3849)."""
    found = []
    for family, target in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 9))
                found.append(probe.getsockname()[0])
        except OSError:
            continue
    return found


def host_candidates(addresses: Iterable[str], port: int, *, ipv6: bool) -> list[Candidate]:
    """One host candidate per address on the listener's ``port`` (IPv6 only if it listens)."""
    return [
        Candidate("host", a, port)
        for a in addresses
        if ipv6 or ipaddress.ip_address(a).version == 4
    ]


# --- the listener --------------------------------------------------------------------------

Accepted = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Listener:
    """One listening TCP socket on all interfaces; accepted streams go to :attr:`accepted`."""

    def __init__(self, server: asyncio.Server, port: int, ipv6: bool) -> None:
        self._server = server
        self.port = port
        self.ipv6 = ipv6
        self.accepted: asyncio.Queue[Accepted] = asyncio.Queue(maxsize=64)

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.accepted.put_nowait((reader, writer))
        except asyncio.QueueFull:
            writer.close()

    def close(self) -> None:
        """Stop accepting; streams already accepted are left to their owners."""
        self._server.close()
        while not self.accepted.empty():
            self.accepted.get_nowait()[1].close()


def _dual_stack_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        _reuse_address(sock)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
    except OSError:
        sock.close()
        raise
    return sock


def _listening_socket(port: int) -> tuple[socket.socket, bool]:
    """A socket bound to all addresses: dual-stack when IPv6 works, else IPv4 only."""
    if socket.has_ipv6:
        with contextlib.suppress(OSError):
            return _dual_stack_socket(port), True
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _reuse_address(sock)
    sock.bind(("0.0.0.0", port))
    return sock, False


def _reuse_address(sock: socket.socket) -> None:
    """Listen again on a port whose old connections linger (a reconnecting ticket receiver);
    not on Windows, where SO_REUSEADDR would let another socket take the port."""
    if sys.platform != "win32":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


async def start_listener(port: int = 0) -> Listener:
    """Listen on every interface (both families when possible) on ``port`` (0: any)."""
    sock, ipv6 = _listening_socket(port)
    holder: list[Listener] = []
    server = await asyncio.start_server(
        lambda r, w: holder[0]._on_connection(r, w), sock=sock, limit=1 << 20
    )
    listener = Listener(server, int(sock.getsockname()[1]), ipv6)
    holder.append(listener)
    return listener
