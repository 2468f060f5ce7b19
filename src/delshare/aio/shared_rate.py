"""The per-IP request rate of ``delshare relay --workers N``, counted across the workers.

The kernel spreads one client IP's UDP flows and TCP connections over the workers by a hash of
the 4-tuple, so a rate counted in each worker alone (``turn.ratelimit.RateLimiter``) lets a
client with many source ports through N times. ``SharedRate`` counts every worker's admissions
in one shared-memory table instead; ``SharedRate.limiter(row, rate, burst)`` is what a worker's
``TurnServer`` asks (``turn.server.RequestRateCheck``, docs/protocol.md §5.4).

Semantics (a sliding-window counter; ``L = burst / rate`` seconds, window ``k`` is
``[k L, (k+1) L)``): a request at ``now``, in window ``k`` at fraction ``f`` of it, is admitted
when ``P (1 - f) + C < burst``, where ``C`` counts the requests admitted in window ``k`` and
``P`` those of window ``k - 1``, over every worker; refused requests count nothing. So:

- in any span of ``T`` seconds at most ``burst + rate T + 1`` requests are admitted (the token
  bucket's ``burst + rate T``, one more for the whole counts; a short proof: with ``t`` in
  window ``k``, ``C < burst - P (1 - f) + 1`` and ``P <= burst``, and the requests of earlier
  windows are at most ``burst`` each);
- a client below ``rate`` on average is never refused, and one idle for ``2 L`` gets a burst of
  ``burst``, as with the token bucket;
- workers check and count without a lock, so while N workers admit at once each may miss the
  others' request in flight: at most ``N - 1`` more than the bound above;
- each worker reads the clock itself (once per batch of datagrams), so near a window's end one
  may still be in window ``k`` while another is in ``k + 1``: the one behind counts both counts
  of a cell already in ``k + 1`` as current (what it cannot place is recent), so a lagging clock
  refuses early rather than admits a second burst;
- client IPs are counted in ``BUCKETS`` buckets by a keyed hash (BLAKE2b, key drawn at start,
  so clients cannot aim at one): two IPs sharing a bucket share its budget, so a collision can
  refuse early, never admit past the rate. With ``a`` IPs busy within ``2 L``, a given IP shares
  a bucket with probability about ``a / 65536``;
- bursts above ``MAX_COUNT`` (a million requests per window) are cut to it.

Layout: one 64-bit word per (bucket, worker), bucket-major (a check reads N adjacent words):
window number (24 bits, modulo 2**24: a cell 2**24 windows old, over two years at the CLI's
4 s windows, reads as current and can refuse early for one window), count of the current window
(20 bits), count of the previous one (20 bits). A worker writes only its own word, in one
aligned 8-byte store, so another worker reads the old or the new value, never half of each.
The table is an anonymous shared mapping made by the parent before it forks the workers.
A worker restarted after a crash goes on counting in its row, which the parent leaves alone:
the counts are requests that really were admitted, and they age out within two windows (an
attacker who crashes a worker gets no fresh burst).
"""

from __future__ import annotations

import mmap
import secrets

from delshare.aio.worker_share import keyed_bucket

BUCKETS = 1 << 16
MAX_COUNT = (1 << 20) - 1
_COUNT_BITS = 20
_WINDOW_SHIFT = 2 * _COUNT_BITS
_WINDOW_MASK = (1 << 24) - 1
_CURRENT = 1 << _COUNT_BITS  # one request in the current window's count
_CACHE = 4096  # IPs whose bucket a worker remembers (one hash per new IP)


class SharedRate:
    """The table of every worker's admissions; create it before forking the workers."""

    def __init__(self, workers: int, key: bytes | None = None) -> None:
        self.workers = workers
        self._key = key or secrets.token_bytes(16)
        self._map = mmap.mmap(-1, BUCKETS * workers * 8)  # MAP_SHARED: forked workers see it
        self.cells = memoryview(self._map).cast("Q")

    def bucket(self, ip: str) -> int:
        """The first word of ``ip``'s bucket (its N words follow)."""
        return keyed_bucket(self._key, ip.encode("utf-8", "surrogatepass"), BUCKETS) * self.workers

    def limiter(self, row: int, rate: float, burst: int) -> SharedRateLimiter:
        """Worker ``row``'s check of ``rate`` requests per second per IP, bursts of ``burst``."""
        return SharedRateLimiter(self, row, rate, burst)

    def close(self) -> None:
        self.cells.release()
        self._map.close()


class SharedRateLimiter:
    """``allow(ip, now)`` admits and counts one request of ``ip``, or says no (see the module)."""

    def __init__(self, table: SharedRate, row: int, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = min(max(1, burst), MAX_COUNT)
        self.window = self.burst / rate if rate > 0 else 0.0
        self._table = table
        self._row = row
        self._buckets: dict[str, int] = {}

    def _first(self, ip: str) -> int:
        first = self._buckets.get(ip)
        if first is None:
            if len(self._buckets) >= _CACHE:
                self._buckets.clear()
            first = self._buckets[ip] = self._table.bucket(ip)
        return first

    def allow(self, key: str, now: float) -> bool:
        """True if ``key`` (a client IP) may send one more request at ``now``."""
        if self.rate <= 0:
            return True
        position = now / self.window
        whole = int(position)
        window, before = whole & _WINDOW_MASK, (whole - 1) & _WINDOW_MASK
        after = (whole + 1) & _WINDOW_MASK
        first = self._first(key)
        cells = self._table.cells
        current = previous = 0
        for cell in cells[first : first + self._table.workers]:
            seen = cell >> _WINDOW_SHIFT
            if seen == window:
                current += (cell >> _COUNT_BITS) & MAX_COUNT
                previous += cell & MAX_COUNT
            elif seen == before:
                previous += (cell >> _COUNT_BITS) & MAX_COUNT
            elif seen == after:  # a worker already in the next window: all of it is recent
                current += ((cell >> _COUNT_BITS) & MAX_COUNT) + (cell & MAX_COUNT)
        if previous * (1.0 - (position - whole)) + current >= self.burst:
            return False
        own = first + self._row
        mine = cells[own]
        seen = mine >> _WINDOW_SHIFT
        if seen in (window, after):  # after: this worker's clock went back a little
            cells[own] = mine + _CURRENT
        else:  # a new window: the count of the one just ended (if it was the last) moves down
            moved = (mine >> _COUNT_BITS) & MAX_COUNT if seen == before else 0
            cells[own] = (window << _WINDOW_SHIFT) | _CURRENT | moved
        return True
