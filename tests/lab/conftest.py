"""Fixtures that build a namespace lab for one test and always tear it down.

Tests using them are skipped where the lab cannot run (not root, no ``ip netns``/``nft``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.lab.netns import Lab, build_lan_lab, build_nat_lab, lab_unavailable


def _lab(build: Callable[[], Lab]) -> Iterator[Lab]:
    reason = lab_unavailable()
    if reason is not None:
        pytest.skip(reason)
    lab = build()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def nat_lab() -> Iterator[Lab]:
    """alice (10.0.1.2) behind nat-a (203.0.113.10), bob (10.0.2.2) behind nat-b (.20), pub."""
    yield from _lab(build_nat_lab)


@pytest.fixture
def symmetric_nat_lab() -> Iterator[Lab]:
    """As ``nat_lab``, but both NATs pick a random public port for every new flow."""
    yield from _lab(lambda: build_nat_lab(symmetric=True))


@pytest.fixture
def lan_lab() -> Iterator[Lab]:
    """alice (10.0.1.2) and bob (10.0.1.3) on one LAN behind nat-a (203.0.113.10), pub."""
    yield from _lab(build_lan_lab)
