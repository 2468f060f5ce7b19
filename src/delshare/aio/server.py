"""The asyncio TURN server: listeners, relayed sockets and timers around ``TurnServer``.

Theory of operation: every input (a datagram, a stream frame, an accepted peer, a finished
connect) is handed to the sans-IO core with the wall clock, then ``_flush`` executes the core's
commands in order and logs its events, and re-arms the one timer. UDP sockets, TCP listeners
and plain TCP client connections are read through readiness callbacks; each TLS client
connection has one reader task. RFC 6062 peer sockets
are never read before ConnectionBind (the kernel's buffers and TCP flow control hold the peer
back); after it, ``delshare.aio.pipe.bridge`` moves the bytes (splice on Linux).

Start one in-process with ``await start_relay(RelayConfig(...))``; ``RunningRelay.close()``
stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from delshare.address import format_address
from delshare.aio.pipe import BridgeMeter, BridgeStats, Limits, bridge
from delshare.aio.relay_metrics import DOWN, UP, RelayMetrics
from delshare.aio.relay_sockets import (
    Datagrams,
    PortPool,
    UdpEndpoint,
    allow_port_sharing,
    host_addresses,
    is_unspecified,
    new_socket,
    route_source,
    set_dont_fragment,
)
from delshare.aio.server_conn import ClientConnection
from delshare.aio.udp_listener import udp_listener
from delshare.errors import StunDecodeError
from delshare.portable import release_free_memory
from delshare.stun.attributes import Address
from delshare.stun.constants import PROTO_TCP, ErrorCode
from delshare.text import printable
from delshare.turn.ratelimit import BandwidthPool, TokenBucket
from delshare.turn.server import TurnServer
from delshare.turn.server_config import ServerConfig
from delshare.turn.server_events import (
    TCP,
    TLS,
    UDP,
    AllocationCreated,
    AllocationDeleted,
    AllocationRefreshed,
    AuthenticationFailed,
    BindDataConnection,
    ChannelBound,
    CloseClientConnection,
    ClosePeerConnection,
    CloseRelay,
    ConnectionBound,
    ConnectionClosed,
    ConnectToPeer,
    FiveTuple,
    OpenRelay,
    Output,
    PeerConnected,
    PermissionCreated,
    ReleaseReservation,
    RequestAnswered,
    RequestRefused,
    SendToClient,
    SendToPeer,
)

log = logging.getLogger("delshare.relay")
LISTEN_BACKLOG = 512  # TCP and TLS listeners alike
LOG_EVERY = 10.0  # seconds between two lines about the same recurring failure
TRIM_AFTER = 1.0  # seconds after the last TLS handshake ends before freed memory is returned
PEER_ACCEPT_BATCH = 16  # peer connections accepted per readiness callback of a relay listener
PEER_ACCEPT_RETRY = 0.1  # seconds a relay listener rests after an accept error (EMFILE)
CLIENT_ACCEPT_BATCH = 16  # client connections accepted per readiness callback of a listener
CLIENT_ACCEPT_RETRY = 0.1  # seconds a TURN listener rests after an accept error (EMFILE)


class LogThrottle:
    """One warning line per ``every`` seconds for a recurring failure, with a count.

    At the descriptor limit every accept fails (EMFILE) as fast as the loop retries; logging
    each one would flood the log (issue 10 item 12). The first occurrence is logged at once,
    later ones are counted and reported with the next line due.
    """

    def __init__(self, every: float = LOG_EVERY) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._count: Counter[str] = Counter()

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        self._count[key] += 1
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            return
        count = self._count.pop(key)
        self._last[key] = now
        suffix = f" ({count} times in the last {self.every:.0f} s)" if last is not None else ""
        log.warning(message + suffix, *args)


# Destinations whose route gives a host's main address of a family; a route lookup sends nothing.
_ROUTE_PROBE = {4: "192.0.2.1", 6: "2001:db8::1"}  # RFC 5737, RFC 3849 documentation addresses


@dataclass(frozen=True)
class RelayConfig:
    """Where to listen and which relay ports to use; ``server`` holds the protocol policy."""

    server: ServerConfig
    listen: tuple[Address, ...] = (("0.0.0.0", 3478),)
    tls_listen: tuple[Address, ...] = ()
    cert: str | None = None
    key: str | None = None
    min_port: int = 49152
    max_port: int = 65535
    optional_listen: tuple[Address, ...] = field(default=())  # tried, skipped if unavailable
    metrics_listen: Address | None = None  # Prometheus exporter
    idle_timeout: float = 120.0  # close TCP/TLS connections idle this long without allocation
    max_bps: int = 0  # coturn's max-bps: bytes/s per allocation and direction (0: uncapped)
    bps_capacity: int = 0  # coturn's bps-capacity: bytes/s handed out in total (0: unlimited)
    relay_ips: tuple[str, ...] = ()  # coturn's relay-ip: local addresses relays bind to
    udp: bool = True  # UDP listeners on ``listen``
    tcp: bool = True  # TCP listeners on ``listen``
    tls_handshake_timeout: float = 10.0  # a TLS client must finish its handshake in this time
    max_tls_handshakes: int = 256  # TLS handshakes in progress at once, in all ...
    max_tls_handshakes_per_ip: int = 16  # ... and from one client IP (issue 10 item 3)


_ChannelRoute = tuple[Callable[[bytes, Address], int], Address, float, "TokenBucket | None"]
"""A client's channel: the relay socket's ``sendto``, the peer, valid until (wall clock), the
allocation's client→peer cap."""
_PeerRoute = tuple[FiveTuple, bytes, float]
"""A peer's channel: the client's five-tuple, the channel number (2 bytes), valid until."""


