"""What a rendezvous mailbox backend is, as the server sees it.

``local_backend.LocalBackend`` (in memory) and ``redis_backend.RedisBackend`` (shared by
several nodes) both implement ``MailboxBackend``; the server hands each a ``Deliver`` callback.
These types live here, apart from both, so that neither backend imports the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from delshare.pairing.mailbox import ClientId, Event, MailboxLimits

Deliver = Callable[[list[Event]], Awaitable[None]]


class MailboxBackend(Protocol):
    """Where the mailboxes live, as the server sees them.

    ``open``/``allocate``/``add`` raise ``PairingError`` (the reason to answer); ``open`` returns
    whether both seats are now taken, ``allocate`` the nameplate given. Events for this node's
    clients, whenever they happen, go to the ``deliver`` callback given to ``start``. ``close``
    is idempotent and never raises.
    """

    limits: MailboxLimits

    async def start(self, deliver: Deliver) -> None: ...
    async def open(
        self, client: ClientId, nameplate: str, *, side: str | None = None, ip: str = ""
    ) -> bool: ...
    async def allocate(self, client: ClientId, *, ip: str = "") -> str: ...
    async def add(self, client: ClientId, body: str) -> None: ...
    async def close(self, client: ClientId) -> None: ...
    async def aclose(self) -> None: ...
    def mailboxes(self) -> int: ...
