"""Our relayed and server-reflexive candidates: a TURN TCP allocation seen by the race.

:func:`open_relay` opens a control connection to the configured TURN server
(:func:`delshare.aio.client.connect_turn`), allocates a TCP relayed address (RFC 6062 §5.1) and
wraps it as the :class:`delshare.link.race.RelayAllocation` the race dials and accepts through.
:func:`reflexive_address` only asks the server for our server-reflexive address (RFC 8489 §3),
for sides that will not relay.

The TURN client (and the STUN codec under it) is imported only when a TURN server is used:
a direct transfer does not pay for it at start-up.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from delshare.address import display_address
from delshare.errors import DelshareError
from delshare.link.candidates import Candidate

if TYPE_CHECKING:
    from delshare.aio.client import TurnClient
    from delshare.aio.client_allocation import TcpAllocation
    from delshare.link.race import Stream
    from delshare.turn.uri import TurnUri

__all__ = ["TurnRelay", "TurnSettings", "open_relay", "reflexive_address"]

SETUP_TIMEOUT = 15.0


@dataclass(frozen=True)
class TurnSettings:
    """Where the TURN server is and how to authenticate (password or REST shared secret).

    ``uri`` is parsed where the user gave it (``--turn``), once.
    """

    uri: TurnUri
    username: str | None = None
    password: str | None = None
    secret: str | None = None
    ca: str | None = None
    """A CA file to trust for ``turns:`` (instead of the system's)."""

    @property
    def label(self) -> str:
        """``host:port`` of the server, as printed in ``connected: relay ...``."""
        return display_address(self.uri.host, self.uri.port)


async def _connect(settings: TurnSettings) -> TurnClient:
    from delshare.aio.client import connect_turn

    context = None
    if settings.ca is not None and settings.uri.secure:
        import ssl

        context = ssl.create_default_context(cafile=settings.ca)
    return await connect_turn(
        settings.uri, settings.username, settings.password, secret=settings.secret, ssl=context
    )


class TurnRelay:
    """A TCP allocation plus its control connection; closing it ends both (RFC 6062 §5.5)."""

    def __init__(self, client: TurnClient, allocation: TcpAllocation, server: str) -> None:
        self._client = client
        self._allocation = allocation
        self._server = server

    @property
    def server(self) -> str:
        return self._server

    def candidates(self) -> list[Candidate]:
        """Our relayed candidate and, when the server told us, our server-reflexive one."""
        host, port = self._allocation.relayed_address
        found = [Candidate("relay", host, port, self._server)]
        mapped = self._allocation.mapped_address
        if mapped is not None:
            found.insert(0, Candidate("srflx", mapped[0], mapped[1]))
        return found

    async def permit(self, ips: list[str]) -> list[str]:
        """Let these peer IPs reach our relayed address (RFC 8656 §9); return those refused.

        One CreatePermission per IP: a server may refuse some (403 for a private address it
        will not relay to, 443 for the other address family) and the rest must still work.
        """
        family = ipaddress.ip_address(self._allocation.relayed_address[0]).version
        usable = [ip for ip in ips if ipaddress.ip_address(ip).version == family]
        results = await asyncio.gather(
            *(self._allocation.permit(ip) for ip in usable), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
        refused = [ip for ip, r in zip(usable, results, strict=True) if isinstance(r, Exception)]
        return refused + [ip for ip in ips if ip not in usable]

    async def connect(self, peer: tuple[str, int]) -> Stream:
        return await self._allocation.connect(peer)

    async def accept(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, tuple[str, int]]:
        reader, writer, peer = await self._allocation.accept()
        return reader, writer, peer

    async def close(self) -> None:
        await self._client.close()


async def open_relay(settings: TurnSettings) -> TurnRelay:
    """Allocate a TCP relayed address on the configured server (RFC 6062 §5.1)."""
    async with asyncio.timeout(SETUP_TIMEOUT):
        client = await _connect(settings)
        try:
            allocation = await client.allocate_tcp()
        except BaseException:
            await client.close()
            raise
    return TurnRelay(client, allocation, settings.label)


async def reflexive_address(settings: TurnSettings) -> Candidate | None:
    """Our server-reflexive address by STUN Binding over TCP, or None if the server is silent."""
    try:
        async with asyncio.timeout(SETUP_TIMEOUT):
            client = await _connect(settings)
            try:
                host, port = await client.binding()
            finally:
                await client.close()
    except (DelshareError, OSError, TimeoutError):
        return None
    return Candidate("srflx", host, port)
