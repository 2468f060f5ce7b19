"""Read a relay's Prometheus ``/metrics`` page on loopback, for tests."""

from __future__ import annotations

import urllib.request


def scrape(port: int, timeout: float, host: str = "127.0.0.1") -> dict[str, float]:
    """The ``/metrics`` samples at ``host:port`` as {name with its labels: value}."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as answer:
        text = answer.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found
