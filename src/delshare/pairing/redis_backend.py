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

Keys, under ``prefix`` (nameplates cannot contain ``:``)::

    mb:<nameplate>            hash: id, nameplate, deadline (ms, Redis clock), members,
                              connected, s1/s2 ("on" | "left"), messages, bytes
    mb:<nameplate>:in1, :in2  streams: bodies for side 1, 2; a "left" entry ends them
    mb:<nameplate>:live1, :live2  leases: the side's node is alive
    index                     sorted set nameplate -> deadline (the ``max_mailboxes`` bound)
    node:<id>                 stream: wakes that node's reader

One Redis (or a primary with replicas) serves all nodes; the scripts touch the shared index key,
so this is not meant for Redis Cluster.
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
from delshare.pairing.backend import Deliver
from delshare.pairing.mailbox import (
    MAX_SIDES,
    BodyRelayed,
    ClientId,
    Event,
    MailboxExpired,
    MailboxLimits,
    PeerLeft,
)

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "del:"
MIN_LEASE = 1.0  # seconds; a node stalled longer than its lease loses its clients' sides
BEAT_BATCH = 200  # members renewed per script call
REDIS_TIMEOUT = 5.0  # seconds to connect, and for a reply beyond a command's own blocking time

_LUA_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- k: hash, inbox of side 1, inbox of side 2, lease of side 1, lease of side 2, index
local function field(k, name)
  return redis.call('HGET', k[1], name)
end

local function current(k, id, now)
  local deadline = tonumber(field(k, 'deadline'))
  return deadline ~= nil and field(k, 'id') == id and now < deadline
end

local function drop(k)
  redis.call('ZREM', k[6], field(k, 'nameplate'))
  redis.call('DEL', k[1], k[2], k[3], k[4], k[5])
end

local function leave(k, side)
  redis.call('HSET', k[1], 's' .. side, 'left')
  redis.call('HINCRBY', k[1], 'connected', -1)
  local other = 3 - side
  if field(k, 's' .. other) == 'on' then
    redis.call('XADD', k[1 + other], '*', 'left', '1')
    redis.call('PEXPIREAT', k[1 + other], field(k, 'deadline'))
  end
end

local function reap(k)
  for side = 1, 2 do
    if field(k, 's' .. side) == 'on' and redis.call('EXISTS', k[3 + side]) == 0 then
      leave(k, side)
    end
  end
  if tonumber(field(k, 'connected')) <= 0 then
    drop(k)
  end
end
"""

# ARGV: new id, nameplate, max_mailboxes, max_age_ms, lease_ms, max_sides
# -> {side, remaining_ms, id} or {0, reason}
_OPEN = """
local k, now = KEYS, now_ms()
if redis.call('EXISTS', k[1]) == 1 then
  reap(k)
end
if redis.call('EXISTS', k[1]) == 0 then
  redis.call('ZREMRANGEBYSCORE', k[6], '-inf', now)
  if redis.call('ZCARD', k[6]) >= tonumber(ARGV[3]) then
    return {0, 'server busy: too many open mailboxes'}
  end
  local deadline = now + tonumber(ARGV[4])
  redis.call('HSET', k[1], 'id', ARGV[1], 'nameplate', ARGV[2], 'deadline', deadline,
    'members', 0, 'connected', 0, 'messages', 0, 'bytes', 0)
  redis.call('PEXPIREAT', k[1], deadline)
  redis.call('ZADD', k[6], deadline, ARGV[2])
  if redis.call('PTTL', k[6]) < tonumber(ARGV[4]) then
    redis.call('PEXPIREAT', k[6], deadline)
  end
end
local deadline = tonumber(field(k, 'deadline'))
if now >= deadline then
  return {0, 'mailbox expired'}
end
local members = tonumber(field(k, 'members'))
if members >= tonumber(ARGV[6]) then
  return {0, 'mailbox full: this code is already in use by two peers'}
end
local side = members + 1
redis.call('HSET', k[1], 'members', side, 's' .. side, 'on')
redis.call('HINCRBY', k[1], 'connected', 1)
redis.call('SET', k[3 + side], '1', 'PX', math.min(tonumber(ARGV[5]), deadline - now))
return {side, deadline - now, field(k, 'id')}
"""

# ARGV: id, side, body, max_messages, max_bytes -> '' or the refusal
_ADD = """
local k, now = KEYS, now_ms()
if not current(k, ARGV[1], now) then
  return 'mailbox expired'
end
local side = tonumber(ARGV[2])
if field(k, 's' .. side) ~= 'on' then
  return 'mailbox closed'
end
local size = string.len(ARGV[3])
if tonumber(field(k, 'messages')) + 1 > tonumber(ARGV[4]) then
  return 'mailbox message limit reached'
end
if tonumber(field(k, 'bytes')) + size > tonumber(ARGV[5]) then
  return 'mailbox byte limit reached'
