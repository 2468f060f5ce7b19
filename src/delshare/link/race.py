"""Race every path to the peer and keep the first link that proves knowledge of the key.

Theory of operation. Both sides know their own endpoints (a listener, maybe a TURN TCP
allocation) and the peer's candidates. Each side at once dials every peer ``host``/``srflx``
candidate and accepts on its listener (*direct* paths). After ``relay_delay`` seconds, or as soon
as every direct dial has failed, it also tries the relayed paths: dialling the peer's relayed
address (the peer-dials-relay path, RFC 6062 §5.3) and a Connect from its own allocation to the
peer's candidates (RFC 6062 §5.2), while accepting whatever arrives through its own allocation.

Every connected stream runs the record handshake (:func:`delshare.link.records.handshake`) with
the PAKE-derived key; roles come from the app (sender/receiver), not from who dialled, so every
raced stream agrees. Then the receiver reports its view of the path in one CONTROL record
(``{"t": "path"}``): only the side that used a relay knows a stream was relayed. The sender
takes the first link that reached that point and answers ``{"t": "chosen"}`` on it; every other
stream is closed, which the receiver's pending links see as a closed link.

Giving up early: once every outgoing attempt of ours has failed (and no more are scheduled),
only the peer's dials can still produce a link. With a ``give_up`` callback (the app tells the
peer over the rendezvous and waits for the peer to say the same) the race fails as soon as both
sides are in that state, instead of waiting out ``total_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from delshare.address import display_address
from delshare.fields import Fields
from delshare.link.candidates import Candidate, Listener
from delshare.link.records import (
    LinkError,
    LinkProtocolError,
    RecordChannel,
    RecordKind,
    Role,
    abort_stream,
    handshake,
)

__all__ = [
    "GiveUp",
    "LinkPath",
    "LocalEndpoints",
    "Mode",
    "NoPathError",
    "RaceConfig",
    "RacedLink",
    "RelayAllocation",
    "Stream",
    "combine_modes",
    "race",
]

Mode = Literal["any", "direct", "relay"]
_PATH_KINDS: tuple[Literal["direct", "relay"], ...] = ("direct", "relay")
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class NoPathError(LinkError):
    """No raced path produced an authenticated link in time."""


class RelayAllocation(Protocol):
    """What the race needs from a TURN TCP allocation (see :mod:`delshare.link.relay`)."""

    @property
    def server(self) -> str:
        """The TURN server, as printed in ``connected: relay <server>``."""
        ...

    async def connect(self, peer: tuple[str, int]) -> Stream:
        """Connect (RFC 6062 §5.2) to ``peer`` and bind a data connection to it."""
        ...

    async def accept(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, tuple[str, int]]:
        """The next peer-initiated connection (RFC 6062 §5.3), already bound."""
        ...


@dataclass(frozen=True, slots=True)
class LinkPath:
    """How the link runs: ``direct`` to a peer address, or ``relay`` through a TURN server."""

    kind: Literal["direct", "relay"]
    address: str
    labelled: bool = field(default=True, compare=False)
    """False for a relayed path known only by its relayed address, not by its TURN server."""

    def line(self) -> str:
        """The one line both sides print, e.g. ``connected: relay 203.0.113.5:3478``."""
        return f"connected: {self.kind} {self.address}"

    def to_wire(self) -> dict[str, str]:
        return {"kind": self.kind, "address": self.address}

    @classmethod
    def from_wire(cls, fields: Fields) -> LinkPath:
        kind = fields.one_of("kind", _PATH_KINDS)
        return cls(kind, fields.text("address", max_len=300))

    def merged(self, peer: LinkPath) -> LinkPath:
        """Our view corrected by the peer's: relayed if either side used a relay; a named TURN
        server rather than a bare relayed address."""
        if (self.kind == "relay" and self.labelled) or peer.kind == "direct":
            return self
        return peer


@dataclass
class LocalEndpoints:
    """Our side of the race: listener and allocation, either may be missing."""

    listener: Listener | None = None
    allocation: RelayAllocation | None = None


@dataclass(frozen=True)
class RaceConfig:
    """Who we are and how long each step may take (seconds)."""

    key: bytes
    role: Role
    mode: Mode = "any"
    relay_delay: float = 0.25
    connect_timeout: float = 5.0
    handshake_timeout: float = 10.0
    total_timeout: float = 30.0

    @property
    def is_sender(self) -> bool:
        return self.role in ("sender", "initiator")


@dataclass
class RacedLink:
    """The winning link and how it runs."""

    channel: RecordChannel
    path: LinkPath
    via_own_allocation: bool = False
    """Whether the link runs through our own TURN allocation (which must then stay open)."""


def combine_modes(ours: Mode, theirs: Mode) -> Mode:
    """The mode both sides can live with; LinkError if one insists on direct, one on relay."""
    if ours == "any":
        return theirs
    if theirs not in ("any", ours):
        raise LinkError(f"we allow only {ours} links, the peer only {theirs} links")
    return ours


def _control(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def _read_path(channel: RecordChannel, kind: str) -> LinkPath:
    """The path in the peer's ``kind`` control record (``path`` or ``chosen``)."""
    record = await channel.recv_record()
    what = f"{kind!r} control record"
    if record.kind is not RecordKind.CONTROL:
        raise LinkProtocolError(f"{what} is not a JSON object")
    fields = Fields.load(record.payload, LinkProtocolError, what)  # not JSON, or nested too deep
    fields.one_of("t", (kind,))
    return LinkPath.from_wire(fields.nested("path"))


