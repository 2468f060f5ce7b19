"""From a paired channel to one authenticated link: gather, exchange, permit, race.

Theory of operation. While pairing (:func:`pair_and_gather`), each side gathers its candidates:
listener + host addresses unless relay-only, a TURN TCP allocation unless direct-only, the
server-reflexive address when a TURN server is configured. Once paired, each side sends them
through the encrypted paired channel (:class:`~delshare.link.signalling.CandidatesOffered`)
and reads the peer's. When a relay may be used (the agreed mode allows it and either side has a
relayed candidate), two more steps follow. A side without a TURN server of its own learns its
public address from the peer's TURN server (STUN Binding needs no credentials) and sends it
(``ReflexiveFound``, empty otherwise), so the peer can permit it. Each side then permits the
peer's IPs on its allocation and sends ``RelayReady``; racing starts only after the peer's
``RelayReady``, so no relayed dial hits an allocation whose permission is not there yet.
Without a relay both steps would carry nothing, so both sides (knowing both lists) skip them:
two rendezvous round trips less before the first byte. A version 1 peer always takes them,
and so do we with it. The race (:func:`delshare.link.race.race`) runs with a key derived from
the PAKE key for this purpose only. What the winning link does not use is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from delshare.app.hints import turn_hint
from delshare.errors import DelshareError, PairingError
from delshare.link import signalling
from delshare.link.candidates import (
    Candidate,
    IPAddress,
    Listener,
    host_addresses,
    host_candidates,
    start_listener,
)
from delshare.link.race import (
    GiveUp,
    LocalEndpoints,
    Mode,
    RaceConfig,
    RacedLink,
    combine_modes,
    race,
)
from delshare.link.records import LinkError, Role
from delshare.link.relay import TurnRelay, TurnSettings, open_relay, reflexive_address
from delshare.link.signalling import (
    FIRST_SKIPPING_VERSION,
    AttemptsExhausted,
    CandidatesOffered,
    ReflexiveFound,
    RelayReady,
)
from delshare.pairing import PairedChannel, derive_key
from delshare.pairing.wire import TurnServer

__all__ = [
    "LINK_KEY_PURPOSE",
    "ConnectOptions",
    "Connection",
    "Gathered",
    "HandedTurn",
    "connect_peer",
    "connect_with",
    "gather",
    "offer_candidates",
    "pair_and_gather",
    "race_gathered",
    "wants_handed_turn",
]

T = TypeVar("T")
LINK_KEY_PURPOSE = b"delshare/link/v1"
REFLEXIVE_TIMEOUT = 5.0


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach the peer: TURN server, forced path, race timings.

    ``more_turn``: further TURN servers, tried in order when ``turn`` cannot allocate.
    ``host_addresses``: the only interface addresses to offer as host candidates (the command
    line's ``DELSHARE_HOST_ADDRESSES``); empty: every usable interface.
    """

    turn: TurnSettings | None = None
    mode: Mode = "any"
    relay_delay: float = 0.25
    total_timeout: float = 30.0
    more_turn: tuple[TurnSettings, ...] = ()
    host_addresses: tuple[IPAddress, ...] = ()


@dataclass
class Connection:
    """The winning link and what must stay open while it is used."""

    link: RacedLink
    relay: TurnRelay | None = None

    async def close(self) -> None:
        """Close the link, then the allocation it may run through."""
        await self.link.channel.close()
        if self.relay is not None:
            await self.relay.close()


@dataclass
class Gathered:
    """Our endpoints and the candidates that describe them, before racing."""

    listener: Listener | None
    relay: TurnRelay | None
    candidates: list[Candidate]

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        if self.relay is not None:
            await self.relay.close()


Notice = Callable[[str], None]


def _ignore(text: str) -> None:
    pass