end
redis.call('HINCRBY', k[1], 'messages', 1)
redis.call('HINCRBY', k[1], 'bytes', size)
local other = 3 - side
if field(k, 's' .. other) ~= 'left' then
  redis.call('XADD', k[1 + other], 'MAXLEN', ARGV[4], '*', 'body', ARGV[3])
  redis.call('PEXPIREAT', k[1 + other], field(k, 'deadline'))
end
return ''
"""

# ARGV: id, side -> 1 if the side was closed here
_CLOSE = """
local k, now = KEYS, now_ms()
if field(k, 'id') ~= ARGV[1] then
  return 0
end
if not current(k, ARGV[1], now) then
  drop(k)
  return 0
end
local side = tonumber(ARGV[2])
redis.call('DEL', k[3 + side])
if field(k, 's' .. side) == 'on' then
  leave(k, side)
end
if tonumber(field(k, 'connected')) <= 0 then
  drop(k)
end
return 1
"""

# KEYS: 6 per member; ARGV: lease_ms, then id, side per member -> 'ok' | 'left' | 'expired' each
_BEAT = """
local now, lease, statuses = now_ms(), tonumber(ARGV[1]), {}
for i = 0, #KEYS / 6 - 1 do
  local k = {unpack(KEYS, 6 * i + 1, 6 * i + 6)}
  local id, side = ARGV[2 + 2 * i], tonumber(ARGV[3 + 2 * i])
  local status = 'expired'
  if current(k, id, now) then
    status = 'left'
    if field(k, 's' .. side) == 'on' then
      local deadline = tonumber(field(k, 'deadline'))
      redis.call('SET', k[3 + side], '1', 'PX', math.min(lease, deadline - now))
      reap(k)
      status = 'ok'
    end
  end
  statuses[i + 1] = status
end
return statuses
"""

_BEAT_EVENTS: dict[str, type[PeerLeft | MailboxExpired]] = {
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
        self._wake_key = f"{prefix}node:{secrets.token_hex(8)}"
        self._wake_id = "0-0"
        self._members: dict[ClientId, _Member] = {}
        self._deliver: Deliver | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._open = self._script(_OPEN)
        self._add = self._script(_ADD)
        self._close = self._script(_CLOSE)
        self._beat = self._script(_BEAT)

    def _script(self, body: str) -> Any:
        return self._redis.register_script(_LUA_COMMON + body)

    async def start(self, deliver: Deliver) -> None:
        """Check Redis is there, then start this node's reader."""
        self._deliver = deliver
        try:
            self._wake_id = str(await self._redis.xadd(self._wake_key, {"w": "1"}, maxlen=1))
            await self._redis.pexpire(self._wake_key, self._lease_ms)
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
        await self._redis.aclose()

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

    async def open(self, client: ClientId, nameplate: str) -> None:
        """Claim a side of ``nameplate``'s mailbox (atomically: a third client is refused)."""
        if client in self._members:
            raise PairingError("mailbox already open on this connection")
        keys = self._keys(nameplate)
        args = [
            secrets.token_hex(8),
            nameplate,
            self.limits.max_mailboxes,
            max(1, int(self.limits.max_age * 1000)),
            self._lease_ms,
            MAX_SIDES,
        ]
        side, detail, *rest = await self._run(self._open, keys, args)
        if side == 0:
            raise PairingError(str(detail))
        deadline = asyncio.get_running_loop().time() + int(detail) / 1000
        member = _Member(keys, str(rest[0]), int(side), deadline)
        member.writer = asyncio.create_task(self._write(client, member.outbox))
        self._members[client] = member
        await self._run_command(self._wake())

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
        refusal = await self._run(self._add, member.keys, args)
        if refusal:
            raise PairingError(str(refusal))

    async def close(self, client: ClientId) -> None:
        """Give up ``client``'s side; the peer is told, an empty mailbox is deleted."""
        member = self._members.pop(client, None)
        if member is None:
            return
        if member.writer is not None:
            member.writer.cancel()
        try:
            await self._close(keys=member.keys, args=[member.mailbox_id, member.side])
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
            f"{self._prefix}index",
        ]

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._run_command(script(keys=keys, args=args))

    @staticmethod
    async def _run_command(command: Any) -> Any:
        try:
            return await command
        except RedisError as exc:
            log.warning("rendezvous: Redis failed: %s", exc)
            raise PairingError("rendezvous store unavailable") from exc

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
        members = [(c, m) for c, m in self._members.items() if m.reading]
        for start in range(0, len(members), BEAT_BATCH):
            batch = members[start : start + BEAT_BATCH]
            keys = [key for _, m in batch for key in m.keys]
            args: list[Any] = [self._lease_ms]
            for _, member in batch:
                args += [member.mailbox_id, member.side]
            statuses = await self._beat(keys=keys, args=args)
            for (client, member), status in zip(batch, statuses, strict=True):
                event = _BEAT_EVENTS.get(status)
                if event is not None and member.reading:
                    self._emit(member, event(client))
