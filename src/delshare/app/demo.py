"""``delshare demo``: a real transfer through an embedded TURN TCP relay, on this machine.

Starts the relay (TURN with RFC 6062 TCP allocations, plus the rendezvous service) in-process on
free loopback ports, writes a file of random bytes, then runs the sender and the receiver in one
event loop with ``--relay-only``: the bytes go sender → TURN server → receiver over TCP, exactly
as between two NATed machines. Finally the received file's BLAKE3 digest is compared with the
source.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delshare.aio.server import RelayConfig, RunningRelay, start_relay
from delshare.app.common import SessionOptions
from delshare.app.connect import ConnectOptions
from delshare.app.events import OfferReceived, Reporter
from delshare.app.receive import ReceiveOptions, run_receive
from delshare.app.send import run_send
from delshare.errors import TransferError
from delshare.link.relay import TurnSettings
from delshare.pairing import generate_code, serve_rendezvous
from delshare.transfer.digest import hash_file, new_hasher
from delshare.turn.auth import AuthConfig
from delshare.turn.server_config import ServerConfig
from delshare.turn.uri import TurnUri

__all__ = ["DemoResult", "run_demo"]

LOOPBACK_PEERS = ("127.0.0.0/8",)


@dataclass(frozen=True)
class DemoResult:
    """What the demo moved and the hash both ends agree on."""

    size: int
    blake3: str
    turn: str
    rendezvous: str


def _random_file(path: Path, size: int) -> str:
    digest = new_hasher()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


async def _start_turn(user: str, password: str) -> RunningRelay:
    auth = AuthConfig("del.demo", {user: password})
    server = ServerConfig(auth=auth, allow_peers=LOOPBACK_PEERS)
    return await start_relay(RelayConfig(server=server, listen=(("127.0.0.1", 0),)))


async def _both(first: Coroutine[Any, Any, None], second: Coroutine[Any, Any, None]) -> None:
    """Run both; if one fails, cancel the other and raise the first failure itself."""
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(first)
            group.create_task(second)
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None


async def _never_asked(offer: OfferReceived) -> bool:
    return True


async def run_demo(
    size: int, send_report: Reporter, receive_report: Reporter, announce: Reporter | None = None
) -> DemoResult:
    """Move ``size`` random bytes through an embedded TURN TCP relay; raise if hashes differ."""
    user, password = "demo", secrets.token_urlsafe(12)
    turn = await _start_turn(user, password)
    rendezvous = await serve_rendezvous("127.0.0.1", 0)
    try:
        turn_uri = TurnUri(secure=False, host="127.0.0.1", port=turn.turn_port, transport="tcp")
        connect = ConnectOptions(turn=TurnSettings(turn_uri, user, password), mode="relay")
        rendezvous_url = f"ws://127.0.0.1:{rendezvous.port}"
        session = SessionOptions(rendezvous_url, connect)
        with tempfile.TemporaryDirectory(prefix="delshare-demo-") as tmp:
            source, out = Path(tmp) / "demo.bin", Path(tmp) / "received"
            out.mkdir()
            loop = asyncio.get_running_loop()
            expected = await loop.run_in_executor(None, _random_file, source, size)
            code = generate_code()
            receive = ReceiveOptions(str(out), yes=True)
            await _both(
                run_send([str(source)], code, session, send_report),
                run_receive(code, session, receive, receive_report, _never_asked),
            )
            got = (await loop.run_in_executor(None, hash_file, out / "demo.bin")).hex()
        if got != expected:
            raise TransferError(f"received file differs: blake3 {got} != {expected}")
        return DemoResult(size, got, f"127.0.0.1:{turn.turn_port}", rendezvous_url)
    finally:
        rendezvous.close()
        await rendezvous.wait_closed()
        await turn.close()
