"""What relay workers share (``delshare relay --workers N``): allocation quotas and RFC 6062
data connections that reached the wrong worker.

``SharedQuota`` keeps the allocation counts of every worker in one shared-memory table, so the
per-user, per-IP and total limits hold across workers (RFC 8656 §7.2 and §21: 486 / 508 / 300).
Why this shape:

- one row per worker: a worker only ever adds to and takes from its own row, and when one dies
  the parent zeroes its row in one step (its allocations died with it); nothing has to be
  reconciled or garbage-collected;
- the table is an ``mmap`` of an unlinked temporary file, created before the workers fork, so
  they all map the same pages; the check-and-increment of an Allocate runs under a POSIX record
  lock (``lockf``) on that file, which the kernel drops when its holder dies, so a worker killed
  mid-update cannot leave the others blocked (a ``multiprocessing.Lock`` would stay taken);
  a release only lowers the releasing worker's own row and needs no lock (``release``), so an
  allocation costs two ``lockf`` calls, not four;
- names (usernames, client IPs) are counted in ``BUCKETS`` buckets by a keyed hash (BLAKE2b with
  a key drawn at start, so clients cannot aim at a bucket): exact per bucket, no allocation of
  memory per name, O(workers) per check. Two names that share a bucket share its count, so a
  collision can refuse an allocation early, never let one past its limit. With ``u`` users
  holding allocations, a given user shares a bucket with probability about ``u / 65536``.

``Handover`` moves a client connection whose first request is a ConnectionBind (RFC 6062 §5.4)
to the worker owning its CONNECTION-ID (each worker's IDs are ≡ its index modulo N): the
descriptor and the bytes already read go over a Unix datagram socket (``SCM_RIGHTS``) to the
owner, which serves the connection as if it had accepted it. A TLS connection cannot move (its
session lives in this process): the receiving worker keeps the TLS side and hands over one end
of a socketpair, bridged to the TLS stream here.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import mmap
import secrets
import socket
import tempfile
from collections.abc import Callable, Iterator

from delshare.aio.pipe import bridge
from delshare.aio.server_conn import ClientConnection
from delshare.errors import StunDecodeError
from delshare.stun.attributes import CONNECTION_ID
from delshare.stun.message import decode_message
from delshare.turn.server_events import FiveTuple

log = logging.getLogger("delshare.relay")

BUCKETS = 1 << 16  # per kind (usernames, client IPs) and worker
MAX_HANDOVER = 200_000  # bytes of one handover message (a frame plus what was read after it)
_COLUMNS = 1 + 2 * BUCKETS  # total, users, IPs (uint32 each)


def keyed_bucket(key: bytes, data: bytes, buckets: int) -> int:
    """``data``'s bucket among ``buckets``, by BLAKE2b keyed with ``key`` (a secret drawn at
    start, so clients cannot aim at a bucket)."""
    digest = hashlib.blake2b(data, digest_size=8, key=key).digest()
    return int.from_bytes(digest, "big") % buckets


class SharedQuota:
    """A ``turn.server.QuotaLedger`` over every worker: counts in shared memory, one row each."""

    def __init__(self, workers: int, key: bytes | None = None) -> None:
        self.workers = workers
        self.row = 0  # the worker this process counts in (set in each worker after fork)
        self._key = key or secrets.token_bytes(16)
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - open as long as the table
        size = workers * _COLUMNS * 4
        self._file.truncate(size)
        self._map = mmap.mmap(self._file.fileno(), size)  # MAP_SHARED: forked workers see it
        self._cells = memoryview(self._map).cast("I")

    def _bucket(self, kind: bytes, name: str) -> int:
        return keyed_bucket(self._key, kind + name.encode("utf-8", "surrogatepass"), BUCKETS)

    def _columns(self, username: str, ip: str) -> tuple[int, int]:
        return 1 + self._bucket(b"u", username), 1 + BUCKETS + self._bucket(b"i", ip)

    def _sum(self, column: int) -> int:
        return sum(self._cells[row * _COLUMNS + column] for row in range(self.workers))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self._file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._file.fileno(), fcntl.LOCK_UN)

    def take(self, username: str, ip: str, limits: tuple[int, int, int]) -> str | None:
        """Count one allocation unless a limit (per user, per IP, total) is reached."""
        user, address = self._columns(username, ip)
        with self._locked():
            if self._sum(user) >= limits[0]:
                return "user"
            if self._sum(address) >= limits[1]:
                return "ip"
            if self._sum(0) >= limits[2]:
                return "total"
            base = self.row * _COLUMNS
            for column in (0, user, address):
                self._cells[base + column] += 1
        return None

    def release(self, username: str, ip: str) -> None:
        """One allocation of this worker ended: its row's counts go down, without the lock.

        Only this worker writes its row while it lives (``take`` adds under the lock, on the
        same event loop thread, so never at the same time as this), and a count read by
        another worker's ``take`` while this runs is the old one or the new one, each cell
        being one aligned 32-bit word: an old one is higher, so a concurrent check can only
        refuse early, never admit past a limit. That saves two ``lockf`` calls per allocation
        and a wait for another worker's check.
        """
        user, address = self._columns(username, ip)
        cells, base = self._cells, self.row * _COLUMNS
        for column in (0, user, address):
            if cells[base + column]:
                cells[base + column] -= 1

    def total(self, row: int) -> int:
        """Allocations counted for worker ``row``."""
        return int(self._cells[row * _COLUMNS])

    def clear(self, row: int) -> None:
        """Zero a dead worker's row (the parent, before restarting it)."""
        size = _COLUMNS * 4
        with self._locked():
            self._map[row * size : (row + 1) * size] = bytes(size)

    def close(self) -> None:
        self._cells.release()
        self._map.close()
        self._file.close()


