"""Rendezvous mailboxes kept in Redis, so that independent relay nodes share them.

Theory of operation: every rule of ``mailbox.MailboxTable`` (two sides at most, bodies buffered
until the other side joins, message/byte/age bounds, "peer left", forget an empty mailbox) runs
as a Lua script, so each step is atomic however many nodes race. A side's bodies go into the
other side's inbox stream; each node runs one reader task that ``XREAD BLOCK``s on the inboxes of
all its own clients at once (plus a per-node wake stream, written when a client starts reading,
so the blocking read is restarted without polling) and hands what it reads to the server. Every
key carries the mailbox deadline as its expiry, so Redis forgets everything on its own. A side's
node renews a lease for it every heartbeat; a side whose lease lapsed (its node crashed) is
reaped by whoever touches the mailbox next, and its peer is told "peer left".

Bounds hold across nodes: the number of mailboxes and their bytes together are bounded by the
sum of the live nodes' ``max_mailboxes`` and ``max_total_bytes`` (each node registers its own
in ``nodes``/``capacity`` and renews it every heartbeat, so the total scales with the number of
nodes), and the seats one client address holds, on any node, by ``max_mailboxes_per_ip``. If
Redis loses its data (a restart without persistence), a node whose client's mailbox vanished
before its deadline tells that client "rendezvous lost its state", not "mailbox expired".

The keys and the scripts that keep them are in ``redis_scripts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import KeyT, StreamIdT

from delshare.errors import PairingError
from delshare.pairing import redis_scripts as scripts
from delshare.pairing.backend import Deliver
from delshare.pairing.codes import nameplate_candidates
from delshare.pairing.mailbox import (
    LOST,
    SIDES,
    BodyRelayed,
    ClientId,
    Event,
    MailboxExpired,
    MailboxLimits,
    MailboxLost,
    PeerLeft,
    RendezvousRefused,
    refusal,
)

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "del:"
MIN_LEASE = 1.0  # seconds; a node stalled longer than its lease loses its clients' sides
BEAT_BATCH = 200  # members renewed per script call
REDIS_TIMEOUT = 5.0  # seconds to connect, and for a reply beyond a command's own blocking time
LOST_SLACK = 1.0  # a mailbox gone this long before its deadline was lost, not expired

_BEAT_EVENTS: dict[str, type[PeerLeft | MailboxExpired | MailboxLost]] = {
    "left": PeerLeft,
    "expired": MailboxExpired,
}


@dataclass
class _Member:
    """One of this node's clients and the mailbox side it holds."""

    keys: list[str]
    mailbox_id: str
    side: int
    deadline: float  # loop clock
    ip_key: str
    outbox: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cursor: str = "0-0"  # last inbox entry read; "0-0" also reads what was buffered
    reading: bool = True
    writer: asyncio.Task[None] | None = None

    @property
    def inbox(self) -> str:
        return self.keys[self.side]


