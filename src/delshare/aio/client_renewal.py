"""The keep-alive half of an asyncio TURN allocation (RFC 8656 §7, §9, §12): renewal.

An allocation keeps itself alive: one maintenance task sleeps until the sans-IO
``AllocationSchedule`` says a Refresh, permission or channel is due, renews it and sleeps again.
``RenewingAllocation`` holds what TCP and UDP allocations share (addresses, lifetime, the
renewal loop); ``delshare.aio.client_allocation`` builds the two kinds on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as _ssl
from typing import Protocol, Self

from delshare.errors import DelshareError, TransactionError
from delshare.stun.attributes import (
    CHANNEL_NUMBER,
    LIFETIME,
    XOR_MAPPED_ADDRESS,
    XOR_PEER_ADDRESS,
    XOR_RELAYED_ADDRESS,
    Address,
    Attribute,
)
from delshare.stun.constants import DEFAULT_LIFETIME, Method
from delshare.stun.message import Message
from delshare.turn.client import TurnClientCore
from delshare.turn.client_allocation import AllocationSchedule, RenewalsDue
from delshare.turn.client_errors import AllocationError, TurnConnectionError
from delshare.turn.uri import TurnUri

__all__ = ["ControlConnection", "RenewingAllocation"]

log = logging.getLogger(__name__)

RETRY_DELAY = 2.0  # after a failed renewal that is not fatal


class ControlConnection(Protocol):
    """What an allocation needs from its control connection (``delshare.aio.client.TurnClient``).

    A protocol rather than an import, so that the client module depends on this one and not the
    other way round.
    """

    uri: TurnUri
    core: TurnClientCore
    ssl: _ssl.SSLContext | None
    server_address: Address

    @property
    def closed(self) -> bool: ...

    async def request(
        self, method: int, attrs: list[Attribute], *, authenticate: bool = True
    ) -> Message: ...

    def send_indication(self, method: int, attrs: list[Attribute]) -> None: ...

    def send_raw(self, frame: bytes) -> None: ...


class RenewingAllocation:
    """What TCP and UDP allocations share: addresses, lifetime, permissions, keep-alive."""

    def __init__(self, client: ControlConnection, response: Message, lifetime: int | None) -> None:
        relayed = response.get(XOR_RELAYED_ADDRESS)
        if relayed is None:
            raise AllocationError("ALLOCATE", 0, "response without XOR-RELAYED-ADDRESS")
        self.relayed_address: Address = relayed
        self.mapped_address: Address | None = response.get(XOR_MAPPED_ADDRESS)
        self.lifetime = response.get(LIFETIME) or DEFAULT_LIFETIME
        self.refreshes = 0
        self.closed = False
        self._client = client
        self._requested_lifetime = lifetime
        self._loop = asyncio.get_running_loop()
        self._schedule = AllocationSchedule(self.lifetime, self._loop.time())
        self._wake = asyncio.Event()
        self._maintainer = self._loop.create_task(self._maintain())

    # -- public ---------------------------------------------------------------------------

    async def permit(self, *ips: str) -> None:
        """Install permissions for peer IPs and keep them refreshed (RFC 8656 §9)."""
        ips = tuple(dict.fromkeys(ips))
        await self._create_permission(ips)
        self._wake.set()

    def unpermit(self, ip: str) -> None:
        """Stop refreshing the permission for ``ip``; it lapses within 300 s (RFC 8656 §9)."""
        self._schedule.forget_permission(ip)

    async def refresh(self, lifetime: int | None = None) -> int:
        """Refresh now; return the granted lifetime (RFC 8656 §7.3). Lifetime 0 is ``close()``."""
        if lifetime == 0:
            await self.close()
            return 0
        attrs = [LIFETIME(lifetime)] if lifetime is not None else []
        response = await self._client.request(Method.REFRESH, attrs)
        granted = response.get(LIFETIME)
        if not granted:  # LIFETIME is mandatory in the response (§7.3); keep ours if absent
            granted = self.lifetime
        self.lifetime = granted
        self._schedule.refreshed(granted, self._loop.time())
        self.refreshes += 1
        return granted

    async def close(self) -> None:
        """Delete the allocation (Refresh LIFETIME 0, best effort) and close everything."""
        if self.closed:
            return
        self._shut_down()
        if not self._client.closed:
            with contextlib.suppress(DelshareError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._client.request(Method.REFRESH, [LIFETIME(0)])

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- keep-alive -----------------------------------------------------------------------

    async def _create_permission(self, ips: tuple[str, ...]) -> None:
        attrs = [XOR_PEER_ADDRESS((ip, 0)) for ip in ips]
        await self._client.request(Method.CREATE_PERMISSION, attrs)
        self._schedule.permitted(list(ips), self._loop.time())

    async def _maintain(self) -> None:
        """The one keep-alive loop: sleep to the next deadline, renew what is due."""
        while not self.closed:
            delay = self._schedule.next_deadline() - self._loop.time()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            try:
                await self._renew(self._schedule.due(self._loop.time()))
            except (AllocationError, TurnConnectionError) as exc:
                log.warning("TURN allocation lost: %s", exc)
                self._shut_down()
            except DelshareError as exc:  # a timeout: try again soon, until expiry
                if self._loop.time() >= self._schedule.expires:
                    self._shut_down()
                log.warning("TURN renewal failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_DELAY)

    async def _renew(self, due: RenewalsDue) -> None:
        """Refresh, then permissions, then channels; a refused permission or channel is dropped."""
        if due.refresh:
            await self.refresh(self._requested_lifetime)
        if due.permissions:
            try:
                await self._create_permission(due.permissions)
            except TransactionError as exc:
                log.warning("TURN permission renewal refused, dropping it: %s", exc)
                for ip in due.permissions:
                    self._schedule.forget_permission(ip)
        for channel, peer in due.channels:
            try:
                await self._channel_bind(channel, peer)
            except TransactionError as exc:
                log.warning("TURN channel renewal refused, dropping it: %s", exc)
                self._schedule.forget_channel(channel)
                self._channel_dropped(channel)

    def _channel_dropped(self, channel: int) -> None:
        """A channel will lapse; UDP allocations stop sending on it."""

    async def _channel_bind(self, channel: int, peer: Address) -> None:
        attrs = [CHANNEL_NUMBER(channel), XOR_PEER_ADDRESS(peer)]
        await self._client.request(Method.CHANNEL_BIND, attrs)
        self._schedule.channel_bound(channel, peer, self._loop.time())

    def _shut_down(self) -> None:
        """Stop keep-alive and close local resources; subclasses close their streams."""
        self.closed = True
        current = asyncio.current_task()
        if self._maintainer is not current:
            self._maintainer.cancel()

    def _connection_lost(self) -> None:
        if not self.closed:
            self._shut_down()
