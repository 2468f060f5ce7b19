"""``SharedRate``, the request rate per client IP of ``--workers N``, with an explicit clock.

Two limiters on one table with rows 0 and 1 are what two workers see (the table is a shared
mapping; tests/aio/test_workers.py runs real workers on it). Requests alternate between the rows
as the kernel's 4-tuple hash would spread one IP's source ports.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delshare.aio.shared_rate import SharedRate, SharedRateLimiter
from delshare.stun.constants import MessageClass, Method
from delshare.stun.message import Message, decode_message
from delshare.turn.auth import AuthConfig
from delshare.turn.server import TurnServer
from delshare.turn.server_config import ServerConfig
from delshare.turn.server_events import UDP, FiveTuple, SendToClient

RATE, BURST = 5.0, 20  # the CLI's burst: 4 s of the rate, so windows of 4 s
T0 = 1_800_000_000.0  # wall-clock seconds, as the relay passes them
IP = "192.0.2.1"


@pytest.fixture
def table() -> Iterator[SharedRate]:
    shared = SharedRate(2, key=b"k" * 16)
    yield shared
    shared.close()


def _rows(table: SharedRate, rate: float = RATE, burst: int = BURST) -> list[SharedRateLimiter]:
    return [table.limiter(row, rate, burst) for row in (0, 1)]


def test_one_burst_in_all_whichever_worker_counts(table: SharedRate) -> None:
    rows = _rows(table)
    admitted = [rows[n % 2].allow(IP, T0) for n in range(3 * BURST)]
    assert admitted.count(True) == BURST  # a limiter per worker admitted 2 x BURST
    assert admitted[:BURST] == [True] * BURST
    assert not rows[0].allow(IP, T0) and not rows[1].allow(IP, T0)
    assert rows[1].allow("192.0.2.2", T0)  # another IP has its own budget


def test_the_rate_refills_over_the_next_window(table: SharedRate) -> None:
    rows = _rows(table)
    start = 4.0 * int(T0 / 4.0)  # the start of a window
    assert sum(rows[n % 2].allow(IP, start) for n in range(BURST)) == BURST
    assert not rows[0].allow(IP, start + 1.0)
    # a quarter into the next window, a quarter of the last window's count has aged out
    later = start + 4.0 + 1.0
    assert sum(rows[n % 2].allow(IP, later) for n in range(BURST)) == BURST // 4
    # two windows of silence: a whole burst again
    again = start + 12.0
    assert sum(rows[n % 2].allow(IP, again) for n in range(2 * BURST)) == BURST


def test_a_client_below_the_rate_is_never_refused(table: SharedRate) -> None:
    rows = _rows(table)
    gap = 1.0 / (0.9 * RATE)
    assert all(rows[n % 2].allow(IP, T0 + n * gap) for n in range(400))  # 80 s, 20 windows


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 30.0), st.integers(1, 40), st.integers(0, 1)),
        min_size=1,
        max_size=12,
    )
)
def test_any_span_admits_at_most_burst_plus_rate_times_its_length_plus_one(
    sends: list[tuple[float, int, int]],
) -> None:
    """The bound of the module docstring, for requests checked one at a time."""
    table = SharedRate(2, key=b"k" * 16)
    try:
        rows = _rows(table)
        times: list[float] = []
        for offset, count, row in sorted(sends):
            times += [T0 + offset for _ in range(count) if rows[row].allow(IP, T0 + offset)]
    finally:
        table.close()
    for i, first in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= BURST + RATE * (times[j] - first) + 1 + 1e-6


def test_rate_zero_admits_everything(table: SharedRate) -> None:
    unlimited = table.limiter(0, 0.0, 1)
    assert all(unlimited.allow(IP, T0) for _ in range(1000))


def test_a_new_limiter_on_the_table_keeps_the_counts(table: SharedRate) -> None:
    """A reload (SIGHUP) or a restarted worker makes a new limiter on the same row: what was
    admitted still counts (a crash gives no fresh burst)."""
    first = table.limiter(0, RATE, BURST)
    assert sum(first.allow(IP, T0) for _ in range(BURST)) == BURST
    restarted = table.limiter(0, RATE, BURST)
    assert not restarted.allow(IP, T0 + 0.1)
    assert not table.limiter(1, RATE, BURST).allow(IP, T0 + 0.1)


def _binding(server: TurnServer, port: int, now: float) -> bool:
    five = FiveTuple(UDP, (IP, port), ("198.51.100.1", 3478))
    server.receive(five, Message(Method.BINDING, MessageClass.REQUEST).encode(), now)
    sent = [o for o in server.next_outputs() if isinstance(o, SendToClient)]
    return any(decode_message(o.data).cls == MessageClass.SUCCESS for o in sent)


def test_two_cores_given_the_shared_check_answer_one_burst_in_all(table: SharedRate) -> None:
    """``TurnServer(rate_check=...)``: the worker's core asks the shared table, also after a
    reconfigure; without it each core keeps its own token buckets."""
    config = ServerConfig(AuthConfig("r", {"u": "p"}), request_rate=RATE, request_burst=BURST)
    cores = [TurnServer(config, rate_check=functools.partial(table.limiter, row)) for row in (0, 1)]
    answered = [_binding(cores[n % 2], 5000 + n, T0) for n in range(3 * BURST)]
    assert answered.count(True) == BURST
    cores[0].reconfigure(config)
    assert not _binding(cores[0], 6000, T0 + 0.1)
    alone = [TurnServer(config), TurnServer(config)]
    assert sum(_binding(alone[n % 2], 5000 + n, T0) for n in range(3 * BURST)) == 2 * BURST


def test_a_worker_whose_clock_lags_a_window_behind_admits_no_second_burst(
    table: SharedRate,
) -> None:
    """Worker 1 read the clock just before a window's end, worker 0 just after it (each reads
    it once per batch): worker 1 must still count what worker 0 admitted."""
    rows = _rows(table)
    end = 4.0 * int(T0 / 4.0) + 4.0  # a window boundary
    assert sum(rows[0].allow(IP, end + 0.001) for _ in range(BURST)) == BURST
    assert not rows[1].allow(IP, end - 0.001)
    assert not rows[0].allow(IP, end - 0.002)  # its own clock stepped back a little
