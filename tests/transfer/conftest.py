"""Loopback fixtures: real TCP stream pairs, handshaken channels, and a proxy that cuts a link."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from delshare.link.records import RecordChannel, handshake

KEY = bytes(range(32))
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Listener:
    """A 127.0.0.1:0 server whose accepted connections are queued."""

    async def start(self) -> int:
        self.accepted: asyncio.Queue[Streams] = asyncio.Queue()

        async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self.accepted.put((r, w))

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def next(self) -> Streams:
        return await asyncio.wait_for(self.accepted.get(), 10)

    def close(self) -> None:
        self.server.close()


async def stream_pair() -> tuple[Streams, Streams]:
    """A connected (client, server) stream pair over 127.0.0.1."""
    listener = Listener()
    port = await listener.start()
    client = await asyncio.open_connection("127.0.0.1", port)
    accepted = await listener.next()
    listener.close()
    return client, accepted


async def handshaken(client: Streams, server: Streams) -> tuple[RecordChannel, RecordChannel]:
    """(sender channel on the client side, receiver channel on the server side)."""
    return await asyncio.gather(
        handshake(*client, KEY, "sender", timeout=10),
        handshake(*server, KEY, "receiver", timeout=10),
    )


async def channel_pair() -> tuple[RecordChannel, RecordChannel]:
    """A direct loopback link, handshaken."""
    return await handshaken(*await stream_pair())


class CuttingProxy:
    """Forwards bytes both ways and aborts both connections after ``limit`` client->server bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.forwarded = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._backend = Listener()
        self._front = Listener()

    async def channel_pair(self) -> tuple[RecordChannel, RecordChannel]:
        """A handshaken link whose sender->receiver direction passes through the cutter."""
        backend_port = await self._backend.start()
        front_port = await self._front.start()
        client = await asyncio.open_connection("127.0.0.1", front_port)
        front = await self._front.next()
        backend_client = await asyncio.open_connection("127.0.0.1", backend_port)
        server = await self._backend.next()
        self._tasks += [
            asyncio.create_task(self._pump(front, backend_client, cut=True)),
            asyncio.create_task(self._pump(backend_client, front, cut=False)),
        ]
        return await handshaken(client, server)

    async def _pump(self, source: Streams, sink: Streams, *, cut: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source[0].read(1 << 16):
                if cut:
                    data = data[: self.limit - self.forwarded]
                    self.forwarded += len(data)
                sink[1].write(data)
                await sink[1].drain()
                if cut and self.forwarded >= self.limit:
                    break
        source[1].transport.abort()
        sink[1].transport.abort()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._front.close()
        self._backend.close()


@pytest.fixture
async def proxy_factory() -> AsyncIterator[Callable[[int], CuttingProxy]]:
    proxies: list[CuttingProxy] = []

    def make(limit: int) -> CuttingProxy:
        proxies.append(CuttingProxy(limit))
        return proxies[-1]

    yield make
    for proxy in proxies:
        await proxy.close()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def tree_files(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 (files) or 'dir', for comparing trees."""
    result: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        result[rel] = "dir" if path.is_dir() else sha256_file(path)
    return result
