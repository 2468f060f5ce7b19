"""Sizes, counts and time bounds for a full run and for the ``--quick`` smoke run."""

from __future__ import annotations

from dataclasses import dataclass

from bench.common import GiB, MiB


@dataclass(frozen=True)
class Config:
    """Every bound a case uses; each loop in the bench is capped by one of these."""

    quick: bool
    reps: int
    stream_bytes: int  # case 1
    stream_max_s: float
    many_streams: int  # case 2
    many_bytes_each: int
    many_max_s: float
    allocs: int  # case 3
    alloc_threads: int
    udp_seconds: float  # case 4
    udp_max_packets: int
    udp_payload: int
    file_bytes: int  # case 5
    transfer_reps: int
    transfer_max_s: float
    ttfb_reps: int  # case 6
    ttfb_max_s: float


FULL = Config(
    quick=False,
    reps=5,
    stream_bytes=GiB,
    stream_max_s=60.0,
    many_streams=500,
    many_bytes_each=2 * MiB,
    many_max_s=60.0,
    allocs=500,
    alloc_threads=4,
    udp_seconds=3.0,
    udp_max_packets=3_000_000,
    udp_payload=100,
    file_bytes=GiB,
    transfer_reps=5,
    transfer_max_s=120.0,
    ttfb_reps=7,
    ttfb_max_s=30.0,
)

QUICK = Config(
    quick=True,
    reps=1,
    stream_bytes=8 * MiB,
    stream_max_s=15.0,
    many_streams=20,
    many_bytes_each=256 << 10,
    many_max_s=15.0,
    allocs=20,
    alloc_threads=2,
    udp_seconds=0.3,
    udp_max_packets=50_000,
    udp_payload=100,
    file_bytes=4 * MiB,
    transfer_reps=1,
    transfer_max_s=8.0,
    ttfb_reps=1,
    ttfb_max_s=8.0,
)
