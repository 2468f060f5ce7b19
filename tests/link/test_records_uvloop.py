"""The record channel on uvloop: every scenario of ``test_records`` again, on uvloop's transports.

uvloop's transports are not ``asyncio.Transport`` subclasses and keep a reference to unsent
``memoryview`` data instead of copying it, so the channel's buffer takeover and its reuse of
output buffers must hold there too. ``delshare send``/``receive`` run on uvloop when installed.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from delshare.link.records import MAX_PAYLOAD, RecordChannel
from tests.link import test_records as base

uvloop = pytest.importorskip("uvloop")

Scenario = Callable[[], Coroutine[Any, Any, None]]


def _scenarios() -> list[tuple[str, Scenario]]:
    """The async tests of ``test_records`` that take no arguments."""
    found = []
    for name, function in vars(base).items():
        coroutine = name.startswith("test_") and inspect.iscoroutinefunction(function)
        if coroutine and not inspect.signature(function).parameters:
            found.append((name, function))
    return found


def _run_on_uvloop(scenario: Scenario) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario(), 60))


@pytest.mark.parametrize(("name", "scenario"), _scenarios(), ids=[n for n, _ in _scenarios()])
def test_scenario_on_uvloop(name: str, scenario: Scenario) -> None:
    _run_on_uvloop(scenario)


@pytest.mark.parametrize("where", ["tag", "body", "kind"])
def test_tampered_record_is_rejected_on_uvloop(where: str) -> None:
    _run_on_uvloop(lambda: base.test_tampered_record_is_rejected(where))


def test_scenarios_were_found() -> None:
    assert len(_scenarios()) >= 10


async def _stream_both_ways(a: RecordChannel, b: RecordChannel, count: int) -> None:
    """Big records each way at once, written faster than read; all arrive intact, in order."""

    async def pump(channel: RecordChannel, tag: int) -> None:
        buffer = memoryview(bytearray(MAX_PAYLOAD))
        for i in range(count):
            buffer[:] = bytes([tag ^ i & 0xFF]) * MAX_PAYLOAD  # reused at once: sealed on write
            channel.write(buffer)
            if i % 4 == 3:
                await channel.drain()

    async def check(channel: RecordChannel, tag: int) -> None:
        out = memoryview(bytearray(MAX_PAYLOAD))
        for i in range(count):
            await asyncio.sleep(0)  # a slower reader: the sender's buffers fill up
            _kind, length = await channel.recv_into(out)
            assert length == MAX_PAYLOAD
            assert out[0] == out[-1] == tag ^ i & 0xFF

    await asyncio.gather(pump(a, 1), pump(b, 2), check(b, 1), check(a, 2))


def test_big_records_both_ways_with_back_pressure_on_uvloop() -> None:
    async def scenario() -> None:
        a, b = await base.linked()
        await _stream_both_ways(a, b, 48)
        await a.close()
        await b.close()

    _run_on_uvloop(scenario)