class RedisBackend:
    """``MailboxBackend`` on Redis: ``RedisBackend("redis://127.0.0.1:6379/0", limits)``.

    ``heartbeat`` (seconds) bounds how late expiry is noticed and how often leases are renewed;
    a crashed node's clients count as gone after ``max(3 * heartbeat, MIN_LEASE)``.
    """

    def __init__(
        self,
        url: str,
        limits: MailboxLimits | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        heartbeat: float = 1.0,
    ) -> None:
        self.limits = limits or MailboxLimits()
        # Bounded socket waits; the longest command is a read blocked for at most a heartbeat.
        # RESP2 pins the shape of XREAD replies across redis-py versions.
        self._redis: Redis = Redis.from_url(
            url,
            protocol=2,
            decode_responses=True,
            socket_connect_timeout=REDIS_TIMEOUT,
            socket_timeout=heartbeat + REDIS_TIMEOUT,
        )
        self._prefix = prefix
        self._heartbeat = heartbeat
        self._lease_ms = int(max(3 * heartbeat, MIN_LEASE) * 1000)
        self._node = secrets.token_hex(8)
        self._wake_key = f"{prefix}node:{self._node}"
        self._shared = [f"{prefix}{name}" for name in ("index", "sizes", "nodes", "capacity")]
        self._wake_id = "0-0"
        self._members: dict[ClientId, _Member] = {}
        self._deliver: Deliver | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._open = self._script(scripts.OPEN)
        self._allocate = self._script(scripts.ALLOCATE)
        self._register = self._script(scripts.NODE)
        self._add = self._script(scripts.ADD)
        self._close = self._script(scripts.CLOSE)
        self._beat = self._script(scripts.BEAT)

    def _script(self, body: str) -> Any:
        return self._redis.register_script(scripts.LUA_COMMON + body)

    async def start(self, deliver: Deliver) -> None:
        """Check Redis is there, then start this node's reader."""
        self._deliver = deliver
        try:
            self._wake_id = str(await self._redis.xadd(self._wake_key, {"w": "1"}, maxlen=1))
            await self._redis.pexpire(self._wake_key, self._lease_ms)
            await self._announce(self._lease_ms)
        except RedisError as exc:
            await self._redis.aclose()
            raise PairingError(f"cannot use the rendezvous Redis: {exc}") from exc
        self._reader = asyncio.create_task(self._read_forever())

    async def aclose(self) -> None:
        """Stop reading and release Redis (the server closed every client before)."""
        self._closing = True
        writers = [m.writer for m in self._members.values() if m.writer is not None]
        for writer in writers:
            writer.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        if self._reader is not None:
            await self._stop_reader(self._reader)
        with contextlib.suppress(RedisError):
            await self._redis.delete(self._wake_key)
            await self._announce(0)
        await self._redis.aclose()

    async def _announce(self, lease_ms: int) -> None:
        """Register this node's share of the cluster's bounds for ``lease_ms`` (0: withdraw)."""
        limits = self.limits
        args = [self._node, lease_ms, limits.max_mailboxes, limits.max_total_bytes]
        await self._register(keys=self._shared[2:], args=args)

    def mailboxes(self) -> int:
        """Mailboxes a client of this node holds a seat of."""
        return len({m.mailbox_id for m in self._members.values()})

    async def _stop_reader(self, reader: asyncio.Task[None]) -> None:
        # Wake the blocking read rather than cancel it: redis-py can lose a cancellation that
        # lands mid-command (redis/redis-py#2028); the reader checks ``_closing`` every turn.
        with contextlib.suppress(RedisError):
            await self._wake()
        with contextlib.suppress(TimeoutError, RedisError):
            await asyncio.wait_for(reader, self._heartbeat + REDIS_TIMEOUT)

    async def _wake(self) -> None:
        """Make the reader's blocking read return (it then rereads the inbox list)."""
        await self._redis.xadd(self._wake_key, {"w": "1"}, maxlen=1)

    async def open(
        self, client: ClientId, nameplate: str, *, side: str | None = None, ip: str = ""
    ) -> bool:
        """Take ``side``'s seat of ``nameplate``'s mailbox (atomically across nodes)."""
        self._check_new(client)
        seat = 0 if side is None else SIDES.index(side) + 1
        keys = self._keys(nameplate)
        args = [secrets.token_hex(8), nameplate, self._age_ms(), self._lease_ms, seat]
        args += self._bounds(ip)
        reply = await self._run(self._open, keys, args)
        taken = self._taken(client, reply, keys, ip, nameplate, side or "")
        await self._run_command(self._wake())
        return taken >= len(SIDES)

    async def allocate(self, client: ClientId, *, ip: str = "") -> str:
        """Take the sender's seat of a fresh mailbox whose number no one holds."""
        self._check_new(client)
        args = [self._prefix, secrets.token_hex(8), self._age_ms(), self._lease_ms]
        args += self._bounds(ip)
        reply = await self._run(self._allocate, self._shared, args + nameplate_candidates())
        nameplate = str(reply[4]) if reply[0] != 0 else ""
        self._taken(client, reply, self._keys(nameplate), ip, nameplate, SIDES[0])
        await self._run_command(self._wake())
        return nameplate

    def _check_new(self, client: ClientId) -> None:
        if client in self._members:
            raise RendezvousRefused("mailbox already open on this connection", "protocol")

    def _age_ms(self) -> int:
        return max(1, int(self.limits.max_age * 1000))

    def _ip_key(self, ip: str) -> str:
        return f"{self._prefix}ip:{ip}" if ip else ""

    def _bounds(self, ip: str) -> list[Any]:
        """ip key, per-IP limit, this node's share of the totals, node id (script arguments)."""
        limits = self.limits
        return [
            self._ip_key(ip),
            limits.max_mailboxes_per_ip,
            limits.max_mailboxes,
            limits.max_total_bytes,
            self._node,
        ]

    def _taken(
        self, client: ClientId, reply: Any, keys: list[str], ip: str, nameplate: str, side: str
    ) -> int:
        """Record the seat a script gave ``client``; raise its refusal. Returns seats taken."""
        side_number, detail, *rest = reply
        if side_number == 0:
            raise refusal(str(detail), self.limits, nameplate, side)
        deadline = asyncio.get_running_loop().time() + int(detail) / 1000
        member = _Member(keys, str(rest[0]), int(side_number), deadline, self._ip_key(ip))
        member.writer = asyncio.create_task(self._write(client, member.outbox))
        self._members[client] = member
        return int(rest[1])

    async def add(self, client: ClientId, body: str) -> None:
        """Put ``body`` in the other side's inbox, within the mailbox's limits."""
        member = self._members.get(client)
        if member is None:
            raise PairingError("open a mailbox first")
        try:
            data = body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PairingError("body is not valid UTF-8") from exc
        limits = self.limits
        args = [member.mailbox_id, member.side, data, limits.max_messages, limits.max_bytes]
        args += [limits.max_message_size, limits.max_total_bytes, self._node]
        label = await self._run(self._add, member.keys, args)
        if label in ("gone", "expired"):
            if asyncio.get_running_loop().time() < member.deadline - LOST_SLACK:
                raise RendezvousRefused(LOST, "lost")
            label = "expired"
        if label:
            raise refusal(str(label), limits)

    async def close(self, client: ClientId) -> None:
        """Give up ``client``'s side; the peer is told, an empty mailbox is deleted."""
        member = self._members.pop(client, None)
        if member is None:
            return
        if member.writer is not None:
            member.writer.cancel()
        try:
            args = [member.mailbox_id, member.side, member.ip_key]
            await self._close(keys=member.keys, args=args)
        except RedisError as exc:  # its keys expire anyway, and the peer's lease check notices
            log.warning("rendezvous: could not close a mailbox side in Redis: %s", exc)

    def _keys(self, nameplate: str) -> list[str]:
        mailbox = f"{self._prefix}mb:{nameplate}"
        return [
            mailbox,
            f"{mailbox}:in1",
            f"{mailbox}:in2",
            f"{mailbox}:live1",
            f"{mailbox}:live2",
            *self._shared,
        ]

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._run_command(script(keys=keys, args=args))

    @staticmethod
    async def _run_command(command: Any) -> Any:
        try:
            return await command
        except RedisError as exc:
            log.warning("rendezvous: Redis failed: %s", exc)
            raise RendezvousRefused(
                "rendezvous store unavailable, try again later", "store"
            ) from exc

    async def _write(self, client: ClientId, outbox: asyncio.Queue[Event]) -> None:
        """Hand ``client``'s events to the server in order, without holding up the reader."""
        assert self._deliver is not None
        while True:
            event = await outbox.get()
            await self._deliver([event])

    def _emit(self, member: _Member, event: Event) -> None:
        member.outbox.put_nowait(event)
        if not isinstance(event, BodyRelayed):
            member.reading = False  # the connection is about to be closed

    async def _read_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self._heartbeat
        while not self._closing:
            try:
                await self._read_once()
                self._expire_due(loop.time())
                if loop.time() >= next_beat:
                    next_beat = loop.time() + self._heartbeat
                    await self._renew()
            except RedisError as exc:
                log.warning("rendezvous: Redis read failed, retrying: %s", exc)
                await asyncio.sleep(self._heartbeat)
            except Exception:  # a bug here must not stop this node's relaying for good
                log.exception("rendezvous: reader failed, retrying")
                await asyncio.sleep(self._heartbeat)

    async def _read_once(self) -> None:
        """One blocking read over the wake stream and every inbox this node reads."""
        readers = {m.inbox: (c, m) for c, m in self._members.items() if m.reading}
        streams: dict[KeyT, StreamIdT] = {self._wake_key: self._wake_id}
        streams.update({key: member.cursor for key, (_, member) in readers.items()})
        reply: Any = await self._redis.xread(
            streams, count=self.limits.max_messages + 1, block=self._block_ms()
        )
        for key, entries in reply or []:
            if key == self._wake_key:
                self._wake_id = entries[-1][0]
            elif key in readers:
                self._take(*readers[key], entries)

    def _take(self, client: ClientId, member: _Member, entries: list[Any]) -> None:
        for entry_id, fields in entries:
            if not member.reading:
                return
            member.cursor = entry_id
            if "body" in fields:
                self._emit(member, BodyRelayed(client, fields["body"]))
            else:
                self._emit(member, PeerLeft(client))

    def _block_ms(self) -> int:
        deadlines = [m.deadline for m in self._members.values() if m.reading]
        wait = self._heartbeat
        if deadlines:
            wait = min(wait, min(deadlines) - asyncio.get_running_loop().time())
        return max(1, int(wait * 1000))

    def _expire_due(self, now: float) -> None:
        for client, member in list(self._members.items()):
            if member.reading and member.deadline <= now:
                self._emit(member, MailboxExpired(client))

    async def _renew(self) -> None:
        """Renew this node's leases and wake stream; learn of crashed peers and lost sides."""
        await self._redis.pexpire(self._wake_key, self._lease_ms)
        await self._announce(self._lease_ms)
        members = [(c, m) for c, m in self._members.items() if m.reading]
        for start in range(0, len(members), BEAT_BATCH):
            batch = members[start : start + BEAT_BATCH]
            keys = [key for _, m in batch for key in m.keys]
            args: list[Any] = [self._lease_ms]
            for _, member in batch:
                args += [member.mailbox_id, member.side]
            statuses = await self._beat(keys=keys, args=args)
            now = asyncio.get_running_loop().time()
            for (client, member), status in zip(batch, statuses, strict=True):
                event = _BEAT_EVENTS.get(status)
                if event is MailboxExpired and now < member.deadline - LOST_SLACK:
                    event = MailboxLost  # gone before its time: Redis lost its data
                if event is not None and member.reading:
                    self._emit(member, event(client))
