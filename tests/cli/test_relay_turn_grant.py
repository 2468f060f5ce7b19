"""Issue 12 item 9: the rendezvous hands clients TURN servers and short-lived credentials.

A relay with ``--auth-secret`` gives each rendezvous client that asks its TURN server and REST
credentials (``expiry:id``, base64 HMAC-SHA1) valid ``--rendezvous-turn-lifetime`` seconds, so
``delshare send``/``receive`` with only ``--rendezvous`` can relay, and nobody holds the secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from delshare.aio.client import connect_turn
from delshare.errors import TransactionError
from tests.adversarial.rendezvous import read_code
from tests.app.harness import env_for, finish, sha256_file, start, start_relay_process, stop

SECRET = "rest-secret-for-tests"
WAIT = 10.0


async def _handed(url: str) -> dict[str, str]:
    """What the rendezvous hands a client that opens a mailbox asking for TURN servers."""
    async with connect(url, proxy=None) as raw:
        await raw.send(
            json.dumps({"type": "open", "nameplate": "9", "side": "sender", "turn": True})
        )
        reply = json.loads(await asyncio.wait_for(raw.recv(), WAIT))
    assert reply["type"] == "turn" and len(reply["servers"]) == 1
    server = reply["servers"][0]
    assert isinstance(server, dict)
    return {str(k): str(v) for k, v in server.items()}


def test_a_client_with_only_the_rendezvous_relays_with_handed_credentials(
    tmp_path: Path,
) -> None:
    relay = start_relay_process(tmp_path, extra=("--auth-secret", SECRET))
    try:
        source = tmp_path / "payload.bin"
        source.write_bytes(bytes(range(256)) * 1024)
        out = tmp_path / "out"
        out.mkdir()
        env = env_for(relay.rendezvous)  # no DELSHARE_TURN*: no server, no secret
        sender = start(["send", str(source), "--relay-only"], env)
        try:
            code = read_code(sender)
            received = finish(
                start(["receive", code, "-o", str(out), "--yes", "--relay-only"], env)
            )
        finally:
            sent = finish(sender, 30.0)
        assert received.returncode == 0 and sent.returncode == 0, sent.stderr + received.stderr
        expected = f"connected: relay 127.0.0.1:{relay.turn_port}"
        assert received.line("connected:") == expected
        assert sha256_file(out / "payload.bin") == sha256_file(source)
        assert SECRET not in sent.stdout + sent.stderr + received.stdout + received.stderr
    finally:
        stop(relay.process)


async def test_handed_credentials_work_then_expire(tmp_path: Path) -> None:
    lifetime = 2
    flags = ("--auth-secret", SECRET, "--rendezvous-turn-lifetime", str(lifetime))
    relay = start_relay_process(tmp_path, extra=flags)
    try:
        server = await _handed(relay.rendezvous)
        assert server["urls"] == f"turn:127.0.0.1:{relay.turn_port}?transport=tcp"
        expiry, _, user_id = server["username"].partition(":")
        assert int(expiry) <= time.time() + lifetime + 1 and len(user_id) >= 8
        mac = hmac.new(SECRET.encode(), server["username"].encode(), hashlib.sha1).digest()
        assert server["credential"] == base64.b64encode(mac).decode()
        client = await connect_turn(server["urls"], server["username"], server["credential"])
        try:
            await client.allocate_tcp()  # works now
        finally:
            await client.close()
        await asyncio.sleep(lifetime + 1.5)
        late = await connect_turn(server["urls"], server["username"], server["credential"])
        try:
            with pytest.raises(TransactionError) as refused:
                await late.allocate_tcp()
            assert refused.value.code == 401
        finally:
            await late.close()
    finally:
        stop(relay.process)


async def test_without_a_secret_the_rendezvous_hands_out_nothing(tmp_path: Path) -> None:
    relay = start_relay_process(tmp_path)  # static users only
    try:
        async with connect(relay.rendezvous, proxy=None) as raw:
            await raw.send(json.dumps({"type": "allocate", "turn": True}))
            first = json.loads(await asyncio.wait_for(raw.recv(), WAIT))
            second = json.loads(await asyncio.wait_for(raw.recv(), WAIT))
        assert first == {"type": "turn", "servers": []}
        assert second["type"] == "allocated"
    finally:
        stop(relay.process)


def test_a_static_turn_setting_wins_over_handed_servers(tmp_path: Path) -> None:
    granting = start_relay_process(tmp_path, extra=("--auth-secret", SECRET))
    static = start_relay_process(tmp_path, rendezvous=False)
    try:
        source = tmp_path / "payload.bin"
        source.write_bytes(b"static wins\n" * 1000)
        out = tmp_path / "out"
        out.mkdir()
        env = env_for(granting.rendezvous, static.turn)  # --turn given: nothing is asked for
        sender = start(["send", str(source), "--relay-only"], env)
        try:
            code = read_code(sender)
            receiver = start(["receive", code, "-o", str(out), "--yes", "--relay-only"], env)
            received = finish(receiver)
        finally:
            sent = finish(sender, 30.0)
        assert received.returncode == 0 and sent.returncode == 0, sent.stderr + received.stderr
        assert received.line("connected:") == f"connected: relay 127.0.0.1:{static.turn_port}"
    finally:
        stop(granting.process)
        stop(static.process)
