"""Prometheus metrics and health of the relay (``delshare relay --metrics-listen HOST:PORT``).

The server feeds every core event to ``RelayMetrics.observe`` and reports relayed bytes; ``serve``
starts an HTTP server thread with two paths: ``/metrics`` (Prometheus text format) and
``/healthz`` (``200 ready``, or ``503 draining`` once ``set_draining(True)`` was called, so a load
balancer stops sending new clients while live relays finish).

Relayed bytes are counted by transport (``udp``: UDP relays, ``tcp``: RFC 6062 data
connections) and direction (``client_to_peer``, ``peer_to_client``). UDP datagrams are added as
they pass; a running RFC 6062 bridge is read through its ``BridgeMeter`` at scrape time, so the
counters move while a stream flows without costing the splice path anything. Totals of finished
bridges and the live ones are summed under one lock, so the counter never goes backwards.

The normal 401 challenge of a request without credentials, and a 438 stale nonce, are part of
long-term authentication (RFC 8489 §9.2): they are counted as challenges, not as errors. A
request whose credentials are wrong counts in ``delshare_relay_auth_failures_total`` by reason.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from delshare.aio.pipe import BridgeMeter
from delshare.stun.constants import PROTO_TCP
from delshare.turn.server_events import (
    AllocationCreated,
    AllocationDeleted,
    AuthenticationFailed,
    ConnectionBound,
    ConnectionClosed,
    Output,
    RequestRefused,
)

UP = "client_to_peer"
DOWN = "peer_to_client"
CHALLENGE_CODES = (401, 438)  # RFC 8489 §9.2.4: the long-term mechanism's own round trips


class RelayMetrics:
    """Allocations, RFC 6062 connections, bytes relayed, auth failures and error responses."""

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
        self.connections_bound = Counter(
            "delshare_relay_tcp_connections_bound", "RFC 6062 connections bound", registry=reg
        )
        self.bytes = _ByteCounts()
        reg.register(self.bytes)
        self.errors = Counter(
            "delshare_relay_error_responses",
            "Error responses sent, other than authentication challenges (0: dropped)",
            ["code"],
            registry=reg,
        )
        self.challenges = Counter(
            "delshare_relay_auth_challenges",
            "401/438 challenges sent (normal long-term authentication round trips)",
            ["code"],
            registry=reg,
        )
        self.auth_failures = Counter(
            "delshare_relay_auth_failures",
            "Requests with wrong credentials, by reason",
            ["reason"],
            registry=reg,
        )
        self.bandwidth_drops = Counter(
            "delshare_relay_bandwidth_dropped_bytes",
            "UDP bytes dropped over an allocation's bandwidth cap (--max-bps)",
            registry=reg,
        )
        self.draining = Gauge(
            "delshare_relay_draining", "1 while the relay drains (healthz 503)", registry=reg
        )
        self._is_draining = False
        self._bound: set[int] = set()
        # label children looked up once (``labels()`` takes a lock and builds a key each time);
        # a child appears in the exposition once looked up, so each is made on first use
        self._created_by_kind: dict[str, Counter] = {}
        self._challenge_codes: dict[int, Counter] = {}
        self._updates = self._update_table()
        self._server: WSGIServer | None = None

    def observe(self, event: Output) -> None:
        """Update counters from one core event (a dict lookup by its type; most events of an
        allocation's requests count nothing but a challenge)."""
        update = self._updates.get(type(event))
        if update is not None:
            update(event)

    def _update_table(self) -> dict[type, Callable[[Any], None]]:
        return {
            AllocationCreated: self._created,
            AllocationDeleted: self._deleted,
            ConnectionBound: self._connection_bound,
            ConnectionClosed: self._connection_closed,
            AuthenticationFailed: self._auth_failed,
            RequestRefused: self._refused,
        }

    def _created(self, event: AllocationCreated) -> None:
        self.allocations.inc()
        kind = "tcp" if event.transport == PROTO_TCP else "udp"
        _child(self._created_by_kind, self.allocations_created, kind).inc()

    def _deleted(self, _event: AllocationDeleted) -> None:
        self.allocations.dec()

    def _connection_bound(self, event: ConnectionBound) -> None:
        self._bound.add(event.conn_id)
        self.connections.inc()
        self.connections_bound.inc()

    def _connection_closed(self, event: ConnectionClosed) -> None:
        if event.conn_id in self._bound:
            self._bound.discard(event.conn_id)
            self.connections.dec()

    def _auth_failed(self, event: AuthenticationFailed) -> None:
        self.auth_failures.labels(event.reason).inc()

    def _refused(self, event: RequestRefused) -> None:
        if event.code in CHALLENGE_CODES:
            _child(self._challenge_codes, self.challenges, event.code).inc()
        else:
            self.errors.labels(str(event.code)).inc()

    def relayed(self, transport: str, direction: str, count: int) -> None:
        """Add ``count`` bytes to the (``udp``/``tcp``, ``UP``/``DOWN``) counter."""
        self.bytes.add(transport, direction, count)

    def set_draining(self, draining: bool) -> None:
        """``/healthz`` answers 503 ``draining`` while set, 200 ``ready`` otherwise."""
        self._is_draining = draining
        self.draining.set(1 if draining else 0)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP thread (``/metrics``, ``/healthz``); returns the bound port."""
        self._server = serve_http(self.registry, host, port, lambda: self._is_draining)
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _ByteCounts(Collector):
    """``delshare_relay_bytes_total``: finished totals plus live bridges, read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], int] = {
            (transport, direction): 0 for transport in ("udp", "tcp") for direction in (UP, DOWN)
        }
        self._live: dict[int, tuple[BridgeMeter, int]] = {}

    def add(self, transport: str, direction: str, count: int) -> None:
        # A plain dict update: atomic under the GIL, cheap enough for every UDP datagram.
        self._totals[transport, direction] += count

    def track(self, key: int, meter: BridgeMeter, down_prefix: int) -> None:
        """Count a running bridge (client = a, peer = b) until ``finish``; its b→a prefix
        (``down_prefix`` bytes of STUN) is not relayed data."""
        with self._lock:
            self._live[key] = (meter, down_prefix)

    def finish(self, key: int, up: int, down: int) -> None:
        """The bridge ended having moved ``up``/``down`` relayed bytes."""
        with self._lock:
            self._live.pop(key, None)
            self._totals["tcp", UP] += up
            self._totals["tcp", DOWN] += down

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            totals = dict(self._totals)
            for meter, prefix in self._live.values():
                up, down = meter.moved()
                totals["tcp", UP] += up
                totals["tcp", DOWN] += max(0, down - prefix)
        return totals

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "delshare_relay_bytes", "Bytes relayed", labels=["transport", "direction"]
        )
        for (transport, direction), total in sorted(self.snapshot().items()):
            family.add_metric([transport, direction], float(total))
        yield family