async def gather(
    options: ConnectOptions, notice: Notice = _ignore, *, listen: bool = True
) -> Gathered:
    """Listener and host candidates, allocation, server-reflexive address, as the mode allows.

    Without ``--relay-only`` an unusable TURN server is reported through ``notice`` and the
    session goes on with direct paths only. ``listen=False``: no listener (a side that only
    dials, e.g. ``send --to``).
    """
    listener = await start_listener() if options.mode != "relay" and listen else None
    gathered = Gathered(listener, None, [])
    try:
        if listener is not None:
            addresses = host_addresses(options.host_addresses)
            gathered.candidates += host_candidates(addresses, listener.port, ipv6=listener.ipv6)
        if options.turn is not None and options.mode != "direct":
            servers = (options.turn, *options.more_turn)
            gathered.relay = await _first_relay(servers, options.mode == "relay", notice)
            gathered.candidates += gathered.relay.candidates() if gathered.relay else []
        elif options.turn is not None:
            reflexive = await reflexive_address(options.turn)
            gathered.candidates += [reflexive] if reflexive is not None else []
    except BaseException:
        await gathered.close()
        raise
    return gathered


async def _first_relay(
    servers: tuple[TurnSettings, ...], required: bool, notice: Notice
) -> TurnRelay | None:
    """An allocation on the first TURN server of ``servers`` that gives one, tried in order."""
    for position, settings in enumerate(servers):
        last = position == len(servers) - 1
        try:
            return await open_relay(settings)
        except (DelshareError, OSError, TimeoutError) as exc:
            if required and last:
                raise LinkError(f"TURN server {settings.label}: {exc or 'timed out'}") from exc
            hint = turn_hint(exc)
            then = "trying direct paths only" if last else "trying the next one"
            notice(
                f"TURN server {settings.label} unusable, {then}: "
                f"{exc or 'timed out'}{f' ({hint})' if hint else ''}"
            )
    return None


def _candidates_message(gathered: Gathered, mode: Mode) -> dict[str, object]:
    return signalling.encode(CandidatesOffered(mode, tuple(gathered.candidates)))


def _relay_setup_needed(
    peer_version: object, mode: Mode, ours: list[Candidate], peer: list[Candidate]
) -> bool:
    """Whether the reflexive and ready steps run; both sides reach the same answer."""
    if not isinstance(peer_version, int) or peer_version < FIRST_SKIPPING_VERSION:
        return True
    return mode != "direct" and any(c.kind == "relay" for c in [*ours, *peer])


def _parse_peer(message: dict[str, Any]) -> tuple[Mode, list[Candidate]]:
    offered = signalling.decode(message)
    if not isinstance(offered, CandidatesOffered):
        raise PairingError("peer sent something else than its candidates")
    return offered.mode, list(offered.candidates)


async def _reflexive_from_peer_server(
    gathered: Gathered, peer: list[Candidate], mode: Mode
) -> list[Candidate]:
    """Without a TURN server of our own, ask the peer's (STUN Binding, no credentials) which
    public address we have, so the peer can permit it on its allocation (RFC 8656 §9)."""
    if mode == "direct" or any(c.kind == "srflx" for c in gathered.candidates):
        return []
    server = next((c.server for c in peer if c.kind == "relay" and c.server), None)
    if server is None:
        return []
    from delshare.aio.client import stun_binding  # only with a TURN server: not at start-up

    try:
        host, port = await stun_binding(f"turn:{server}?transport=tcp", timeout=REFLEXIVE_TIMEOUT)
    except (DelshareError, OSError, TimeoutError):
        return []
    return [Candidate("srflx", host, port)]


def _parse_reflexive(message: dict[str, Any], known: list[Candidate]) -> list[Candidate]:
    found = signalling.decode(message)
    if not isinstance(found, ReflexiveFound):
        raise PairingError("peer sent something else than its reflexive candidates")
    return [c for c in found.candidates if c.kind == "srflx" and c not in known][:4]