@dataclass
class _Racer:
    config: RaceConfig
    local: LocalEndpoints
    peer: list[Candidate]
    results: asyncio.Queue[tuple[RecordChannel, LinkPath]] = field(default_factory=asyncio.Queue)
    errors: list[str] = field(default_factory=list)
    relay_go: asyncio.Event = field(default_factory=asyncio.Event)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    own_relayed: set[asyncio.StreamWriter] = field(default_factory=set)
    channels: set[RecordChannel] = field(default_factory=set)  # handshaken; each owns its socket
    own_channels: set[RecordChannel] = field(default_factory=set)  # through our own allocation
    tasks: set[asyncio.Task[object]] = field(default_factory=set)
    direct_pending: int = 0
    outgoing: int = 0  # our dials and Connects not yet failed
    spawning: bool = True  # more outgoing attempts may still be scheduled
    exhausted: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def direct(self) -> bool:
        return self.config.mode != "relay"

    def anything_to_try(self) -> bool:
        """False when no attempt could ever succeed (e.g. relay-only and no relay anywhere)."""
        direct = self.config.mode != "relay" and (
            self.local.listener is not None or any(c.kind != "relay" for c in self.peer)
        )
        relay = self.config.mode != "direct" and (
            self.local.allocation is not None or any(c.kind == "relay" for c in self.peer)
        )
        return direct or relay

    def spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def start(self) -> None:
        direct_targets = [c for c in self.peer if c.kind != "relay"] if self.direct else []
        self.direct_pending = len(direct_targets)
        for candidate in direct_targets:
            dial = functools.partial(self._dial, candidate)
            self._spawn_attempt(dial, LinkPath("direct", str(candidate)), True)
        if self.direct and self.local.listener is not None:
            self.spawn(self._accept_direct(self.local.listener))
        if self.config.mode != "direct":
            self.spawn(self._start_relayed())
        else:
            self._done_spawning()
        if not direct_targets:
            self.relay_go.set()

    def _spawn_attempt(
        self, connect: Callable[[], Awaitable[Stream]], path: LinkPath, direct: bool
    ) -> None:
        # A factory, not a coroutine: a task cancelled before its first step (the race ended)
        # never runs ``_attempt``, and a coroutine made for it would never be awaited
        # ("RuntimeWarning: coroutine ... was never awaited" at garbage collection).
        self.outgoing += 1
        self.spawn(self._attempt(connect, path, direct))

    def _done_spawning(self) -> None:
        self.spawning = False
        self._check_exhausted()

    def _check_exhausted(self) -> None:
        if not self.spawning and self.outgoing <= 0:
            self.exhausted.set()

    async def _start_relayed(self) -> None:
        """Relayed attempts, one relay hop before two: dialling the peer's relayed address and
        Connects to its other candidates first, a Connect to its relayed address (both
        allocations in the path) one ``relay_delay`` later."""
        allocation = self.local.allocation
        if allocation is not None:
            self.spawn(self._accept_relayed(allocation))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.relay_go.wait(), self.config.relay_delay)
        relayed = [c for c in self.peer if c.kind == "relay"]
        for candidate in relayed:
            path = LinkPath("relay", candidate.server or str(candidate), bool(candidate.server))
            self._spawn_attempt(functools.partial(self._dial, candidate), path, False)
        if allocation is None:
            self._done_spawning()
            return
        others = [c for c in self.peer if c.kind != "relay"] if self.config.mode == "any" else []
        for candidate in others:
            self._spawn_alloc_connect(allocation, candidate)
        if relayed or others:
            await asyncio.sleep(self.config.relay_delay)
        for candidate in relayed:
            self._spawn_alloc_connect(allocation, candidate)
        self._done_spawning()

    def _spawn_alloc_connect(self, allocation: RelayAllocation, candidate: Candidate) -> None:
        path = LinkPath("relay", allocation.server)
        connect = functools.partial(self._alloc_connect, allocation, candidate)
        self._spawn_attempt(connect, path, False)

    async def _dial(self, candidate: Candidate) -> Stream:
        async with asyncio.timeout(self.config.connect_timeout):
            return await asyncio.open_connection(candidate.host, candidate.port, limit=1 << 20)

    async def _alloc_connect(self, allocation: RelayAllocation, candidate: Candidate) -> Stream:
        async with asyncio.timeout(self.config.connect_timeout):
            reader, writer = await allocation.connect(candidate.address)
        self.own_relayed.add(writer)
        return reader, writer

    async def _accept_direct(self, listener: Listener) -> None:
        while True:
            reader, writer = await listener.accepted.get()
            peer = writer.get_extra_info("peername")
            label = display_address(peer[0], peer[1]) if peer else "?"
            self.writers.add(writer)  # closed by finish() even if the task never starts
            self.spawn(self._authenticate(reader, writer, LinkPath("direct", label)))

    async def _accept_relayed(self, allocation: RelayAllocation) -> None:
        while True:
            try:
                reader, writer, _peer = await allocation.accept()
            except Exception as exc:  # the allocation ended (TURN client error) or the socket
                self.errors.append(f"relay accept: {exc or type(exc).__name__}")
                return
            self.own_relayed.add(writer)
            self.writers.add(writer)
            self.spawn(self._authenticate(reader, writer, LinkPath("relay", allocation.server)))

    async def _attempt(
        self, connect: Callable[[], Awaitable[Stream]], path: LinkPath, direct: bool
    ) -> None:
        try:
            reader, writer = await connect()
        except Exception as exc:  # OSError, timeout, or any TURN client failure
            self._failed(f"{path.kind} {path.address}: {exc or type(exc).__name__}", direct)
            return
        if not await self._authenticate(reader, writer, path):
            self._failed(None, direct)  # _authenticate recorded why

    def _failed(self, message: str | None, direct: bool) -> None:
        if message is not None:
            self.errors.append(message)
        if direct:
            self.direct_pending -= 1
            if self.direct_pending <= 0:
                self.relay_go.set()
        self.outgoing -= 1
        self._check_exhausted()

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, view: LinkPath
    ) -> bool:
        """Handshake, then agree on the path; queue the link. False if it failed."""
        self.writers.add(writer)
        try:
            channel = await handshake(
                reader, writer, self.config.key, self.config.role, self.config.handshake_timeout
            )
        except Exception as exc:  # LinkError, OSError, or anything odd: this path failed
            self.errors.append(f"{view.kind} {view.address}: {exc or type(exc).__name__}")
            await abort_stream(writer)
            return False
        self.channels.add(channel)
        if writer in self.own_relayed:
            self.own_channels.add(channel)
        try:
            path = await self._agree(channel, view)
        except Exception as exc:
            self.errors.append(f"{view.kind} {view.address}: {exc or type(exc).__name__}")
            channel.abort()
            return False
        if path.kind == "relay" and self.config.mode == "direct":
            return False
        if path.kind == "direct" and self.config.mode == "relay":
            return False
        await self.results.put((channel, path))
        return True

    async def _agree(self, channel: RecordChannel, view: LinkPath) -> LinkPath:
        async with asyncio.timeout(self.config.handshake_timeout):
            if self.config.is_sender:
                return view.merged(await _read_path(channel, "path"))
            await channel.send_control(_control({"t": "path", "path": view.to_wire()}))
        # The receiver waits (without a bound) until the sender picks this link or closes it.
        return view.merged(await _read_path(channel, "chosen"))

    async def finish(self, winner: RecordChannel | None) -> None:
        """Cancel every attempt and close every stream and channel but the winner."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        while not self.results.empty():
            self.results.get_nowait()
        for channel in self.channels - {winner}:
            channel.abort()
        await asyncio.gather(*(abort_stream(w) for w in self.writers), return_exceptions=True)


GiveUp = Callable[[], Awaitable[None]]
"""Called once our outgoing attempts are all spent: tell the peer, return when it is too."""


async def race(
    config: RaceConfig,
    local: LocalEndpoints,
    peer: Iterable[Candidate],
    *,
    give_up: GiveUp | None = None,
) -> RacedLink:
    """Race every allowed path to ``peer``; return the chosen authenticated link.

    Raises :class:`NoPathError` when nothing authenticates within ``config.total_timeout``, or
    as soon as ``give_up`` returns (both sides spent every attempt) when it is given.
    """
    racer = _Racer(config, local, list(peer))
    if not racer.anything_to_try():
        raise NoPathError(f"no {_MODE_WORDS[config.mode]}path to try: configure a TURN server")
    winner: RecordChannel | None = None
    try:
        racer.start()
        async with asyncio.timeout(config.total_timeout):
            winner, path = await _first_link(racer, give_up)
        if config.is_sender:
            await winner.send_control(_control({"t": "chosen", "path": path.to_wire()}))
    except TimeoutError:
        raise NoPathError(_no_path_message(racer.errors, config.total_timeout)) from None
    finally:
        await racer.finish(winner)
    return RacedLink(winner, path, winner in racer.own_channels)


_MODE_WORDS = {"any": "", "direct": "direct ", "relay": "relayed "}


async def _first_link(racer: _Racer, give_up: GiveUp | None) -> tuple[RecordChannel, LinkPath]:
    """The first authenticated link; NoPathError once both sides have nothing left to try."""
    if give_up is None:
        return await racer.results.get()
    link = asyncio.ensure_future(racer.results.get())
    hopeless = asyncio.ensure_future(_both_spent(racer, give_up))
    try:
        await asyncio.wait({link, hopeless}, return_when=asyncio.FIRST_COMPLETED)
        if link.done():
            return link.result()
        hopeless.result()  # a failure of give_up itself surfaces here
        tried = "; ".join(racer.errors[-4:]) or "nothing to try"
        raise NoPathError(f"no path to the peer: every attempt failed on both sides ({tried})")
    finally:
        for task in (link, hopeless):
            task.cancel()
        await asyncio.gather(link, hopeless, return_exceptions=True)


async def _both_spent(racer: _Racer, give_up: GiveUp) -> None:
    await racer.exhausted.wait()
    await give_up()


def _no_path_message(errors: list[str], timeout: float) -> str:
    tried = "; ".join(errors[-4:]) if errors else "no candidate to try"
    return f"could not connect to the peer within {timeout:g} s ({tried})"
