"""The adversarial suite: each test reproduces an attack with real processes on loopback.

Quick mode (the default, run by CI) tries each attack with small counts; long mode
(``DELSHARE_ADVERSARIAL=long python -m pytest -q tests/adversarial``) multiplies the counts so
the figures in RELIABILITY.md can be reproduced. Every loop stays bounded in count and time in
both modes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.app.harness import RelayProcess, start_relay_process, stop

LONG = os.environ.get("DELSHARE_ADVERSARIAL", "quick") == "long"


def scaled(quick: int, long: int) -> int:
    """The attack count for this mode: ``quick`` in CI, ``long`` when asked for."""
    return long if LONG else quick


@pytest.fixture
def long_mode() -> bool:
    return LONG


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A ``delshare relay`` serving only the rendezvous, for the app attacks (test_app_*): the
    hostile peer and the real CLI meet there and connect directly. The relay attacks
    (test_relay_*) define their own ``relay``."""
    process = start_relay_process(tmp_path_factory.mktemp("relay"), turn=False)
    yield process
    stop(process.process)