async def _expect(paired: PairedChannel, kind: str) -> dict[str, Any]:
    message = await paired.receive()
    if message.get("t") == "error":
        raise PairingError(f"peer gave up: {message.get('reason', '?')}")
    if message.get("t") != kind:
        raise PairingError(f"expected {kind!r} from peer, got {message.get('t')!r}")
    return message


async def _prepare_relays(
    paired: PairedChannel, gathered: Gathered, peer: list[Candidate], mode: Mode
) -> list[Candidate]:
    """Swap reflexive addresses, permit the peer on our allocation, wait for the peer's ready.

    Returns the peer's newly learned reflexive candidates.
    """
    learned = await _reflexive_from_peer_server(gathered, peer, mode)
    await paired.send(signalling.encode(ReflexiveFound(tuple(learned))))
    found = _parse_reflexive(await _expect(paired, "reflexive"), peer)
    if gathered.relay is not None and mode != "direct":
        await gathered.relay.permit(sorted({c.host for c in [*peer, *found]}))
    await paired.send(signalling.encode(RelayReady()))
    await _expect(paired, "ready")
    return found


async def race_gathered(
    gathered: Gathered,
    key: bytes,
    role: Role,
    mode: Mode,
    peer: list[Candidate],
    options: ConnectOptions,
    give_up: GiveUp | None = None,
) -> Connection:
    """Race from ``gathered`` to ``peer`` with ``key`` (already purpose-derived).

    Consumes ``gathered``: the listener always closes, the allocation stays open only when the
    winning link runs through it. Also the entry point for flows without pairing (tickets, LAN).
    ``give_up``: see :func:`delshare.link.race.race`.
    """
    winner: RacedLink | None = None
    try:
        config = RaceConfig(
            key=key,
            role=role,
            mode=mode,
            relay_delay=options.relay_delay,
            total_timeout=options.total_timeout,
        )
        local = LocalEndpoints(gathered.listener, gathered.relay if mode != "direct" else None)
        winner = await race(config, local, peer, give_up=give_up)
    finally:
        if gathered.listener is not None:
            gathered.listener.close()
        if (winner is None or not winner.via_own_allocation) and gathered.relay is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(gathered.relay.close())
            gathered.relay = None
    return Connection(winner, gathered.relay)


class HandedTurn:
    """The TURN server the rendezvous hands out (issue 12 item 9), for a side without ``--turn``.

    ``offer`` (the ``on_turn`` of :func:`delshare.pairing.pair`) takes the first stream (TCP or
    TLS) server in the list; ``settle`` ends the wait with none (pairing finished, or an older
    rendezvous that hands nothing out). :func:`pair_and_gather` gathers with it.
    """

    def __init__(self) -> None:
        self._found: asyncio.Future[TurnSettings | None] = (
            asyncio.get_running_loop().create_future()
        )

    def offer(self, servers: tuple[TurnServer, ...]) -> None:
        from delshare.turn.uri import TurnUriError, parse_turn_uri  # handed servers only

        chosen: TurnSettings | None = None
        for server in servers:
            try:
                uri = parse_turn_uri(server.urls)
            except TurnUriError:
                continue
            if uri.stream:
                chosen = TurnSettings(uri, server.username, server.credential)
                break
        if not self._found.done():
            self._found.set_result(chosen)

    def settle(self) -> None:
        if not self._found.done():
            self._found.set_result(None)

    async def options(self, options: ConnectOptions) -> ConnectOptions:
        """``options`` with the handed server, once known (unchanged when there is none)."""
        handed = await asyncio.shield(self._found)
        return options if handed is None else replace(options, turn=handed)


def wants_handed_turn(options: ConnectOptions) -> bool:
    """Whether to ask the rendezvous for a TURN server: none given, and relaying allowed."""
    return options.turn is None and options.mode != "direct"


async def _gather_with(
    options: ConnectOptions, notice: Notice, handed: HandedTurn | None
) -> Gathered:
    if handed is not None:
        options = await handed.options(options)
    return await gather(options, notice)


