"""The sans-IO bandwidth pieces with an explicit clock: ``TokenBucket`` (coturn's max-bps) and
``BandwidthPool`` (coturn's bps-capacity)."""

from __future__ import annotations

import pytest

from delshare.turn.ratelimit import MIN_BURST, BandwidthPool, TokenBucket, default_burst

RATE = 1_000_000  # bytes per second


def test_bucket_starts_full_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(RATE, now=0.0, burst=100_000)
    assert bucket.available(0.0) == 100_000
    bucket.spend(100_000, 0.0)
    assert bucket.available(0.0) == 0
    assert bucket.available(0.05) == 50_000
    assert bucket.available(10.0) == 100_000  # never more than the burst


def test_bucket_over_a_long_run_moves_rate_times_time_plus_one_burst() -> None:
    bucket = TokenBucket(RATE, now=0.0, burst=64_000)
    moved, now = 0, 0.0
    for _ in range(10_000):  # a reader that takes what it is allowed every millisecond
        allowed = bucket.available(now)
        bucket.spend(allowed, now)
        moved += allowed
        now += 0.001
    assert moved == pytest.approx(RATE * now + 64_000, rel=0.001)


def test_take_is_all_or_nothing_for_datagrams() -> None:
    bucket = TokenBucket(RATE, now=0.0, burst=10_000)
    assert bucket.take(8_000, 0.0)
    assert not bucket.take(8_000, 0.0)  # 2,000 left: the datagram is dropped, nothing spent
    assert bucket.available(0.0) == 2_000
    assert bucket.take(8_000, 0.006)


def test_delay_says_when_enough_is_there_even_in_debt() -> None:
    bucket = TokenBucket(RATE, now=0.0, burst=10_000)
    bucket.spend(20_000, 0.0)  # a shared bucket may go into debt
    assert bucket.available(0.0) == 0
    assert bucket.delay(5_000, 0.0) == pytest.approx(0.015)
    assert bucket.delay(50_000, 0.0) == pytest.approx(0.020)  # capped at the burst


def test_default_burst_is_50_ms_but_at_least_a_datagram() -> None:
    assert default_burst(1000) == MIN_BURST
    assert default_burst(100 << 20) == pytest.approx((100 << 20) * 0.05)


def test_bucket_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, now=0.0)


def test_pool_hands_out_max_bps_then_the_rest_then_nothing() -> None:
    pool = BandwidthPool(capacity=2_500)
    assert [pool.reserve(1_000) for _ in range(4)] == [1_000, 1_000, 500, 0]
    assert pool.reserved == 2_500
    pool.release(1_000)
    assert pool.reserve(1_000) == 1_000


def test_unlimited_pool_always_grants() -> None:
    pool = BandwidthPool(capacity=0)
    assert [pool.reserve(1_000) for _ in range(3)] == [1_000] * 3
    assert pool.reserve(0) == 0  # uncapped allocations reserve nothing
