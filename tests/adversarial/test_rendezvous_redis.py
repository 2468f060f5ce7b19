"""Issue 10 item 2 and issue 12 item 6 with Redis: the bounds hold across rendezvous nodes.

Two real ``delshare relay --no-turn --rendezvous-redis URL`` nodes share one real redis-server.
One address attacking both nodes gets no more seats than the per-address limit in all; the
total number of mailboxes is the sum of the nodes' limits (it scales with the nodes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.conftest import scaled
from tests.adversarial.rendezvous import (
    ATTACKER,
    Rendezvous,
    allocate_frame,
    hold_mailboxes,
    holding,
    real_pair,
    rendezvous,
    sources,
)
from tests.support.redis_server import redis_missing, redis_running

PER_IP = 20


@pytest.fixture
def redis_url() -> Iterator[str]:
    if redis_missing():
        pytest.skip(str(redis_missing()))
    with redis_running() as url:
        yield url


@contextlib.contextmanager
def two_nodes(workdir: Path, redis_url: str, *flags: str) -> Iterator[list[Rendezvous]]:
    with (
        rendezvous(workdir, *flags, redis_url=redis_url) as a,
        rendezvous(workdir, *flags, redis_url=redis_url) as b,
    ):
        yield [a, b]


async def test_one_address_is_bounded_across_nodes(tmp_path: Path, redis_url: str) -> None:
    attempts = scaled(100, 1000)
    with two_nodes(tmp_path, redis_url) as nodes:
        first = await hold_mailboxes(nodes[0].url, [allocate_frame()] * (attempts // 2), [ATTACKER])
        async with holding(first):
            second = await hold_mailboxes(
                nodes[1].url, [allocate_frame()] * (attempts // 2), [ATTACKER]
            )
            async with holding(second):
                assert len(first.connections) + len(second.connections) <= PER_IP
                assert any("too many open mailboxes" in r for r in second.refusals)
                real_pair(tmp_path, nodes[1].url)  # another address pairs on either node
                real_pair(tmp_path, nodes[0].url)


async def test_the_total_is_the_sum_of_the_nodes_limits(tmp_path: Path, redis_url: str) -> None:
    per_node = 10
    flags = ("--rendezvous-max-mailboxes", str(per_node))
    with two_nodes(tmp_path, redis_url, *flags) as nodes:
        addresses = sources(8)  # 40 tries from 8 addresses: no per-address limit binds
        held = [
            await hold_mailboxes(node.url, [allocate_frame()] * 20, addresses) for node in nodes
        ]
        async with holding(held[0]), holding(held[1]):
            assert sum(len(h.connections) for h in held) == 2 * per_node
            assert any("server busy" in r for h in held for r in h.refusals)
