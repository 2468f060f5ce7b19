"""The rendezvous server: WebSocket adapter around a ``MailboxStore``.

One handler per connection decodes ``wire`` frames, applies them to the store with the loop clock
and turns the store's events into frames for the right connections. A refusal is answered with an
``error`` frame and the connection is closed. A sweeper task expires old mailboxes (telling
their clients) and no connection lives longer than ``max_age`` plus a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import Iterable
from types import TracebackType

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from delshare.errors import PairingError
from delshare.pairing import wire
from delshare.pairing.mailbox import (
    BodyRelayed,
    ClientId,
    Event,
    MailboxExpired,
    MailboxLimits,
    MailboxStore,
    MailboxTable,
    PeerLeft,
)

SWEEP_INTERVAL = 1.0
CONNECTION_GRACE = 5.0  # a connection may outlive its mailbox's max_age by this much


class RendezvousServer:
    """A running rendezvous server; ``port``, ``sockets``, ``close()``, ``wait_closed()``."""

    def __init__(self, store: MailboxStore, sweep_interval: float = SWEEP_INTERVAL) -> None:
        self.store = store
        self._sweep_interval = sweep_interval
        self._ids = itertools.count(1)
        self._connections: dict[ClientId, ServerConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def _start(self, server: Server) -> None:
        self._server = server
        self._sweeper = asyncio.create_task(self._sweep())

    @property
    def sockets(self) -> Iterable[socket.socket]:
        assert self._server is not None
        return self._server.sockets

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful with port 0)."""
        return int(next(iter(self.sockets)).getsockname()[1])

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        if self._sweeper is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

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

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def handle(self, connection: ServerConnection) -> None:
        """Serve one client connection until it closes, errs or grows too old."""
        client = next(self._ids)
        self._connections[client] = connection
        try:
            async with asyncio.timeout(self.store.limits.max_age + CONNECTION_GRACE):
                async for frame in connection:
                    await self._dispatch(client, frame)
        except PairingError as exc:
            with contextlib.suppress(ConnectionClosed):
                await connection.send(wire.encode(wire.ErrorMessage(str(exc))))
        except (TimeoutError, ConnectionClosed):
            pass
        finally:
            del self._connections[client]
            await self._deliver(self.store.close(client, self._now()))

    async def _dispatch(self, client: ClientId, frame: str | bytes) -> None:
        match wire.decode_client(frame):
            case wire.OpenMessage(nameplate):
                events = self.store.open(client, nameplate, self._now())
            case wire.AddMessage(body):
                events = self.store.add(client, body, self._now())
        await self._deliver(events)

    async def _deliver(self, events: list[Event]) -> None:
        for event in events:
            connection = self._connections.get(event.client)
            if connection is None:
                continue
            match event:
                case BodyRelayed(_, body):
                    await self._send(connection, wire.RelayMessage(body))
                case PeerLeft():
                    await self._send_and_close(connection, "peer left")
                case MailboxExpired():
                    await self._send_and_close(connection, "mailbox expired")

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

    async def _sweep(self) -> None:
        while True:
            deadline = self.store.next_expiry()
            delay = self._sweep_interval if deadline is None else deadline - self._now()
            await asyncio.sleep(min(max(delay, 0.0), self._sweep_interval))
            await self._deliver(self.store.expire(self._now()))


async def serve_rendezvous(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    limits: MailboxLimits | None = None,
    store: MailboxStore | None = None,
    sweep_interval: float = SWEEP_INTERVAL,
) -> RendezvousServer:
    """Start a rendezvous server on ``host``:``port`` (0 picks a free port).

    ``store`` defaults to an in-memory ``MailboxTable(limits)``.
    """
    rendezvous = RendezvousServer(
        store if store is not None else MailboxTable(limits), sweep_interval
    )
    server = await serve(
        rendezvous.handle, host, port, max_size=wire.MAX_FRAME, compression=None, max_queue=16
    )
    rendezvous._start(server)
    return rendezvous
