"""Per-address limits of the rendezvous server (sans-IO, explicit clock).

Theory of operation: one ``AddressGuard`` per server node counts the TCP connections of each
client address from accept on (``accept``/``release``: beyond twice ``max_connections_per_ip``
they are cut at once, before any WebSocket handshake, so silent connections cannot hold the
node's descriptors), counts the WebSocket connections of each address, and keeps a token bucket
per address. ``connect`` refuses an address already at
``max_connections_per_ip`` and charges one token, as ``message`` does for every frame; an empty
bucket refuses (the adapter then answers with an ``error`` frame and closes). A bucket refills at
``message_rate`` tokens per second up to ``message_burst``. Buckets of addresses with no
connection left are forgotten once full again, so the table stays bounded by the addresses that
were busy in the last ``message_burst / message_rate`` seconds.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

from delshare.pairing.mailbox import MailboxLimits, RendezvousRefused

PRUNE_AT = 1024  # buckets kept before forgetting idle, refilled ones


def address_key(host: str) -> str:
    """The unit limits count by: the IPv4 address, or the /64 of an IPv6 one (one subscriber)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class AddressGuard:
    """Connections and message rate per client address."""

    def __init__(self, limits: MailboxLimits) -> None:
        self.limits = limits
        self.connections: Counter[str] = Counter()
        self.sockets: Counter[str] = Counter()
        self._buckets: dict[str, _Bucket] = {}

    def connect(self, ip: str, now: float) -> None:
        """Admit a new connection from ``ip`` (call ``disconnect`` when it ends) or refuse."""
        limit = self.limits.max_connections_per_ip
        if self.connections[ip] >= limit:
            raise RendezvousRefused(
                f"too many connections from your address (limit {limit}): try again later",
                "ip_connections",
            )
        self.message(ip, now)
        self.connections[ip] += 1

    def accept(self, ip: str) -> bool:
        """Count a new TCP connection from ``ip``; False (cut it) beyond the hard cap."""
        if self.sockets[ip] >= 2 * self.limits.max_connections_per_ip:
            return False
        self.sockets[ip] += 1
        return True

    def release(self, ip: str) -> None:
        """A TCP connection ``accept`` counted has closed."""
        self.sockets[ip] -= 1
        if self.sockets[ip] <= 0:
            del self.sockets[ip]

    def disconnect(self, ip: str) -> None:
        self.connections[ip] -= 1
        if self.connections[ip] <= 0:
            del self.connections[ip]

    def message(self, ip: str, now: float) -> None:
        """Charge one token to ``ip``'s bucket, or refuse when it is empty."""
        rate, burst = self.limits.message_rate, self.limits.message_burst
        if rate <= 0:
            return
        bucket = self._buckets.get(ip)
        if bucket is None:
            if len(self._buckets) >= PRUNE_AT:
                self._prune(now)
            bucket = self._buckets[ip] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            raise RendezvousRefused(
                f"too many requests from your address (limit {rate:g} per second): "
                "slow down and try again",
                "rate",
            )
        bucket.tokens -= 1.0

    def _prune(self, now: float) -> None:
        rate, burst = self.limits.message_rate, self.limits.message_burst
        for ip, bucket in list(self._buckets.items()):
            full = bucket.tokens + (now - bucket.stamp) * rate >= burst
            if full and ip not in self.connections:
                del self._buckets[ip]
