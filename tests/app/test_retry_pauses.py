"""Reconnect attempts back off: a long outage must not poll the rendezvous every second."""

from __future__ import annotations

from itertools import islice

from delshare.app.session import RETRY_PAUSE, RETRY_PAUSE_MAX, retry_pauses


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
