"""Per-source request rate limiting for the TURN server (docs/protocol.md §5.4).

A token bucket per client IP: ``rate`` requests per second with bursts up to ``burst``. The
table is bounded; when it is full, buckets that have refilled completely are forgotten (they
carry no information), and if none has, the table starts over.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_SOURCES = 65536


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """``allow(key, now)`` spends one token of ``key``'s bucket, or says no."""

    def __init__(self, rate: float, burst: int, max_sources: int = MAX_SOURCES) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_sources = max_sources
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, key: str, now: float) -> bool:
        """True if ``key`` may send one more request at ``now``."""
        if self.rate <= 0:
            return True
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self.max_sources:
            return
        full = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.stamp < full}
        if len(self._buckets) >= self.max_sources:
            self._buckets.clear()


class TokenBucket:
    """A byte budget refilled at ``rate`` bytes per second, holding at most ``burst`` bytes.

    The bandwidth cap of one allocation and direction (coturn's ``max-bps``: bytes per second,
    input and output treated separately). Stream relays ask ``available`` and ``spend`` what
    they moved; datagram relays ``take`` a whole datagram or drop it. ``delay`` says how long
    until ``want`` bytes are there, so a paused reader knows when to look again.
    """

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("a token bucket needs a positive rate")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else default_burst(rate)
        self._tokens = self.burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def available(self, now: float) -> int:
        """Whole bytes that may move at ``now``."""
        self._refill(now)
        return max(0, int(self._tokens))

    def spend(self, count: int, now: float) -> None:
        """``count`` bytes moved (at most what ``available`` allowed)."""
        self._refill(now)
        self._tokens -= count

    def take(self, count: int, now: float) -> bool:
        """Spend ``count`` bytes if they are all there (a datagram), else spend nothing."""
        self._refill(now)
        if self._tokens < count:
            return False
        self._tokens -= count
        return True

    def delay(self, want: int, now: float) -> float:
        """Seconds from ``now`` until ``want`` bytes (at most ``burst``) are available."""
        self._refill(now)
        missing = min(float(want), self.burst) - self._tokens
        return max(0.0, missing / self.rate)


BURST_SECONDS = 0.05
"""A bucket holds this many seconds of its rate (so a cap is accurate over a fraction of a
second), but never less than ``MIN_BURST``, so a full-size datagram always fits."""
MIN_BURST = 64 << 10


def default_burst(rate: float) -> float:
    """The burst of a bucket of ``rate`` bytes per second (see ``BURST_SECONDS``)."""
    return max(float(MIN_BURST), rate * BURST_SECONDS)


class BandwidthPool:
    """The server's total bandwidth (coturn's ``bps-capacity``), handed out per allocation.

    As in coturn, each allocation reserves its cap from the pool when it is created: it gets
    ``max-bps``, or what is left when less remains, and nothing once the pool is spent (the
    allocation is then refused with 486 Allocation Bandwidth Quota Reached). The reservation
    returns to the pool when the allocation ends. ``capacity`` 0 means unlimited.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.reserved = 0

    def reserve(self, rate: int) -> int:
        """Bytes per second granted to a new allocation asking for ``rate``; 0 means refuse."""
        if rate <= 0:
            return 0
        granted = rate if self.capacity <= 0 else min(rate, self.capacity - self.reserved)
        granted = max(0, granted)
        self.reserved += granted
        return granted

    def release(self, rate: int) -> None:
        self.reserved = max(0, self.reserved - rate)
