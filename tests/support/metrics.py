"""Read a relay's Prometheus ``/metrics`` page on loopback, for tests: the bench's reader."""

from __future__ import annotations

from bench.common import scrape_metrics as scrape

__all__ = ["scrape"]
