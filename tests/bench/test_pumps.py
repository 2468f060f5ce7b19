"""The bench's byte pumps prove delivery: a clean pair passes, every kind of damage fails.

A forwarding thread sits between the pump's sockets and damages the stream on purpose (flips a
byte, drops bytes, adds bytes, swaps two blocks); the pump's content check or byte count must
say so. Sizes are small: this checks the checks, not speed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from bench import pumps

Damage = Callable[[bytearray], bytearray]
SIZE = 3 * pumps.BLOCK + 12345  # whole blocks and a partial one
MANY_EACH = 3 * pumps.MANY_BLOCK + 777


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _pair(opened: list[socket.socket]) -> tuple[socket.socket, socket.socket]:
    a, b = pumps.plain_pair()
    opened += [a, b]
    return a, b


def _in_background(forward: Callable[[], None]) -> None:
    """Run a forwarder on a daemon thread; the test closes the sockets when it is done."""

    def run() -> None:
        with contextlib.suppress(OSError):
            forward()

    threading.Thread(target=run, daemon=True).start()


def _forwarded(opened: list[socket.socket], damage: Damage) -> tuple[socket.socket, socket.socket]:
    """sender → [thread: read all, damage, write, FIN] → receiver."""
    sender, inner_in = _pair(opened)
    inner_out, receiver = _pair(opened)

    def forward() -> None:
        data = bytearray()
        inner_in.settimeout(30.0)
        while chunk := inner_in.recv(1 << 20):
            data += chunk
        inner_out.sendall(damage(data))
        inner_out.shutdown(socket.SHUT_WR)

    _in_background(forward)
    return sender, receiver


def _flip(at: int) -> Damage:
    def damage(data: bytearray) -> bytearray:
        data[at] ^= 0x01
        return data

    return damage


def _swap_blocks(block: int) -> Damage:
    def damage(data: bytearray) -> bytearray:
        first, second = data[:block], data[block : 2 * block]
        return second + first + data[2 * block :]

    return damage


def test_clean_stream_passes(sockets: list[socket.socket]) -> None:
    res = pumps.pump_stream(*_forwarded(sockets, lambda d: d), SIZE, 30.0)
    assert (res.received, res.crc_ok) == (SIZE, True)


@pytest.mark.parametrize(
    "damage",
    [
        _flip(pumps.BLOCK + 5),  # in a block body
        _flip(2 * pumps.BLOCK + 1),  # in a block's stamp
        _flip(SIZE - 1),  # the last byte of the partial block
        _swap_blocks(pumps.BLOCK),  # same bytes, wrong order
        lambda d: d + b"x",  # one byte too many before FIN
        lambda d: d[:-1],  # one byte short
    ],
    ids=["body", "stamp", "tail", "reordered", "extra", "short"],
)
def test_damaged_stream_fails(sockets: list[socket.socket], damage: Damage) -> None:
    res = pumps.pump_stream(*_forwarded(sockets, damage), SIZE, 30.0)
    assert not res.crc_ok


def test_many_clean_streams_pass(sockets: list[socket.socket]) -> None:
    pairs = [_pair(sockets) for _ in range(4)]
    res = pumps.pump_many(pairs, MANY_EACH, 30.0)
    assert (res.received, res.ok) == (4 * MANY_EACH, True)


def _streamed(
    opened: list[socket.socket], flip_at: int = -1, stop_after: int = -1
) -> tuple[socket.socket, socket.socket]:
    """sender → [thread: forward as it comes, flip one byte or FIN early] → receiver.

    The many-stream pump never half-closes, so this forwarder cannot wait for EOF.
    """
    sender, inner_in = _pair(opened)
    inner_out, receiver = _pair(opened)

    def forward() -> None:
        inner_in.settimeout(30.0)
        done = 0
        while done != stop_after and (chunk := bytearray(inner_in.recv(1 << 16))):
            if 0 <= flip_at - done < len(chunk):
                chunk[flip_at - done] ^= 0x01
            if stop_after >= 0:
                chunk = chunk[: stop_after - done]
            inner_out.sendall(chunk)
            done += len(chunk)
        inner_out.shutdown(socket.SHUT_WR)

    _in_background(forward)
    return sender, receiver


def test_many_with_one_damaged_stream_fails(sockets: list[socket.socket]) -> None:
    pairs = [_pair(sockets) for _ in range(3)]
    pairs.append(_streamed(sockets, flip_at=2 * pumps.MANY_BLOCK + 9))
    res = pumps.pump_many(pairs, MANY_EACH, 30.0)
    assert res.received == 4 * MANY_EACH and not res.ok


def test_many_with_crossed_streams_fails(sockets: list[socket.socket]) -> None:
    (a1, b1), (a2, b2) = _pair(sockets), _pair(sockets)
    res = pumps.pump_many([(a1, b2), (a2, b1)], MANY_EACH, 30.0)  # a1's bytes reach stream 1
    assert res.received == 2 * MANY_EACH and not res.ok


def test_many_short_stream_is_counted(sockets: list[socket.socket]) -> None:
    pairs = [_pair(sockets), _streamed(sockets, stop_after=MANY_EACH - 100)]
    res = pumps.pump_many(pairs, MANY_EACH, 30.0)
    assert res.received == 2 * MANY_EACH - 100