@dataclass
class _Relay:
    """The adapter side of one allocation: its relayed socket or listener."""

    alloc_id: int
    bind_address: Address
    udp: UdpEndpoint | None = None
    listener: socket.socket | None = None
    accept_retry: asyncio.TimerHandle | None = None  # a listener resting after an accept error
    limits: Limits = (None, None)  # the allocation's caps: client→peer, peer→client


@dataclass
class _PeerLink:
    """The adapter side of one RFC 6062 connection."""

    conn_id: int
    alloc_id: int
    sock: socket.socket | None = None
    task: asyncio.Task[None] | None = None
    client: ClientConnection | None = None


class RelayServer:
    """Owns the sockets; one per process. Use ``start_relay`` to create and start it."""

    def __init__(
        self,
        config: RelayConfig,
        core: TurnServer | None = None,
        listeners: dict[tuple[str, Address], socket.socket] | None = None,
    ) -> None:
        self.config = config
        self.core = core or TurnServer(config.server)
        self.ports = PortPool(config.min_port, config.max_port)
        self.addresses: list[tuple[str, Address]] = []
        self.bytes_relayed = 0
        self.metrics = RelayMetrics()
        self.metrics_port: int | None = None
        self.bandwidth = BandwidthPool(config.bps_capacity)
        self._caps: dict[int, tuple[int, Limits]] = {}  # alloc_id → reserved rate, its buckets
        self._loop = asyncio.get_running_loop()
        self._udp_listeners: dict[Address, UdpEndpoint] = {}
        self._tcp_listeners: list[socket.socket] = []
        self._accept_rests: dict[socket.socket, asyncio.TimerHandle] = {}  # resting after EMFILE
        self._servers: list[asyncio.Server] = []
        self._clients: dict[FiveTuple, ClientConnection] = {}
        self._relays: dict[int, _Relay] = {}
        self._extra_relays: dict[int, _Relay] = {}  # dual allocations' second (IPv6) relays
        self._links: dict[int, _PeerLink] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False
        self._tls: ssl.SSLContext | None = None
        self._idle = asyncio.Event()
        self._relay_turn = 0
        self._handshakes = 0
        self._handshakes_per_ip: Counter[str] = Counter()
        self._throttle = LogThrottle()
        self._trim: asyncio.TimerHandle | None = None
        # UDP fast paths (the core's channel_route / peer_route), forgotten on every CloseRelay
        # (per listener: (client, channel number) → route)
        self._channel_routes: dict[Address, dict[tuple[Address, int], _ChannelRoute]] = {}
        self._peer_routes: dict[tuple[int, Address], _PeerRoute] = {}
        # --workers N (delshare.aio.workers): listeners bound by the parent, by (kind, address
        # as configured); which worker owns a ConnectionBind frame's CONNECTION-ID (None: this
        # one) and how to hand it the connection
        self._inherited = dict(listeners or {})
        self.bind_owner: Callable[[bytes], int | None] | None = None
        self.hand_over: Callable[[ClientConnection], None] | None = None
        self._commands = self._command_table()

    # -- start and stop ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every listener; OSError (e.g. port busy) leaves nothing open."""
        try:
            for host, port in self.config.listen:
                self._listen_plain(host, port)
            for host, port in self.config.optional_listen:
                try:
                    self._listen_plain(host, port)
                except OSError as exc:
                    log.warning("not listening on %s:%d: %s", host, port, exc.strerror or exc)
            for host, port in self.config.tls_listen:
                await self._listen_tls(host, port)
            if self.config.metrics_listen is not None:
                self.metrics_port = self.metrics.serve(*self.config.metrics_listen)
            self._deny_own_addresses()
        except BaseException:
            await self.close()
            raise

    def _deny_own_addresses(self) -> None:
        """Tell the core which peers are the relay itself (issue 10 item 12): the listening
        addresses, every host address if one of them is a wildcard, the relay addresses."""
        hosts = {address[0] for _kind, address in self.addresses}
        if any(is_unspecified(host) for host in hosts):
            hosts |= host_addresses()
        hosts |= set(self.config.relay_ips)  # where relays bind (coturn's relay-ip) ...
        for public, private in self.core.config.external_ips:  # ... and what they advertise
            hosts |= {public} | ({private} if private else set())
        ports = range(self.config.min_port, self.config.max_port + 1)
        self.core.peer_filter.set_own(sorted(hosts), ports)

    def _listen_plain(self, host: str, port: int) -> None:
        """UDP and TCP on the same port; port 0 picks one free for both (a few tries)."""
        for attempt in range(16):
            try:
                if self._inherited:
                    tcp = self._inherited.pop((TCP, (host, port)), None)
                    udp = self._inherited.pop((UDP, (host, port)), None)
                    if tcp is None and udp is None:
                        raise OSError(f"no inherited listener on {format_address(host, port)}")
                    break
                tcp, udp = _bind_pair(host, port, self.config.tcp, self.config.udp)
                break
            except OSError:
                if port != 0 or attempt == 15:
                    raise
        some = tcp or udp
        assert some is not None
        bound: Address = some.getsockname()[:2]
        if udp is not None:
            handler = self._client_datagram_handler(bound)
            self._udp_listeners[bound] = udp_listener(self._loop, udp, handler)
            self.addresses.append((UDP, bound))
        if tcp is not None:
            self._tcp_listeners.append(tcp)
            self._watch_clients(tcp)
            self.addresses.append((TCP, bound))

    async def _listen_tls(self, host: str, port: int) -> None:
        """A TLS listener with the TCP listener's backlog; handshakes bounded in number and time.

        Each TLS connection costs buffers from its first byte (the SSL object, asyncio's read
        buffer), so handshakes in progress are capped in all and per client IP (beyond, the
        connection is closed at once) and must finish within ``tls_handshake_timeout``
        (issue 10 item 3).
        """
        if not self.config.cert or not self.config.key:
            raise ValueError("--tls-listen needs --cert and --key")
        if self._tls is None:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(self.config.cert, self.config.key)
        context = self._tls
        listener = self._inherited.pop((TLS, (host, port)), None) or bind_stream(host, port)
        self._tcp_listeners.append(listener)
        self._watch_clients(listener, context)
        self.addresses.append((TLS, listener.getsockname()[:2]))

    # -- drain and reload -------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self.core.draining

    def start_draining(self) -> None:
        """New allocations go to an alternate or get 508; listeners stay open for live ones
        (a new RFC 6062 data connection arrives on them) until ``close``."""
        self.core.start_draining()
        self.metrics.set_draining(True)
        self._flush()

    async def wait_idle(self) -> None:
        """Return once draining and no allocation or peer connection is left."""
        self._check_idle()
        await self._idle.wait()

    def _check_idle(self) -> None:
        if self.core.draining and not self.core.allocations and not self._links:
            self._idle.set()

    def reconfigure(self, config: RelayConfig) -> list[str]:
        """Apply a reloaded config to new requests; live relays are untouched.

        Loads a new certificate into the TLS context (new handshakes use it), then swaps the
        core's policy. Returns the settings that differ but need a restart (listeners, ports).
        Raises OSError/ValueError (nothing applied) if the certificate cannot be loaded.
        """
        if self._tls is not None and config.cert and config.key:
            probe = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                probe.load_cert_chain(config.cert, config.key)
            except ssl.SSLError as exc:
                raise ValueError(f"certificate {config.cert}: {exc.reason or exc}") from exc
            self._tls.load_cert_chain(config.cert, config.key)
        fixed = ("listen", "optional_listen", "tls_listen", "min_port", "max_port",
                 "metrics_listen", "relay_ips", "udp", "tcp")  # fmt: skip
        restart = [name for name in fixed if getattr(config, name) != getattr(self.config, name)]
        self.config = dataclasses.replace(
            config, **{name: getattr(self.config, name) for name in fixed}
        )
        self.core.reconfigure(config.server)
        self._deny_own_addresses()
        self._forget_routes()
        self.bandwidth.capacity = config.bps_capacity  # live allocations keep their share
        self._flush()
        return restart

    async def close(self) -> None:
        """Delete every allocation and close every socket."""
        if self._closed:
            return
        self._closed = True
        self.core.close()
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
        if self._trim is not None:
            self._trim.cancel()
        for endpoint in self._udp_listeners.values():
            endpoint.close()
        for handle in self._accept_rests.values():
            handle.cancel()
        for sock in self._tcp_listeners:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        for server in self._servers:
            server.close()
        for client in list(self._clients.values()):
            client.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self.metrics.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- client input -----------------------------------------------------------------------------

    def _client_datagram_handler(self, server: Address) -> Callable[[Datagrams], None]:
        routes = self._channel_routes.setdefault(server, {})
        clock = time.time

        def on_datagrams(batch: Datagrams) -> None:
            # The per-datagram path of case 4: a dict lookup, a slice, one sendto; the clock
            # is read and the relayed bytes are counted once per read batch.
            now, up = clock(), 0
            for data, client in batch:
                if len(data) >= 4 and data[0] >> 6 == 0b01:  # ChannelData (RFC 8656 §12.5)
                    number = (data[0] << 8) | data[1]
                    route = routes.get((client, number))
                    if route is None or route[2] <= now:
                        route = self._route_channel(server, client, number, now)
                    if route is not None:
                        length = (data[2] << 8) | data[3]
                        # a short ChannelData is discarded, as is one over the allocation's cap
                        if len(data) >= 4 + length and (
                            route[3] is None or self._within(route[3], length)
                        ):
                            up += length
                            try:
                                route[0](data[4 : 4 + length], route[1])
                            except OSError:
                                continue  # best effort, like UDP (a full buffer, an ICMP error)
                        continue
                self.core.receive(FiveTuple(UDP, client, server), data, now)
                # A request may end the allocation (Refresh 0): act on it before the next
                # datagram of the batch, so no cached route outlives it by even one datagram.
                self._flush()
            self._end_batch(up, 0)

        return on_datagrams

    def _end_batch(self, up: int, down: int) -> None:
        """After a UDP read batch: count its relayed bytes, then act on the core's commands."""
        if up or down:
            self.bytes_relayed += up + down
            self.metrics.relayed("udp", UP, up)
            self.metrics.relayed("udp", DOWN, down)
        self._flush()

    def _route_channel(
        self, server: Address, client: Address, number: int, now: float
    ) -> _ChannelRoute | None:
        """The core's route for a channel, remembered until it may change (no per-datagram
        trip through the core: about a quarter of the relay's CPU per datagram)."""
        found = self.core.channel_route(FiveTuple(UDP, client, server), number, now)
        if found is None:
            return None
        alloc_id, peer, until = found
        endpoint, bucket = self._udp_relay_for(alloc_id, peer)
        if endpoint is None:
            return None
        route = (endpoint.sock.sendto, peer, until, bucket)
        self._channel_routes.setdefault(server, {})[(client, number)] = route
        return route

    def _forget_routes(self) -> None:
        for routes in self._channel_routes.values():
            routes.clear()
        self._peer_routes.clear()

    def _watch_clients(self, listener: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        """Accept clients from a readiness callback on the listener (like a relay listener's:
        no future and no epoll registration per accepted connection)."""
        if not self._closed and listener.fileno() >= 0:
            bound: Address = listener.getsockname()[:2]
            local = None if is_unspecified(bound[0]) else bound  # else: each connection's own
            self._loop.add_reader(listener.fileno(), self._accept_clients, listener, tls, local)

    def _accept_clients(
        self, listener: socket.socket, tls: ssl.SSLContext | None, local: Address | None
    ) -> None:
        """Accept what the backlog holds (bounded per call); errors (EMFILE at the descriptor
        limit) are logged throttled and rest the listener 0.1 s. A listener bound to one
        address gives every connection that local address (no ``getsockname`` each), and
        ``accept`` gives the client's (no ``getpeername``)."""
        kind = TLS if tls else TCP
        for _ in range(CLIENT_ACCEPT_BATCH):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self._closed or listener.fileno() < 0:
                    return
                self._throttle.warning("accept", "accept failed: %s", exc)
                self._loop.remove_reader(listener.fileno())
                self._accept_rests[listener] = self._loop.call_later(
                    CLIENT_ACCEPT_RETRY, self._rested, listener, tls
                )
                return
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                five = FiveTuple(kind, peer[:2], local or sock.getsockname()[:2])
            except OSError:  # gone before we looked (ECONNRESET)
                sock.close()
                continue
            if tls is not None:
                self._start_tls(sock, five, tls)
            else:
                self._serve_socket(ClientConnection(five, sock, self._on_frame))

    def _rested(self, listener: socket.socket, tls: ssl.SSLContext | None) -> None:
        self._accept_rests.pop(listener, None)
        self._watch_clients(listener, tls)

    def _start_tls(self, sock: socket.socket, five: FiveTuple, context: ssl.SSLContext) -> None:
        ip = five.client[0]
        config = self.config
        if (
            self._handshakes >= config.max_tls_handshakes
            or self._handshakes_per_ip[ip] >= config.max_tls_handshakes_per_ip
        ):
            sock.close()
            self._throttle.warning("tls", "TLS handshakes over the limit: closed one from %s", ip)
            return
        self._handshakes += 1
        self._handshakes_per_ip[ip] += 1
        self._spawn(self._tls_handshake(sock, five, context))

    async def _tls_handshake(
        self, sock: socket.socket, five: FiveTuple, context: ssl.SSLContext
    ) -> None:
        """Server side of the handshake, then the client's STUN stream (RFC 8656 §3.1)."""
        reader = asyncio.StreamReader(limit=2**16, loop=self._loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=self._loop)
        try:
            transport, _ = await self._loop.connect_accepted_socket(
                lambda: protocol,
                sock,
                ssl=context,
                ssl_handshake_timeout=self.config.tls_handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            log.debug("TLS handshake with %s:%d failed: %s", *five.client, exc)
            return  # the transport closed the socket
        finally:
            self._handshake_done(five.client[0])
        writer = asyncio.StreamWriter(transport, protocol, reader, self._loop)
        client = ClientConnection(five, (reader, writer), self._on_frame)
        with contextlib.suppress(asyncio.CancelledError):  # teardown of its data connection
            await self._serve_client(client)

    def _handshake_done(self, ip: str) -> None:
        self._handshakes -= 1
        self._handshakes_per_ip[ip] -= 1
        if self._handshakes_per_ip[ip] <= 0:
            del self._handshakes_per_ip[ip]
        if self._handshakes == 0 and self._trim is None:  # once a burst is over, not per client
            self._trim = self._loop.call_later(TRIM_AFTER, self._trim_memory)

    def _trim_memory(self) -> None:
        self._trim = None
        if self._handshakes == 0:
            release_free_memory()

    def adopt(self, five: FiveTuple, sock: socket.socket, initial: bytes) -> None:
        """Serve a connection another worker accepted and read ``initial`` from."""
        self._serve_socket(ClientConnection(five, sock, self._on_frame), initial)

    def _serve_socket(self, client: ClientConnection, initial: bytes = b"") -> None:
        """A plain TCP client: frames from a readiness callback until ``_client_ended``."""
        self._clients[client.five] = client
        client.start(lambda: self._idle_timeout(client.five), self._client_ended, initial)

    def _client_ended(self, client: ClientConnection, error: BaseException | None) -> None:
        """The end of a plain TCP client's frames, as ``_serve_client`` for TLS."""
        if error is not None and not isinstance(error, (OSError, StunDecodeError)):
            log.error("connection %s:%d failed", *client.five.client, exc_info=error)
        self._client_done(client)
        if client.handover is not None and self.hand_over is not None:
            self.hand_over(client)
        elif client.bind is not None:
            self._spawn(self._run_data_connection(client))

    async def _serve_client(self, client: ClientConnection) -> None:
        """A TLS client: frames until EOF, or until a ConnectionBind turns the connection into
        a pipe (or names another worker's connection: ``hand_over`` passes it on)."""
        self._clients[client.five] = client
        try:
            with contextlib.suppress(OSError, StunDecodeError, ssl.SSLError):
                await client.read_frames(lambda: self._idle_timeout(client.five))
        except Exception:  # a bug must cost one connection, not the server
            log.exception("connection %s:%d failed", *client.five.client)
        finally:
            self._client_done(client)
        if client.handover is not None and self.hand_over is not None:
            self.hand_over(client)
        elif client.bind is not None:
            await self._run_data_connection(client)

    def _client_done(self, client: ClientConnection) -> None:
        self._clients.pop(client.five, None)
        if client.bind is None and client.handover is None:
            client.close()
            self.core.client_closed(client.five, time.time())
            self._flush()

    def _idle_timeout(self, five: FiveTuple) -> float | None:
        """Connections without an allocation may idle only so long (binding, probing)."""
        return None if five in self.core.allocations else self.config.idle_timeout

    def _on_frame(self, client: ClientConnection, frame: bytes) -> None:
        if self.bind_owner is not None and frame[:2] == b"\x00\x0b":  # ConnectionBind request
            owner = None if client.five in self.core.allocations else self.bind_owner(frame)
            if owner is not None:  # its CONNECTION-ID names another worker (RFC 6062 §5.4)
                client.handover = (owner, frame)
                return
        self.core.receive(client.five, frame, time.time())
        self._flush()

    # -- RFC 6062 data connections ----------------------------------------------------------------

    async def _run_data_connection(self, client: ClientConnection) -> None:
        assert client.bind is not None
        conn_id, response = client.bind
        link = self._links.get(conn_id)
        if link is None or link.sock is None:
            client.bind = None
            client.close()
            return
        peer_sock, link.sock = link.sock, None
        link.client = client
        link.task = asyncio.current_task()
        reason = "closed by allocation teardown"
        stats = BridgeStats(0, 0)
        stun_bytes = client.take_output() + response
        cap = self._caps.get(link.alloc_id)
        meter = BridgeMeter()
        self.metrics.bytes.track(conn_id, meter, len(stun_bytes))
        try:
            await bridge(
                client.endpoint,
                peer_sock,
                a_to_b_prefix=client.leftover,
                b_to_a_prefix=stun_bytes,
                stats=stats,
                limits=cap[1] if cap is not None else (None, None),
                meter=meter,
            )
            reason = "closed"
        except OSError as exc:
            reason = f"failed: {exc}"
        finally:
            down = max(0, stats.b_to_a - len(stun_bytes))
            self.bytes_relayed += stats.a_to_b + down
            self.metrics.bytes.finish(conn_id, stats.a_to_b, down)
            reason += f" ({stats.a_to_b} bytes up, {down} down)"
            self._links.pop(conn_id, None)
            self.core.connection_closed(conn_id, time.time(), reason)
            self._flush()

    async def _connect_peer(self, link: _PeerLink, bind_address: Address, peer: Address) -> None:
        """RFC 6062 §5.2: connect from the relayed address; the core times it out."""
        sock = new_socket(bind_address[0], socket.SOCK_STREAM)
        ok = False
        try:
            allow_port_sharing(sock)
            sock.bind(bind_address)
            sock.setblocking(False)
            await self._loop.sock_connect(sock, peer)
            _no_delay(sock)
            ok = True
        except OSError as exc:
            log.info("connect %s -> %s failed: %s", bind_address, peer, exc)
        finally:
            if not ok:
                sock.close()
        if ok and link.conn_id in self._links:
            link.sock = sock
            self.core.peer_connected(link.conn_id, time.time())
        else:
            if ok:
                sock.close()
            self._links.pop(link.conn_id, None)
            self.core.peer_connect_failed(link.conn_id, time.time())
        self._flush()

    def _watch_peers(self, relay: _Relay) -> None:
        """RFC 6062 §5.3: peers dial the relayed address. A readiness callback on the listener,
        not a task per allocation: case 3 of the bench opens and closes one per allocation, and
        a task (its first step, a future per accept, the cancellation) cost more than the rest
        of the listener's set-up."""
        relay.accept_retry = None
        if relay.listener is not None and relay.listener.fileno() >= 0:
            self._loop.add_reader(relay.listener.fileno(), self._accept_peers, relay)

    def _accept_peers(self, relay: _Relay) -> None:
        """Accept what the listener's backlog holds (bounded per call); refused peers are
        closed at once; an accept error (EMFILE) rests the listener, keeping the allocation."""
        listener = relay.listener
        assert listener is not None
        for _ in range(PEER_ACCEPT_BATCH):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if listener.fileno() < 0:  # closed by a command acted on in this batch
                    return
                self._throttle.warning(
                    "relay accept", "relay %s:%d accept failed: %s", *relay.bind_address, exc
                )
                self._loop.remove_reader(listener.fileno())
                relay.accept_retry = self._loop.call_later(
                    PEER_ACCEPT_RETRY, self._watch_peers, relay
                )
                return
            conn_id = self.core.peer_accepted(relay.alloc_id, addr[:2], time.time())
            if conn_id is None:
                sock.close()
            else:
                sock.setblocking(False)
                _no_delay(sock)
                self._links[conn_id] = _PeerLink(conn_id, relay.alloc_id, sock)
            self._flush()

    # -- commands from the core -------------------------------------------------------------------

    def _flush(self) -> None:
        """Execute the core's commands, log its events, re-arm the timer."""
        while outputs := self.core.next_outputs():
            for output in outputs:
                self._execute(output)
        self._arm_timer()
        if self.core.draining:
            self._check_idle()

    def _execute(self, out: Output) -> None:
        """One command (a dict lookup by its type, not a chain of ``isinstance``), or one
        event for the metrics and the log."""
        command = self._commands.get(type(out))
        if command is not None:
            command(out)
        else:
            self.metrics.observe(out)
            _log_event(out)

    def _command_table(self) -> dict[type, Callable[[Any], None]]:
        return {
            SendToClient: self._do_send,
            SendToPeer: self._do_send_to_peer,
            OpenRelay: self._open_relay,
            CloseRelay: self._do_close_relay,
            ReleaseReservation: self._do_release,
            ConnectToPeer: self._start_connect,
            BindDataConnection: self._bind_data_connection,
            ClosePeerConnection: self._do_close_link,
            CloseClientConnection: self._do_finish_client,
        }

    def _do_send(self, out: SendToClient) -> None:
        self._send_frame(out.five, out.data)

    def _do_send_to_peer(self, out: SendToPeer) -> None:
        endpoint, bucket = self._udp_relay_for(out.alloc_id, out.peer)
        if endpoint is not None and self._within(bucket, len(out.data)):
            endpoint.sendto(out.data, out.peer)
            self.bytes_relayed += len(out.data)
            self.metrics.relayed("udp", UP, len(out.data))

    def _do_close_relay(self, out: CloseRelay) -> None:
        self._forget_routes()
        self._close_relay(out.alloc_id)

    def _do_release(self, out: ReleaseReservation) -> None:
        self.ports.release(out.address)

    def _do_close_link(self, out: ClosePeerConnection) -> None:
        self._close_link(out.conn_id)

    def _do_finish_client(self, out: CloseClientConnection) -> None:
        client = self._clients.get(out.five)
        if client is not None:
            client.finish()

    def _udp_relay_for(
        self, alloc_id: int, peer: Address
    ) -> tuple[UdpEndpoint | None, TokenBucket | None]:
        """The allocation's UDP relay of ``peer``'s family (a dual allocation has two), and its
        client→peer bandwidth cap."""
        relay = self._relays.get(alloc_id)
        if relay is not None and (":" in peer[0]) != (":" in relay.bind_address[0]):
            relay = self._extra_relays.get(alloc_id)
        if relay is None:
            return None, None
        return relay.udp, relay.limits[0]

    def _within(self, bucket: TokenBucket | None, size: int) -> bool:
        """UDP beyond an allocation's ``max_bps`` is dropped (coturn does the same)."""
        if bucket is None or bucket.take(size, self._loop.time()):
            return True
        self.metrics.bandwidth_drops.inc(size)
        return False

    def _send_frame(self, five: FiveTuple, data: bytes) -> None:
        """A STUN message or ChannelData to a client, over its listener or its connection."""
        if five.transport == UDP:
            listener = self._udp_listeners.get(five.server)
            if listener is not None:
                listener.sendto(data, five.client)
            return
        client = self._clients.get(five)
        if client is not None:
            client.write(data)

    def _relay_host(self, out: OpenRelay) -> str | None:
        """The local address to bind the relay on (RFC 8656 §7.2), None if there is none.

        A configured relay address of the family (coturn's relay-ip; the one the client reached
        if it is one, else taken in turn); without one, the address the client reached (or the
        routed one for a wildcard listener) when the family matches; for the other family (an
        IPv6 client gets IPv4 by default) a local address of that family.
        """
        server_host, client_host = out.five.server[0], out.five.client[0]
        configured = [ip for ip in self.config.relay_ips if _version(ip) == out.family]
        if configured:
            if server_host in configured:
                return server_host
            self._relay_turn += 1
            return configured[self._relay_turn % len(configured)]
        if self.config.relay_ips:
            return None
        if _version(server_host) == out.family:
            return route_source(client_host) if is_unspecified(server_host) else server_host
        return self._other_family_host(out.family, client_host)

    def _other_family_host(self, family: int, client_host: str) -> str | None:
        """A local address of ``family`` for a client of the other one, None if there is none."""
        for kind, (host, _port) in self.addresses:
            if kind != TLS and _version(host) == family and not is_unspecified(host):
                return host
        if ipaddress.ip_address(client_host).is_loopback:
            return "127.0.0.1" if family == 4 else "::1"
        try:
            return route_source(_ROUTE_PROBE[family])
        except OSError:
            return None

    def _open_relay(self, out: OpenRelay) -> None:
        """Reserve the allocation's bandwidth (once, also for a dual allocation), then bind."""
        now = time.time()
        cap = self._caps.get(out.alloc_id)
        if cap is None:
            rate = self.bandwidth.reserve(self.config.max_bps)
            if self.config.max_bps and not rate:  # coturn's answer when bps-capacity is spent
                reason = "Allocation Bandwidth Quota Reached"
                self.core.relay_failed(
                    out.alloc_id, now, ErrorCode.ALLOCATION_QUOTA_REACHED, reason, family=out.family
                )
                return
            clock = self._loop.time()
            buckets = (TokenBucket(rate, clock), TokenBucket(rate, clock)) if rate else (None, None)
            cap = self._caps[out.alloc_id] = (rate, buckets)
        try:
            self._open_relay_at(out, now, cap[1])
        finally:
            if out.alloc_id not in self._relays and out.alloc_id not in self._extra_relays:
                self._release_cap(out.alloc_id)  # refused: the reservation goes back

    def _release_cap(self, alloc_id: int) -> None:
        cap = self._caps.pop(alloc_id, None)
        if cap is not None:
            self.bandwidth.release(cap[0])

    def _open_relay_at(self, out: OpenRelay, now: float, limits: Limits) -> None:
        try:
            host = out.reserved[0] if out.reserved else self._relay_host(out)
        except (OSError, ValueError) as exc:  # no route back to the client
            log.warning("no relay address for %s: %s", out.five.client[0], exc)
            self.core.relay_failed(out.alloc_id, now, family=out.family)
            return
        if host is None:
            reason = "Address Family not Supported"
            self.core.relay_failed(
                out.alloc_id, now, ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED, reason, family=out.family
            )
            return
        kind = socket.SOCK_STREAM if out.transport == PROTO_TCP else socket.SOCK_DGRAM
        try:
            sock, held = self._bind_relay(out, host, kind)
        except OSError as exc:
            log.warning("cannot open a relay on %s: %s", host, exc)
            self.core.relay_failed(out.alloc_id, now, family=out.family)
            return
        bound: Address = sock.getsockname()[:2]
        relay = _Relay(out.alloc_id, bound, limits=limits)
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
            relay.listener = sock
            self._watch_peers(relay)
        else:
            if out.dont_fragment:
                set_dont_fragment(sock)
            handler = self._peer_datagram_handler(relay)
            relay.udp = UdpEndpoint(self._loop, sock, handler)
        if out.alloc_id in self._relays:  # RFC 8656 §7.2 dual allocation: the second family
            self._extra_relays[out.alloc_id] = relay
        else:
            self._relays[out.alloc_id] = relay
        reserved = (host, bound[1] + 1) if held is not None else None
        self.core.relay_opened(out.alloc_id, bound, now, reserved)

    def _bind_relay(
        self, out: OpenRelay, host: str, kind: socket.SocketKind
    ) -> tuple[socket.socket, socket.socket | None]:
        if out.reserved is not None:
            sock = self.ports.take_held(out.reserved)
            if sock is None:
                raise OSError("reserved port no longer held")
            return sock, None
        return self.ports.bind(host, kind, even=out.even_port, reserve_next=out.reserve_next)

    def _peer_datagram_handler(self, relay: _Relay) -> Callable[[Datagrams], None]:
        alloc_id, routes, bucket = relay.alloc_id, self._peer_routes, relay.limits[1]
        clock = time.time

        def on_datagrams(batch: Datagrams) -> None:
            now, down = clock(), 0
            for data, peer in batch:
                if bucket is not None and not self._within(bucket, len(data)):
                    continue
                down += len(data)
                route = routes.get((alloc_id, peer))
                if route is None or route[2] <= now:
                    route = self._route_peer(alloc_id, peer, now)
                if route is None:  # no channel: a Data indication, built by the core
                    self.core.receive_peer_datagram(alloc_id, peer, data, now)
                    continue
                five, channel, _until = route
                frame = channel + len(data).to_bytes(2, "big") + data  # ChannelData (§12.4)
                if five.stream:
                    frame += bytes(-len(data) % 4)  # padded on TCP/TLS (RFC 8656 §12.5)
                self._send_frame(five, frame)
            self._end_batch(0, down)

        return on_datagrams

    def _route_peer(self, alloc_id: int, peer: Address, now: float) -> _PeerRoute | None:
        found = self.core.peer_route(alloc_id, peer, now)
        if found is None:
            return None
        five, number, until = found
        route = (five, number.to_bytes(2, "big"), until)
        self._peer_routes[(alloc_id, peer)] = route
        return route

    def _close_relay(self, alloc_id: int) -> None:
        extra = self._extra_relays.pop(alloc_id, None)
        if extra is not None:
            self._close_one_relay(extra)
        relay = self._relays.pop(alloc_id, None)
        if relay is not None:
            self._close_one_relay(relay)
        self._release_cap(alloc_id)

    def _close_one_relay(self, relay: _Relay) -> None:
        if relay.udp is not None:
            relay.udp.close()
        if relay.accept_retry is not None:
            relay.accept_retry.cancel()
        if relay.listener is not None:
            if relay.listener.fileno() >= 0:
                self._loop.remove_reader(relay.listener.fileno())
            relay.listener.close()
        self.ports.release(relay.bind_address)

    def _start_connect(self, out: ConnectToPeer) -> None:
        relay = self._relays.get(out.alloc_id)
        if relay is None:
            self.core.peer_connect_failed(out.conn_id, time.time())
            return
        link = _PeerLink(out.conn_id, out.alloc_id)
        self._links[out.conn_id] = link
        link.task = self._spawn(self._connect_peer(link, relay.bind_address, out.peer))

    def _bind_data_connection(self, out: BindDataConnection) -> None:
        client = self._clients.get(out.five)
        link = self._links.get(out.conn_id)
        if client is None or link is None or link.sock is None:
            self.core.connection_closed(out.conn_id, time.time(), "data connection gone")
            return
        client.bind = (out.conn_id, out.response)

    def _close_link(self, conn_id: int) -> None:
        link = self._links.pop(conn_id, None)
        if link is None:
            return
        if link.sock is not None:
            link.sock.close()
        if link.task is not None and link.task is not asyncio.current_task():
            link.task.cancel()

    # -- timer ------------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        when = self.core.get_timer()
        if when == self._timer_at or self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = None
        if when is not None:
            self._timer = self._loop.call_later(max(0.0, when - time.time()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.handle_timer(time.time())
        self._flush()


def bind_stream(host: str, port: int, share: bool = False) -> socket.socket:
    """A listening TCP socket (the TLS listener's; with ``share``, one of ``--workers``' copies
    of a listener, all bound with SO_REUSEPORT)."""
    listener = new_socket(host, socket.SOCK_STREAM)
    try:
        if share:
            allow_port_sharing(listener)
        else:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener


def _bind_pair(
    host: str, port: int, tcp_on: bool = True, udp_on: bool = True
) -> tuple[socket.socket | None, socket.socket | None]:
    """A listening TCP socket and a UDP socket on the same address (either may be off)."""
    tcp = new_socket(host, socket.SOCK_STREAM) if tcp_on else None
    udp = new_socket(host, socket.SOCK_DGRAM) if udp_on else None
    try:
        if tcp is not None:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, port))
            port = tcp.getsockname()[1]
            tcp.listen(LISTEN_BACKLOG)
            tcp.setblocking(False)
        if udp is not None:
            udp.bind((host, port))
    except OSError:
        for sock in (tcp, udp):
            if sock is not None:
                sock.close()
        raise
    return tcp, udp


def _version(host: str) -> int:
    return 6 if ":" in host else 4


def _log_event(event: Output) -> None:
    """One line for an event, at its level; nothing is formatted for a level that is off."""
    line = _EVENT_LINES.get(type(event))
    if line is not None:
        line(event)


def _log_created(event: AllocationCreated) -> None:
    if log.isEnabledFor(logging.INFO):
        kind = "TCP" if event.transport == PROTO_TCP else "UDP"
        log.info(
            "allocation %d created: %s relay %s for %s (%s %s), lifetime %ds",
            event.alloc_id,
            kind,
            format_address(*event.relayed[:2]),
            _quoted_name(event.username),
            event.five.transport,
            format_address(*event.five.client),
            event.lifetime,
        )


def _log_refreshed(event: AllocationRefreshed) -> None:
    log.info("allocation %d refreshed: lifetime %ds", event.alloc_id, event.lifetime)


def _log_deleted(event: AllocationDeleted) -> None:
    log.info("allocation %d deleted: %s", event.alloc_id, event.reason)


def _log_peer(event: PeerConnected) -> None:
    if log.isEnabledFor(logging.INFO):
        how = "peer dialled in" if event.incoming else "connected to peer"
        log.info("allocation %d: %s %s", event.alloc_id, how, format_address(*event.peer))


def _log_bound(event: ConnectionBound) -> None:
    log.info("allocation %d: connection %08x bound", event.alloc_id, event.conn_id)


def _log_conn_closed(event: ConnectionClosed) -> None:
    log.info("allocation %d: connection %08x %s", event.alloc_id, event.conn_id, event.reason)


def _log_channel(event: ChannelBound) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(
            "allocation %d: channel 0x%04x -> %s",
            event.alloc_id,
            event.channel,
            format_address(*event.peer),
        )


def _log_permission(event: PermissionCreated) -> None:
    log.debug("allocation %d: permission for %s", event.alloc_id, event.peer_ip)


def _log_login_failed(event: AuthenticationFailed) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("login failed: user %s from %s %s (%s, %s)", _quoted_name(event.username),
                 event.five.transport, format_address(*event.five.client), event.reason,
                 event.method)  # fmt: skip


_CHALLENGES = (0, ErrorCode.UNAUTHENTICATED, ErrorCode.STALE_NONCE)  # 0: dropped


def _log_refused(event: RequestRefused) -> None:
    level = logging.DEBUG if event.code in _CHALLENGES else logging.INFO
    if log.isEnabledFor(level):
        log.log(level, "%s from %s refused: %d %s", event.method,
                format_address(*event.five.client), event.code, event.reason)  # fmt: skip


def _log_answered(event: RequestAnswered) -> None:
    if log.isEnabledFor(logging.DEBUG):
        client = format_address(*event.five.client)
        log.debug("%s from %s %s answered", event.method, event.five.transport, client)


_EVENT_LINES: dict[type, Callable[[Any], None]] = {
    AllocationCreated: _log_created,
    AllocationRefreshed: _log_refreshed,
    AllocationDeleted: _log_deleted,
    PeerConnected: _log_peer,
    ConnectionBound: _log_bound,
    ConnectionClosed: _log_conn_closed,
    ChannelBound: _log_channel,
    PermissionCreated: _log_permission,
    AuthenticationFailed: _log_login_failed,
    RequestRefused: _log_refused,
    RequestAnswered: _log_answered,
}


def _quoted_name(text: str, limit: int = 128) -> str:
    """A client-chosen name for a log line: cut, quoted, unsafe characters escaped."""
    return f"'{printable(text[:limit])}'"


@dataclass
class RunningRelay:
    """A started relay: where it listens, its core, and ``close()``."""

    server: RelayServer
    addresses: list[tuple[str, Address]]

    @property
    def core(self) -> TurnServer:
        return self.server.core

    @property
    def turn_port(self) -> int:
        """The port of the first UDP/TCP listener."""
        return next(addr[1] for kind, addr in self.addresses if kind in (UDP, TCP))

    @property
    def tls_port(self) -> int | None:
        return next((addr[1] for kind, addr in self.addresses if kind == TLS), None)

    async def close(self) -> None:
        await self.server.close()

    async def __aenter__(self) -> RunningRelay:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


async def start_relay(config: RelayConfig) -> RunningRelay:
    """Bind the listeners of ``config`` and start serving; raises OSError if a port is busy.

    Example::

        auth = AuthConfig("del.local", {"del": "del"})
        config = RelayConfig(ServerConfig(auth, allow_peers=("127.0.0.0/8",)),
                             listen=(("127.0.0.1", 0),))
        async with await start_relay(config) as relay:
            print("TURN on port", relay.turn_port)
    """
    server = RelayServer(config)
    await server.start()
    return RunningRelay(server, list(server.addresses))


def _no_delay(sock: socket.socket) -> None:
    """No Nagle on a relayed peer connection: the endpoints choose their segments, and a small
    tail held back until the previous segment's (delayed) ACK stalls a request/response ~40 ms."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