def owner_of(frame: bytes, index: int, count: int) -> int | None:
    """The worker owning a ConnectionBind's CONNECTION-ID, None if it is ``index`` or unknown."""
    try:
        cid = decode_message(frame).get(CONNECTION_ID)
    except StunDecodeError:  # also MalformedRequestError: the core answers it (400)
        return None
    if cid is None or cid % count == index:
        return None
    return cid % count


class Handover:
    """Passes client connections between workers; ``attach`` it to the worker's server."""

    def __init__(
        self,
        index: int,
        inbox: socket.socket,
        outboxes: list[socket.socket],
        adopt: Callable[[FiveTuple, socket.socket, bytes], None],
    ) -> None:
        self.index = index
        self.count = len(outboxes)
        self.sent = 0
        self.received = 0
        self._inbox = inbox
        self._outboxes = outboxes
        self._adopt = adopt
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[object]] = set()
        inbox.setblocking(False)
        for box in outboxes:
            box.setblocking(False)
        self._loop.add_reader(inbox.fileno(), self._receive)

    def owner(self, frame: bytes) -> int | None:
        return owner_of(frame, self.index, self.count)

    def send(self, client: ClientConnection) -> None:
        """Hand ``client`` (its first frame and what followed) to the worker it names."""
        assert client.handover is not None
        owner, frame = client.handover
        five = client.five
        header = json.dumps([five.transport, list(five.client), list(five.server)]).encode()
        message = len(header).to_bytes(2, "big") + header + frame + client.leftover
        client.take_output()
        if isinstance(client.endpoint, socket.socket):
            sock, mine = client.endpoint, None
        else:  # TLS stays here: hand over a socketpair end, bridged to the TLS stream
            mine, sock = socket.socketpair()
            mine.setblocking(False)
        try:
            if len(message) > MAX_HANDOVER:
                raise OSError("too much data before the ConnectionBind")
            socket.send_fds(self._outboxes[owner], [message], [sock.fileno()])
            self.sent += 1
        except OSError as exc:
            log.warning("cannot hand a ConnectionBind to worker %d: %s", owner, exc)
            if mine is not None:
                mine.close()
                mine = None
            client.close()
        finally:
            sock.close()  # the owner holds its own descriptor now
        if mine is not None:
            task = asyncio.ensure_future(bridge(client.endpoint, mine))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _receive(self) -> None:
        for _ in range(64):
            try:
                data, fds, _flags, _addr = socket.recv_fds(self._inbox, MAX_HANDOVER, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("handover inbox: %s", exc)
                return
            if not fds:
                continue
            sock = socket.socket(fileno=fds[0])
            try:
                size = int.from_bytes(data[:2], "big")
                kind, client, server = json.loads(data[2 : 2 + size])
                five = FiveTuple(kind, (client[0], client[1]), (server[0], server[1]))
            except (ValueError, TypeError, IndexError):
                sock.close()
                continue
            sock.setblocking(False)
            self.received += 1
            self._adopt(five, sock, bytes(data[2 + size :]))

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._inbox.fileno())
        for task in self._tasks:
            task.cancel()
