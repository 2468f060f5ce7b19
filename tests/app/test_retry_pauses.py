"""Reconnect attempts back off, and a side that has finished does not wait out the whole
reconnect deadline."""

from __future__ import annotations

from itertools import islice

import pytest

from delshare.app.common import SessionOptions
from delshare.app.connect import Connection, ConnectOptions
from delshare.app.session import (
    FINISHED_RECONNECT,
    RETRY_PAUSE,
    RETRY_PAUSE_MAX,
    FinishedLinkLostError,
    Healer,
    retry_pauses,
)
from delshare.transfer.errors import TransferInterruptedError


def test_reconnect_pauses_double_up_to_the_cap() -> None:
    assert list(islice(retry_pauses(), 6)) == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert (RETRY_PAUSE, RETRY_PAUSE_MAX) == (1.0, 8.0)


def test_attempts_in_two_minutes_stay_few() -> None:
    """Within the default 120 s deadline a side makes at most ~17 attempts, not 120."""
    elapsed, attempts = 0.0, 0
    for pause in retry_pauses():
        if elapsed >= 120:
            break
        attempts += 1
        elapsed += pause
    assert attempts <= 18


class _Stop(Exception):
    """Raised by the test's attempt to end the reconnect loop after its first try."""


async def _first_attempt_budget(lost: TransferInterruptedError) -> float:
    """The seconds a Healer gives its first reconnect attempt after ``lost``."""
    seen: list[float] = []

    async def attempt(remaining: float) -> Connection:
        seen.append(remaining)
        raise _Stop

    options = SessionOptions(None, ConnectOptions(), reconnect_timeout=3600.0)
    healer = Healer(attempt, options, lambda event: None)
    with pytest.raises(_Stop):
        await healer.reconnect(lost)
    return seen[0]


async def test_a_finished_side_waits_briefly_for_a_reconnection() -> None:
    """A side that has finished (the receiver after its last ``done``) waits at most
    FINISHED_RECONNECT s, not the whole reconnect deadline, for a peer that may have exited."""
    assert await _first_attempt_budget(TransferInterruptedError("reset")) > 3000
    finished = await _first_attempt_budget(FinishedLinkLostError("reset after done"))
    assert finished <= FINISHED_RECONNECT == 15.0
