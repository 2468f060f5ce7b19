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
