"""Which peer addresses a relay may talk to (RFC 8656 §21.3; docs/protocol.md §5.4).

A relay that connects anywhere is an open proxy into its own network. By default only globally
routable unicast addresses are allowed: loopback, RFC 1918, 100.64/10, link-local (incl.
169.254.169.254), unique-local, multicast, reserved, documentation and unspecified addresses are
refused, and so are IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms of them
(coturn CVE-2020-26262 was a loopback bypass through ``0.0.0.0``/``::``). ``allow`` opens ranges;
``deny`` closes more (coturn's denied-peer-ip; as in coturn, ``allow`` wins over ``deny``).

The relay's own addresses (its listeners, every address of its host when it listens on a
wildcard, the advertised relay addresses) are refused too even when they are global, unless an
``allow`` range holds them: a Connect or Send to its own TURN port would be TURN through itself,
and other ports reach services on the relay host (issue 10 item 12). Ports inside the relay range
stay allowed on those addresses, because they are other allocations' relayed addresses, where
two clients of one relay meet.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPAT = ipaddress.IPv6Network("::/96")
_MEMO_SIZE = 4096


def parse_cidr(text: str) -> IPNetwork:
    """A network from ``a.b.c.d/n`` or a bare address; raise ValueError on garbage."""
    return ipaddress.ip_network(text.strip(), strict=False)


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address hidden in an IPv4-mapped, -compatible, NAT64 or 6to4 IPv6 address."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class PeerFilter:
    """Decide whether a peer IP may be relayed to or accepted from."""

    def __init__(
        self, allow: Iterable[str | IPNetwork] = (), deny: Iterable[str | IPNetwork] = ()
    ) -> None:
        self.allow: list[IPNetwork] = [
            parse_cidr(item) if isinstance(item, str) else item for item in allow
        ]
        self.deny: list[IPNetwork] = [
            parse_cidr(item) if isinstance(item, str) else item for item in deny
        ]
        self.own: frozenset[IPAddress] = frozenset()
        self.relay_ports: range = range(0)
        self._own_hosts: dict[str, bool] = {}

    def set_own(self, addresses: Iterable[str], relay_ports: range) -> None:
        """The relay's own IPs (refused as peers) and its relayed ports (allowed on them)."""
        self.own = frozenset(ip for ip in map(_parse_ip, addresses) if ip is not None)
        self.relay_ports = relay_ports
        self._own_hosts.clear()

    def is_own(self, host: str, port: int | None) -> bool:
        """Whether ``host`` (and ``port``, None: any port) is the relay itself, not allowed by
        a range; a port in the relay range is another allocation, not the relay.

        It sits on the per-datagram path of Send indications, so the answer per host is memoised.
        """
        if not self.own:
            return False
        own = self._own_hosts.get(host)
        if own is None:
            own = self._own_host(host)
            if len(self._own_hosts) >= _MEMO_SIZE:
                self._own_hosts.clear()
            self._own_hosts[host] = own
        return own and (port is None or port not in self.relay_ports)

    def _own_host(self, host: str) -> bool:
        ip = _parse_ip(host)
        if ip is None:
            return False
        inner = embedded_ipv4(ip)
        if ip not in self.own and (inner is None or inner not in self.own):
            return False
        return not self._allowed_by_flag(ip, inner)

    def allowed_peer(self, host: str, port: int | None) -> bool:
        """``allowed`` and not one of the relay's own addresses (RFC 8656 §21.3)."""
        return self.allowed(host) and not self.is_own(host, port)

    def _allowed_by_flag(self, ip: IPAddress, inner: ipaddress.IPv4Address | None) -> bool:
        """``ip``, or the IPv4 address embedded in it, is inside an ``allow`` range."""
        return _inside(ip, self.allow) or (inner is not None and _inside(inner, self.allow))

    def allowed(self, host: str) -> bool:
        """True when ``host`` is a global unicast address or inside an ``allow`` range."""
        ip = _parse_ip(host)
        if ip is None:
            return False
        inner = embedded_ipv4(ip)
        if self._allowed_by_flag(ip, inner):
            return True
        if _inside(ip, self.deny) or (inner is not None and _inside(inner, self.deny)):
            return False
        if inner is not None:
            return _is_public(inner)
        return _is_public(ip)


def _parse_ip(host: str) -> IPAddress | None:
    """``host`` as an IP address (a ``%zone`` suffix dropped), or None if it is not one."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _inside(ip: IPAddress, networks: list[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def _is_public(ip: IPAddress) -> bool:
    return ip.is_global and not ip.is_multicast and not ip.is_reserved
