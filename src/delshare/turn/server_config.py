"""Policy of the TURN server core: what an operator configures (auth, peers, limits, lifetimes).

``TurnServer`` (``delshare.turn.server``) reads it; ``delshare relay`` builds it from its flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from delshare.stun.constants import CONNECT_TIMEOUT, CONNECTION_BIND_TIMEOUT, DEFAULT_LIFETIME
from delshare.turn.auth import AuthConfig


@dataclass(frozen=True)
class ServerConfig:
    """Policy of a TURN server: auth, peer filter and the limits of RFC 8656 §7.2 and §21."""

    auth: AuthConfig
    allow_peers: tuple[str, ...] = ()
    deny_peers: tuple[str, ...] = ()  # refused besides the default ranges (allow_peers wins)
    # coturn's external-ip: (PUBLIC, PRIVATE or None) advertised in XOR-RELAYED-ADDRESS for relays
    # bound on PRIVATE, or (None) for every relay of PUBLIC's family; else the bound address
    external_ips: tuple[tuple[str, str | None], ...] = ()
    alternate_servers: tuple[tuple[str, int], ...] = ()  # 300 Try Alternate while draining/full
    udp_relays: bool = True  # REQUESTED-TRANSPORT UDP allowed (else 442)
    tcp_relays: bool = True  # RFC 6062 TCP allocations allowed (else 442)
    max_allocations: int = 1000
    max_allocations_per_user: int = 100
    max_allocations_per_ip: int = 500
    request_rate: float = 1000.0  # requests per second per client IP (0: unlimited)
    request_burst: int = 4000
    max_connections_per_allocation: int = 64
    max_pending_connections: int = 256  # RFC 6062 connections not yet bound, in total
    max_pending_per_allocation: int = 32  # ... per allocation, and per user: one user cannot
    max_pending_per_user: int = 64  # hold the whole global budget (issue 10 item 4)
    retransmit_cache_ttl: float = 40.0  # RFC 8489 §6.3.1: a transaction lasts 39.5 s
    retransmit_cache_entries: int = 8192
    retransmit_cache_per_client: int = 64
    max_permissions_per_allocation: int = 256
    default_lifetime: int = DEFAULT_LIFETIME  # RFC 8656 §3.2
    max_lifetime: int = 3600  # RFC 8656 §3.2 "typically 3600"
    connect_timeout: float = CONNECT_TIMEOUT  # RFC 6062 §5.2
    bind_timeout: float = CONNECTION_BIND_TIMEOUT  # RFC 6062 §5.3, §5.4
    reservation_lifetime: float = 30.0  # RFC 8656 §14.9 "about 30 seconds"
    ipv6_relays: bool = True
    dont_fragment: bool = True  # the adapter can set DF on UDP relays (RFC 8656 §7.2, §18.8)
