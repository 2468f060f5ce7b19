"""Prometheus metrics of the relay (``delshare relay --metrics-listen HOST:PORT``).

The server feeds every core event to ``RelayMetrics.observe`` and reports relayed bytes;
``serve`` exposes them over HTTP (prometheus-client's own server thread).
"""

from __future__ import annotations

from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from delshare.stun.constants import PROTO_TCP
from delshare.turn.server_types import (
    AllocationCreated,
    AllocationDeleted,
    ConnectionBound,
    ConnectionClosed,
    Output,
    RequestRefused,
)


class RelayMetrics:
    """Allocations, RFC 6062 connections, bytes relayed and error responses."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        reg = self.registry
        self.allocations = Gauge("delshare_relay_allocations", "Active allocations", registry=reg)
        self.allocations_created = Counter(
            "delshare_relay_allocations_created", "Allocations created", ["transport"], registry=reg
        )
        self.connections = Gauge(
            "delshare_relay_tcp_connections", "Bound RFC 6062 connections", registry=reg
        )
        self.bytes = {"udp": 0, "tcp": 0}  # plain ints: the per-datagram path stays lock-free
        reg.register(_BytesCollector(self.bytes))
        self.errors = Counter(
            "delshare_relay_error_responses", "Error responses sent", ["code"], registry=reg
        )
        self._bound: set[int] = set()
        self._server: WSGIServer | None = None

    def observe(self, event: Output) -> None:
        """Update counters from one core event."""
        if isinstance(event, AllocationCreated):
            self.allocations.inc()
            kind = "tcp" if event.transport == PROTO_TCP else "udp"
            self.allocations_created.labels(kind).inc()
        elif isinstance(event, AllocationDeleted):
            self.allocations.dec()
        elif isinstance(event, ConnectionBound):
            self._bound.add(event.conn_id)
            self.connections.inc()
        elif isinstance(event, ConnectionClosed) and event.conn_id in self._bound:
            self._bound.discard(event.conn_id)
            self.connections.dec()
        elif isinstance(event, RequestRefused):
            self.errors.labels(str(event.code) if event.code else "dropped").inc()

    def relayed(self, kind: str, count: int) -> None:
        """Add ``count`` bytes to the ``kind`` (udp/tcp) counter."""
        self.bytes[kind] += count

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP exporter; returns the bound port."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _BytesCollector(Collector):
    """Exposes the relayed-byte totals, read at scrape time."""

    def __init__(self, totals: dict[str, int]) -> None:
        self._totals = totals

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("delshare_relay_bytes", "Bytes relayed", labels=["relay"])
        for kind, total in sorted(self._totals.items()):
            family.add_metric([kind], float(total))
        yield family
