"""Issue 12 item 5 (rendezvous part): mailboxes, pairings and refusals on the relay's /metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from delshare.errors import PairingError
from delshare.pairing import wire
from delshare.pairing.client import pair
from tests.app.harness import start_relay_process, stop
from tests.support.metrics import scrape
from tests.support.ports import free_port

CODE = "7-guitar-orbit"
WAIT = 10.0


async def test_relay_metrics_show_rendezvous_mailboxes_pairings_and_refusals(
    tmp_path: Path,
) -> None:
    port = free_port("tcp")
    relay = start_relay_process(tmp_path, extra=("--metrics-listen", f"127.0.0.1:{port}"))
    try:
        url = relay.rendezvous
        before = scrape(port, WAIT)
        assert "delshare_relay_allocations" in before  # one registry, one scrape
        assert before["delshare_rendezvous_mailboxes"] == 0
        sender, receiver = await asyncio.gather(
            pair(url, CODE, "sender", timeout=WAIT), pair(url, CODE, "receiver", timeout=WAIT)
        )
        async with sender, receiver:
            with pytest.raises(PairingError, match="in use"):
                await pair(url, CODE, "sender", timeout=WAIT)
            async with connect(url, proxy=None) as raw:
                await raw.send("not json")
                assert isinstance(wire.decode_server(await raw.recv()), wire.ErrorMessage)
            during = scrape(port, WAIT)
        assert during["delshare_rendezvous_mailboxes"] == 1
        assert during["delshare_rendezvous_connections"] >= 2
        assert during["delshare_rendezvous_pairings_total"] == 1
        assert during['delshare_rendezvous_refusals_total{reason="in_use"}'] == 1
        assert during['delshare_rendezvous_refusals_total{reason="protocol"}'] == 1
    finally:
        stop(relay.process)
