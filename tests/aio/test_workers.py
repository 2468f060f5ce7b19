"""``delshare relay --workers 2`` as a real subprocess: load on both workers, RFC 6062 across them.

Each new TCP connection lands on a worker chosen by the kernel's SO_REUSEPORT hash, so with
enough fresh control and data connections both workers carry allocations and some ConnectionBinds
land on the worker that does not own their CONNECTION-ID; the relay's counters of handed-over
binds prove that the crossing happened (the tests cannot pass with everything on one worker).
"""

from __future__ import annotations

import asyncio
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from delshare.aio.client import connect_turn
from tests.support.ports import free_port
from tests.support.relay_process import RelayProcess, start_relay_process

HOST = "127.0.0.1"
STEP = 10.0
ALLOCATIONS = 16  # fresh control connections: all on one worker with probability 2**-15


def metrics(port: int) -> dict[str, float]:
    """The relay's /metrics as {sample with labels: value}."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=STEP) as answer:
        text = answer.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


class Workers:
    def __init__(self, relay: RelayProcess, turn_port: int, metrics_port: int) -> None:
        self.relay = relay
        self.uri = f"turn:{HOST}:{turn_port}?transport=tcp"
        self.metrics_port = metrics_port

    def metrics(self) -> dict[str, float]:
        return metrics(self.metrics_port)


def start_workers(tmp_path: Path, *extra: str) -> Workers:
    turn_port, metrics_port = free_port("both"), free_port("tcp")
    args = ["--workers", "2", "--listen", f"{HOST}:{turn_port}", "--no-rendezvous",
            "--metrics-listen", f"{HOST}:{metrics_port}", "--user", "u:p",
            "--allow-peer", "127.0.0.0/8", *extra]  # fmt: skip
    relay = start_relay_process(args, tmp_path / "relay.log", ready="all 2 workers ready")
    return Workers(relay, turn_port, metrics_port)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = start_workers(tmp_path)
    try:
        yield running
    finally:
        running.relay.stop()


async def _incoming_and_outgoing(uri: str) -> None:
    """One TCP allocation: a peer dials in, and a Connect goes out; bytes both ways."""
    async with await connect_turn(uri, "u", "p") as client:
        allocation = await client.allocate_tcp()
        await allocation.permit(HOST)
        peer_reader, peer_writer = await asyncio.open_connection(*allocation.relayed_address)
        stream = await asyncio.wait_for(allocation.accept(), STEP)
        payload = os.urandom(100_000)
        peer_writer.write(payload)
        peer_writer.write_eof()
        assert await asyncio.wait_for(stream.reader.readexactly(len(payload)), STEP) == payload
        stream.writer.write(b"back")
        stream.writer.close()
        assert await asyncio.wait_for(peer_reader.read(), STEP) == b"back"
        peer_writer.close()

        async def on_peer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"hello from the peer")
            await w.drain()
            w.close()

        server = await asyncio.start_server(on_peer, HOST, 0)
        try:
            reader, writer = await allocation.connect(server.sockets[0].getsockname()[:2])
            assert await asyncio.wait_for(reader.read(), STEP) == b"hello from the peer"
            writer.close()
        finally:
            server.close()


async def test_rfc6062_both_ways_across_two_workers(workers: Workers) -> None:
    for _ in range(ALLOCATIONS):
        await _incoming_and_outgoing(workers.uri)
    seen = workers.metrics()
    # both workers created allocations ...
    assert seen['delshare_relay_worker_allocations_created{worker="0"}'] > 0, seen
    assert seen['delshare_relay_worker_allocations_created{worker="1"}'] > 0, seen
    assert seen['delshare_relay_allocations_created_total{transport="tcp"}'] == ALLOCATIONS
    # ... some ConnectionBinds landed on the other worker and were handed over, all bound
    assert seen["delshare_relay_binds_handed_over_total"] > 0, seen
    assert (
        seen["delshare_relay_binds_adopted_total"] == seen["delshare_relay_binds_handed_over_total"]
    ), (seen, workers.relay.text())
    assert seen["delshare_relay_tcp_connections_bound_total"] == 2 * ALLOCATIONS
