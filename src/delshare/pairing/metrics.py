"""Prometheus metrics of the rendezvous (pairing) service.

Registered on the relay's registry when the relay serves metrics (``delshare relay
--metrics-listen``), so one scrape shows both; a rendezvous without a registry gets a private
one. Names:

- ``delshare_rendezvous_connections``: WebSocket connections open on this node;
- ``delshare_rendezvous_mailboxes``: mailboxes open on this node (with Redis: mailboxes one of
  this node's clients holds a seat of);
- ``delshare_rendezvous_pairings_total``: mailboxes whose second seat was taken on this node;
- ``delshare_rendezvous_refusals_total{reason}``: requests refused, by reason (``busy``,
  ``memory``, ``ip_mailboxes``, ``ip_connections``, ``rate``, ``idle``, ``in_use``, ``expired``,
  ``lost``, ``size``, ``messages``, ``bytes``, ``store``, ``protocol``);
- ``delshare_rendezvous_closes_total{reason}``: connections the server closed after their
  mailbox ended (``peer_left``, ``expired``, ``lost``);
- ``delshare_rendezvous_turn_credentials_total``: TURN credentials handed to clients.
"""

from __future__ import annotations

from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge

from delshare.aio.relay_metrics import serve_http


class Watched(Protocol):
    """What the gauges read when scraped."""

    @property
    def connections(self) -> int: ...

    @property
    def mailbox_count(self) -> int: ...


class RendezvousMetrics:
    """Connections, mailboxes, pairings and refusals of one rendezvous node."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        reg = self.registry
        self.connections = Gauge(
            "delshare_rendezvous_connections", "Rendezvous connections open", registry=reg
        )
        self.mailboxes = Gauge(
            "delshare_rendezvous_mailboxes", "Rendezvous mailboxes open on this node", registry=reg
        )
        self.pairings = Counter(
            "delshare_rendezvous_pairings", "Mailboxes whose two seats were taken", registry=reg
        )
        self.refusals = Counter(
            "delshare_rendezvous_refusals",
            "Rendezvous requests refused, by reason",
            ["reason"],
            registry=reg,
        )
        self.turn_grants = Counter(
            "delshare_rendezvous_turn_credentials",
            "TURN credentials handed to rendezvous clients",
            registry=reg,
        )
        self._server: WSGIServer | None = None
        self.closed = Counter(
            "delshare_rendezvous_closes",
            "Connections closed when their mailbox ended, by reason",
            ["reason"],
            registry=reg,
        )

    def watch(self, server: Watched) -> None:
        """Read the gauges from ``server`` at scrape time."""
        self.connections.set_function(lambda: server.connections)
        self.mailboxes.set_function(lambda: server.mailbox_count)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def serve(self, host: str, port: int) -> int:
        """Start ``/metrics`` and ``/healthz`` (always ``200 ready``: a rendezvous-only node
        does not drain) for this registry; the bound port."""
        self._server = serve_http(self.registry, host, port, lambda: False)
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop the exporter ``serve`` started, if any."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
