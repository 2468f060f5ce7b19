"""``wss://`` rendezvous: pairing through a TLS server with a private CA, and every TLS failure
described by its cause (issue 12, item 7)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from delshare.errors import PairingError
from delshare.pairing.client import pair
from delshare.pairing.server import RendezvousServer, serve_rendezvous
from delshare.tls import CA_ENV, server_context
from tests.support.tlscert import CertFiles, make_self_signed

CODE = "7-guitar-orbit"
WAIT = 10.0


@pytest.fixture
def cert(tmp_path: Path) -> CertFiles:
    return make_self_signed(tmp_path / "good")


@pytest.fixture
async def wss(cert: CertFiles) -> AsyncIterator[RendezvousServer]:
    tls = server_context(str(cert.cert), str(cert.key))
    async with await serve_rendezvous("127.0.0.1", 0, ssl=tls) as running:
        yield running


async def _pair_both(url: str, ca: str | None = None) -> str:
    sender = asyncio.create_task(pair(url, CODE, "sender", timeout=WAIT, ca=ca))
    receiver = await pair(url, CODE, "receiver", timeout=WAIT, ca=ca)
    async with await sender as a, receiver as b:
        await a.send({"t": "hello over wss"})
        got = await b.receive(WAIT)
    return str(got["t"])


async def test_wss_pairing_with_the_private_ca(wss: RendezvousServer, cert: CertFiles) -> None:
    url = f"wss://localhost:{wss.port}"
    assert await _pair_both(url, str(cert.cert)) == "hello over wss"


async def test_wss_pairing_trusts_delshare_ca(
    wss: RendezvousServer, cert: CertFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CA_ENV, str(cert.cert))
    assert await _pair_both(f"wss://127.0.0.1:{wss.port}") == "hello over wss"


async def test_unknown_ca_is_named_and_points_to_ca_flag(wss: RendezvousServer) -> None:
    with pytest.raises(PairingError) as failure:
        await pair(f"wss://localhost:{wss.port}", CODE, "sender", timeout=WAIT)
    text = str(failure.value)
    assert "certificate verify failed: unknown CA" in text and "--ca" in text


async def test_hostname_mismatch_is_named(tmp_path: Path) -> None:
    other = make_self_signed(tmp_path / "other", names=("relay.example",))
    tls = server_context(str(other.cert), str(other.key))
    async with await serve_rendezvous("127.0.0.1", 0, ssl=tls) as running:
        with pytest.raises(PairingError) as failure:
            await pair(
                f"wss://127.0.0.1:{running.port}",
                CODE,
                "sender",
                timeout=WAIT,
                ca=str(other.cert),
            )
    assert "hostname mismatch" in str(failure.value)
    assert "127.0.0.1" in str(failure.value)


async def test_wss_against_a_plain_server_gives_a_reason() -> None:
    async with await serve_rendezvous("127.0.0.1", 0) as plain:
        with pytest.raises(PairingError) as failure:
            await pair(f"wss://127.0.0.1:{plain.port}", CODE, "sender", timeout=WAIT)
    reason = str(failure.value).split(": ", 1)[1]
    assert reason.strip()
    assert "not a TLS server" in reason


async def test_an_older_wss_server_is_reopened_with_the_private_ca(cert: CertFiles) -> None:
    """The fallback for a rendezvous without ``allocate`` connects again: with the same ``ca``,
    so it reaches ``open`` instead of failing the TLS check on the second connection."""
    seen: list[str] = []

    async def older(connection: ServerConnection) -> None:
        async for frame in connection:
            kind = json.loads(frame)["type"]
            seen.append(kind)
            answer = {"type": "close", "reason": "mailbox expired"}
            if kind != "open":
                answer = {"type": "error", "reason": f"unknown message type {kind!r}"}
            await connection.send(json.dumps(answer))
            return

    tls = server_context(str(cert.cert), str(cert.key))
    async with serve(older, "127.0.0.1", 0, ssl=tls) as fake:
        url = f"wss://localhost:{fake.sockets[0].getsockname()[1]}"
        with pytest.raises(PairingError, match="mailbox expired"):
            await pair(url, None, "sender", timeout=WAIT, ca=str(cert.cert))
    assert seen == ["allocate", "open"]