def serve_http(
    registry: CollectorRegistry, host: str, port: int, draining: Callable[[], bool]
) -> WSGIServer:
    """An HTTP server thread with ``/metrics`` of ``registry`` and ``/healthz`` (``503
    draining`` while ``draining()``, else ``200 ready``); the relay and a rendezvous-only node
    both use it."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            busy = draining()
            status = "503 Service Unavailable" if busy else "200 OK"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [b"draining\n" if busy else b"ready\n"]
        if path in ("/metrics", "/"):
            body: Iterable[bytes] = make_wsgi_app(registry)(environ, start_response)
            return body
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    server_class = _V6Server if ":" in host else _V4Server
    server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


class _V4Server(ThreadingWSGIServer):
    pass


class _V6Server(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr for every scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class WorkerScrape(Collector):
    """``delshare relay --workers N``: the sum of every worker's metrics, read at scrape time.

    Each worker serves its own registry on loopback; this collector fetches them, adds up the
    samples of the same name and labels (counters, gauges; counters' ``_created`` timestamps are
    left out), and adds per-worker gauges: ``delshare_relay_worker_up``,
    ``delshare_relay_worker_allocations`` and ``delshare_relay_worker_allocations_created``
    (labelled ``worker``), so one can see how the kernel spread the load.
    """

    def __init__(self, targets: Callable[[], list[tuple[int, int]]], timeout: float = 2.0) -> None:
        """``targets()``: (worker index, its metrics port on loopback, 0 while it is down)."""
        self._targets = targets
        self._timeout = timeout

    def _fetch(self, port: int) -> str | None:
        """The worker's metrics text; None if it is down (port 0: not running or not ready)."""
        import urllib.request

        if not port:
            return None

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/metrics", timeout=self._timeout
            ) as answer:
                text: str = answer.read().decode()
                return text
        except OSError:
            return None

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.parser import text_string_to_metric_families

        families: dict[str, Metric] = {}
        sums: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
        per_worker = {
            name: GaugeMetricFamily(f"delshare_relay_worker_{name}", text, labels=["worker"])
            for name, text in (
                ("up", "1 if the worker answered the scrape"),
                ("allocations", "Active allocations per worker"),
                ("allocations_created", "Allocations created per worker since it started"),
            )
        }
        for index, port in self._targets():
            text = self._fetch(port)
            mine = {"up": 0.0 if text is None else 1.0, "allocations": 0.0,
                    "allocations_created": 0.0}  # fmt: skip
            for family in text_string_to_metric_families(text or ""):
                base = family.name.removesuffix("_created")
                if base != family.name and base in families and families[base].type == "counter":
                    continue  # a counter's creation time: no sum of it makes sense
                kept = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    if kept.type == "counter" and sample.name.endswith("_created"):
                        continue
                    key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                    sums[key] = sums.get(key, 0.0) + sample.value
                    if sample.name == "delshare_relay_allocations":
                        mine["allocations"] += sample.value
                    elif sample.name == "delshare_relay_allocations_created_total":
                        mine["allocations_created"] += sample.value
            for name, value in mine.items():
                per_worker[name].add_metric([str(index)], value)
        for (family_name, name, labels), value in sums.items():
            families[family_name].add_sample(name, dict(labels), value)
        yield from families.values()
        yield from per_worker.values()


def serve_workers_http(
    host: str, port: int, targets: Callable[[], list[tuple[int, int]]], draining: Callable[[], bool]
) -> WSGIServer:
    """``serve_http`` of a registry holding only the workers' sums (``WorkerScrape``)."""
    registry = CollectorRegistry()
    registry.register(WorkerScrape(targets))
    return serve_http(registry, host, port, draining)


_Label = TypeVar("_Label", str, int)


def _child(cache: dict[_Label, Counter], counter: Counter, label: _Label) -> Counter:
    """``counter.labels(str(label))``, looked up once per label (``labels()`` takes a lock and
    builds a key each time)."""
    child = cache.get(label)
    if child is None:
        child = cache[label] = counter.labels(str(label))
    return child
