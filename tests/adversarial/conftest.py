"""The adversarial suite: each test reproduces an attack with real processes on loopback.

Quick mode (the default, run by CI) tries each attack with small counts; long mode
(``DELSHARE_ADVERSARIAL=long python -m pytest -q tests/adversarial``) multiplies the counts so the
figures in RELIABILITY.md can be reproduced. Every loop stays bounded in count and time in both
modes.
"""

from __future__ import annotations

import os

import pytest

LONG = os.environ.get("DELSHARE_ADVERSARIAL", "quick") == "long"


def scaled(quick: int, long: int) -> int:
    """The attack count for this mode: ``quick`` in CI, ``long`` when asked for."""
    return long if LONG else quick


@pytest.fixture
def long_mode() -> bool:
    return LONG