async def pair_and_gather(
    pairing: Awaitable[PairedChannel],
    options: ConnectOptions,
    notice: Notice = _ignore,
    handed: HandedTurn | None = None,
) -> tuple[PairedChannel, Gathered]:
    """Pair and gather at the same time (the TURN allocation takes round trips too).

    With ``handed``, gathering uses the TURN server the rendezvous hands out (it comes right
    after the mailbox is opened; pairing's end stops the wait). If either fails, the other is
    cancelled or closed and the failure is raised at once.
    """
    pairing_task = asyncio.ensure_future(pairing)
    if handed is not None:
        pairing_task.add_done_callback(lambda _: handed.settle())
    gathering = asyncio.ensure_future(_gather_with(options, notice, handed))
    try:
        done, _ = await asyncio.wait({pairing_task, gathering}, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            failure = task.exception()
            if failure is not None:
                raise failure
        return pairing_task.result(), gathering.result()
    except BaseException:
        await _discard(pairing_task, lambda paired: paired.close())
        await _discard(gathering, lambda gathered: gathered.close())
        raise


async def _discard(task: asyncio.Future[T], close: Callable[[T], Awaitable[None]]) -> None:
    """Cancel ``task``, or close what it produced."""
    task.cancel()
    with contextlib.suppress(BaseException):
        result = await task
        await close(result)


async def connect_peer(
    paired: PairedChannel,
    role: Role,
    options: ConnectOptions,
    notice: Notice = _ignore,
    gathered: Gathered | None = None,
) -> Connection:
    """Exchange candidates over ``paired`` and race to one authenticated link.

    ``gathered``: endpoints from :func:`pair_and_gather`; gathered here when missing.
    """
    if gathered is None:
        gathered = await gather(options, notice)
    message = await offer_candidates(paired, gathered, options)
    return await connect_with(paired, role, options, gathered, message)


async def offer_candidates(
    paired: PairedChannel, gathered: Gathered, options: ConnectOptions
) -> dict[str, Any]:
    """Send our candidates; return the peer's first message (its candidates, unless a sender
    sends a text instead, see :mod:`delshare.app.text`). Closes ``gathered`` on failure."""
    try:
        await paired.send(_candidates_message(gathered, options.mode))
        message = await paired.receive()
    except BaseException:
        await gathered.close()
        raise
    return message


async def connect_with(
    paired: PairedChannel,
    role: Role,
    options: ConnectOptions,
    gathered: Gathered,
    message: dict[str, Any],
) -> Connection:
    """The rest of :func:`connect_peer` once the peer's first ``message`` is in."""
    try:
        if message.get("t") == "error":
            raise PairingError(f"peer gave up: {message.get('reason', '?')}")
        peer_mode, peer = _parse_peer(message)
        mode = combine_modes(options.mode, peer_mode)
        if _relay_setup_needed(message.get("v"), mode, gathered.candidates, peer):
            peer += await _prepare_relays(paired, gathered, peer, mode)
    except BaseException:
        await gathered.close()
        raise
    key = derive_key(paired.key, LINK_KEY_PURPOSE)
    return await race_gathered(gathered, key, role, mode, peer, options, _giving_up(paired))


def _giving_up(paired: PairedChannel) -> GiveUp:
    """Tell the peer over the rendezvous that our attempts are spent (``{"t": "exhausted"}``)
    and return once it says the same. A peer that never says it (an older version, or a
    rendezvous gone quiet) leaves the race to its total timeout."""

    async def give_up() -> None:
        try:
            await paired.send(signalling.encode(AttemptsExhausted()))
            while not _is_exhausted(await paired.receive(timeout=_FOREVER)):
                pass
        except PairingError:
            await asyncio.Event().wait()  # no word from the peer: only the timeout ends the race

    return give_up


def _is_exhausted(message: dict[str, Any]) -> bool:
    with contextlib.suppress(PairingError):
        return isinstance(signalling.decode(message), AttemptsExhausted)
    return False


_FOREVER = 24 * 3600.0
