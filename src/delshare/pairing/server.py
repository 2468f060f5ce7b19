"""The rendezvous server: WebSocket adapter around a ``MailboxBackend``.

One handler per connection decodes ``wire`` frames and applies them to the backend; the backend
hands back events for this node's connections through a ``Deliver`` callback, which turns them
into frames. A refusal is answered with an ``error`` frame and the connection is closed. No
connection lives longer than ``max_age`` plus a grace period, and one that has not opened a
mailbox within ``idle_timeout`` is closed. An ``AddressGuard`` bounds connections and the
message rate per client address (per node); the store bounds mailboxes per address, in number
and in bytes (across nodes with Redis).

Two backends: ``LocalBackend`` (``local_backend``) puts a sans-IO ``MailboxStore`` (the
in-memory ``MailboxTable``) on the loop clock and sweeps expired mailboxes; ``RedisBackend``
(``redis_backend``) keeps the mailboxes in Redis so that independent nodes share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import Iterable
from ssl import SSLContext
from types import TracebackType

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from delshare.errors import PairingError
from delshare.pairing import wire
from delshare.pairing.backend import MailboxBackend
from delshare.pairing.guard import AddressGuard, address_key
from delshare.pairing.local_backend import SWEEP_INTERVAL, LocalBackend
from delshare.pairing.mailbox import (
    LOST,
    BodyRelayed,
    ClientId,
    Event,
    MailboxExpired,
    MailboxLimits,
    MailboxLost,
    MailboxStore,
    MailboxTable,
    PeerLeft,
    RendezvousRefused,
    label_of,
)
from delshare.pairing.metrics import RendezvousMetrics
from delshare.pairing.turn_grant import TurnGrant, reached_host
from delshare.portable import release_free_memory

CONNECTION_GRACE = 5.0  # a connection may outlive its mailbox's max_age by this much
FRAME_OVERHEAD = 1024  # JSON around a body of max_message_size
MAX_QUEUE = 4  # frames websockets buffers per connection before it stops reading
# A refused client may have frames queued: reading stays paused, so its close frame is not seen
# and the closing handshake waits this long (websockets' default is 10 s).
CLOSE_TIMEOUT = 2.0
# After a crowd of connections left (an attack, a burst), give the freed heap back to the OS:
# checked every TRIM_INTERVAL s once the count fell to half of a peak of at least TRIM_PEAK.
TRIM_INTERVAL = 2.0
TRIM_PEAK = 64


class RendezvousServer:
    """A running rendezvous server; ``port``, ``sockets``, ``close()``, ``wait_closed()``."""

    def __init__(
        self,
        backend: MailboxBackend,
        metrics: RendezvousMetrics | None = None,
        turn_grant: TurnGrant | None = None,
    ) -> None:
        self.backend = backend
        self.turn_grant = turn_grant
        self.limits = backend.limits
        self.guard = AddressGuard(backend.limits)
        self.metrics = metrics or RendezvousMetrics()
        self.metrics.watch(self)
        self._ids = itertools.count(1)
        self._connections: dict[ClientId, ServerConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: Server | None = None
        self._backend_closed = False
        self._peak = 0  # most connections at once since the last trim
        self._trimmer: asyncio.Task[None] | None = None

    def _start(self, server: Server) -> None:
        self._server = server
        self._trimmer = asyncio.create_task(self._trim_forever())

    async def _trim_forever(self) -> None:
        while True:
            await asyncio.sleep(TRIM_INTERVAL)
            if self._peak >= TRIM_PEAK and len(self._connections) <= self._peak // 2:
                self._peak = len(self._connections)
                release_free_memory()

    @property
    def sockets(self) -> Iterable[socket.socket]:
        assert self._server is not None
        return self._server.sockets

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful with port 0)."""
        return int(next(iter(self.sockets)).getsockname()[1])

    def close(self) -> None:
        """Stop listening and close every connection (their mailbox sides are closed too)."""
        if self._trimmer is not None:
            self._trimmer.cancel()
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        """Wait until every handler returned, then release the backend."""
        if self._trimmer is not None:
            self._trimmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trimmer
        if self._server is not None:
            await self._server.wait_closed()
        if not self._backend_closed:
            self._backend_closed = True
            await self.backend.aclose()
            self.metrics.close()

    async def __aenter__(self) -> RendezvousServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._connections)

    @property
    def mailbox_count(self) -> int:
        """Mailboxes open on this node (the metrics gauge)."""
        return self.backend.mailboxes()

    async def handle(self, connection: ServerConnection) -> None:
        """Serve one client connection until it closes, errs, idles or grows too old."""
        client = next(self._ids)
        ip = address_key(str(connection.remote_address[0]))
        admitted = False
        self._connections[client] = connection
        self._peak = max(self._peak, len(self._connections))
        try:
            self.guard.connect(ip, _now())
            admitted = True
            async with asyncio.timeout(self.limits.max_age + CONNECTION_GRACE):
                await self._dispatch(client, ip, await self._first_frame(connection))
                async for frame in connection:
                    await self._dispatch(client, ip, frame)
        except PairingError as exc:
            self.metrics.refused(label_of(exc))
            with contextlib.suppress(ConnectionClosed):
                await connection.send(wire.encode(wire.ErrorMessage(str(exc))))
        except (TimeoutError, ConnectionClosed):
            pass
        finally:
            del self._connections[client]
            if admitted:
                self.guard.disconnect(ip)
            await self.backend.close(client)

    async def _first_frame(self, connection: ServerConnection) -> str | bytes:
        """The frame that opens a mailbox, within ``idle_timeout``."""
        idle = self.limits.idle_timeout
        try:
            async with asyncio.timeout(idle):
                return await connection.recv()
        except TimeoutError:
            raise RendezvousRefused(f"idle: no mailbox opened within {idle:g} s", "idle") from None

    async def _dispatch(self, client: ClientId, ip: str, frame: str | bytes) -> None:
        self.guard.message(ip, _now())
        match wire.decode_client(frame):
            case wire.OpenMessage(nameplate, side, turn):
                await self._hand_turn(client, turn)
                if await self.backend.open(client, nameplate, side=side, ip=ip):
                    self.metrics.pairings.inc()
            case wire.AllocateMessage(turn):
                await self._hand_turn(client, turn)
                nameplate = await self.backend.allocate(client, ip=ip)
                connection = self._connections.get(client)
                if connection is not None:
                    await self._send(connection, wire.AllocatedMessage(nameplate))
            case wire.AddMessage(body):
                await self.backend.add(client, body)

    async def _hand_turn(self, client: ClientId, asked: bool) -> None:
        """Answer ``"turn": true`` with the TURN servers and fresh credentials (or none)."""
        connection = self._connections.get(client)
        if not asked or connection is None:
            return
        servers: tuple[wire.TurnServer, ...] = ()
        if self.turn_grant is not None:
            host_header = connection.request.headers.get("Host") if connection.request else None
            host = reached_host(host_header, str(connection.local_address[0]))
            servers = self.turn_grant.servers(host, time.time())
            self.metrics.turn_grants.inc()
        await self._send(connection, wire.TurnMessage(servers))

    async def _deliver(self, events: list[Event]) -> None:
        for event in events:
            connection = self._connections.get(event.client)
            if connection is None:
                continue
            match event:
                case BodyRelayed(_, body):
                    await self._send(connection, wire.RelayMessage(body))
                case PeerLeft():
                    self.metrics.closed.labels("peer_left").inc()
                    await self._send_and_close(connection, "peer left")
                case MailboxExpired():
                    self.metrics.closed.labels("expired").inc()
                    await self._send_and_close(connection, "mailbox expired")
                case MailboxLost():
                    self.metrics.closed.labels("lost").inc()
                    await self._send_and_close(connection, LOST)

    @staticmethod
    async def _send(connection: ServerConnection, message: wire.ServerMessage) -> None:
        with contextlib.suppress(ConnectionClosed):
            await connection.send(wire.encode(message))

    async def _send_and_close(self, connection: ServerConnection, reason: str) -> None:
        await self._send(connection, wire.CloseMessage(reason))
        # Closing waits for the handshake: do it aside so this handler is not held up.
        task = asyncio.create_task(connection.close(reason=reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def serve_rendezvous(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    limits: MailboxLimits | None = None,
    store: MailboxStore | None = None,
    redis_url: str | None = None,
    sweep_interval: float = SWEEP_INTERVAL,
    metrics: RendezvousMetrics | None = None,
    turn_grant: TurnGrant | None = None,
    ssl: SSLContext | None = None,
) -> RendezvousServer:
    """Start a rendezvous server on ``host``:``port`` (0 picks a free port).

    Mailboxes live in ``store`` (default: an in-memory ``MailboxTable(limits)``), or, with
    ``redis_url`` (e.g. ``redis://127.0.0.1:6379/0``), in Redis, shared by every node started
    with the same URL. ``sweep_interval`` bounds how late expiry (and, with Redis, a crashed
    node's clients) is noticed. ``metrics`` (e.g. on the relay's registry) counts mailboxes,
    pairings and refusals. ``turn_grant`` (a node with the TURN REST secret) hands clients that
    ask the TURN servers and short-lived credentials.
    With ``ssl`` (a server context) it serves ``wss://``.
    """
    backend = _backend(limits, store, redis_url, sweep_interval)
    rendezvous = RendezvousServer(backend, metrics, turn_grant)
    await backend.start(rendezvous._deliver)
    limits = backend.limits
    try:
        server = await serve(
            rendezvous.handle,
            host,
            port,
            max_size=min(wire.MAX_FRAME, limits.max_message_size + FRAME_OVERHEAD),
            compression=None,
            max_queue=MAX_QUEUE,
            open_timeout=limits.idle_timeout,
            close_timeout=CLOSE_TIMEOUT,
            create_connection=_guarded(rendezvous.guard),
            ssl=ssl,
        )
    except BaseException:
        await backend.aclose()
        raise
    rendezvous._start(server)
    return rendezvous


def _backend(
    limits: MailboxLimits | None,
    store: MailboxStore | None,
    redis_url: str | None,
    sweep_interval: float,
) -> MailboxBackend:
    if redis_url is None:
        return LocalBackend(store if store is not None else MailboxTable(limits), sweep_interval)
    if store is not None:
        raise ValueError("give either store or redis_url, not both")
    from delshare.pairing.redis_backend import RedisBackend  # redis is an optional dependency

    return RedisBackend(redis_url, limits or MailboxLimits(), heartbeat=sweep_interval)


def _guarded(guard: AddressGuard) -> type[ServerConnection]:
    """A connection class that counts TCP connections per address from accept on."""

    class GuardedConnection(ServerConnection):
        address = ""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            address = address_key(str(peer[0])) if peer else ""
            if guard.accept(address):
                self.address = address
            else:  # over the hard cap: no handshake, no descriptor kept (uvloop's transports
                # are no asyncio.Transport, hence getattr)
                getattr(transport, "abort", transport.close)()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.address:
                guard.release(self.address)
                self.address = ""
            super().connection_lost(exc)

    return GuardedConnection


def _now() -> float:
    return asyncio.get_running_loop().time()
