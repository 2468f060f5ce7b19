"""The in-memory rendezvous backend: a sans-IO ``MailboxStore`` on the asyncio loop's clock.

``LocalBackend`` applies each client step to the store (by default the ``MailboxTable``) and
hands the events to the server; one task sweeps expired mailboxes. ``redis_backend`` is the
shared alternative for several nodes.
"""

from __future__ import annotations

import asyncio
import contextlib

from delshare.pairing.backend import Deliver
from delshare.pairing.codes import nameplate_candidates
from delshare.pairing.mailbox import ClientId, Event, MailboxStore

__all__ = ["SWEEP_INTERVAL", "LocalBackend"]

SWEEP_INTERVAL = 1.0


class LocalBackend:
    """A sans-IO ``MailboxStore`` on the loop clock, with a task that sweeps expired mailboxes."""

    def __init__(self, store: MailboxStore, sweep_interval: float = SWEEP_INTERVAL) -> None:
        self.store = store
        self.limits = store.limits
        self._sweep_interval = sweep_interval
        self._deliver: Deliver | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._sweeper = asyncio.create_task(self._sweep())

    async def open(
        self, client: ClientId, nameplate: str, *, side: str | None = None, ip: str = ""
    ) -> bool:
        await self._emit(self.store.open(client, nameplate, self._now(), side=side, ip=ip))
        return self.store.paired(client)

    async def allocate(self, client: ClientId, *, ip: str = "") -> str:
        return self.store.allocate(client, nameplate_candidates(), self._now(), ip=ip)

    def mailboxes(self) -> int:
        size = getattr(self.store, "__len__", None)
        return int(size()) if size is not None else 0

    async def add(self, client: ClientId, body: str) -> None:
        await self._emit(self.store.add(client, body, self._now()))

    async def close(self, client: ClientId) -> None:
        await self._emit(self.store.close(client, self._now()))

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _emit(self, events: list[Event]) -> None:
        if events and self._deliver is not None:
            await self._deliver(events)

    async def _sweep(self) -> None:
        while True:
            deadline = self.store.next_expiry()
            delay = self._sweep_interval if deadline is None else deadline - self._now()
            await asyncio.sleep(min(max(delay, 0.0), self._sweep_interval))
            await self._emit(self.store.expire(self._now()))

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()
