"""Live metrics, /healthz and failed-login logs of the relay (issue 12, item 5).

The relay runs in-process with its HTTP exporter on a loopback port; the clients are the raw
STUN helpers of ``test_server_relay``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest

from delshare.aio.server import RelayConfig, RunningRelay, start_relay
from delshare.stun import attributes as at
from delshare.stun.constants import PROTO_TCP, Attr, MessageClass, Method
from delshare.stun.credentials import long_term_key
from delshare.stun.message import Message
from delshare.turn.auth import AuthConfig
from delshare.turn.server_config import ServerConfig
from tests.aio.test_server_relay import (
    HOST,
    PASSWORD,
    REALM,
    STEP,
    USER,
    StunStream,
    connection_bind,
    incoming_peer,
    read_all,
)

CHUNK = 1 << 20


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    server = ServerConfig(auth=AuthConfig(REALM, {USER: PASSWORD}), allow_peers=("127.0.0.0/8",))
    config = RelayConfig(server=server, listen=((HOST, 0),), metrics_listen=(HOST, 0))
    running = await start_relay(config)
    try:
        yield running
    finally:
        await running.close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=STEP) as response:
            return int(response.status), str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return exc.code, str(exc.read().decode())


async def scrape(relay: RunningRelay, path: str = "/metrics") -> tuple[int, str]:
    return await asyncio.to_thread(_get, f"http://{HOST}:{relay.server.metrics_port}{path}")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{wanted}}}" if wanted else "")) + r" ([0-9.e+]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def tcp_bytes(text: str, direction: str) -> float:
    return sample(text, "delshare_relay_bytes_total", direction=direction, transport="tcp")


async def test_byte_counters_grow_while_a_stream_is_still_flowing(relay: RunningRelay) -> None:
    """delshare_relay_bytes_total moves with the data, not only when a connection closes."""
    control, peer_reader, peer_writer, cid = await incoming_peer(relay)
    client_reader, client_writer = await connection_bind(relay, control, cid)
    seen = []
    for round_ in range(1, 4):
        peer_writer.write(b"d" * CHUNK)
        client_writer.write(b"u" * (CHUNK // 2))
        await read_all(client_reader, CHUNK)
        await read_all(peer_reader, CHUNK // 2)
        _, text = await scrape(relay)
        # every byte read above was delivered by the bridge, so it is already counted
        assert tcp_bytes(text, "peer_to_client") == round_ * CHUNK
        assert tcp_bytes(text, "client_to_peer") == round_ * CHUNK // 2
        seen.append(tcp_bytes(text, "peer_to_client"))
    assert seen == sorted(seen) and len(set(seen)) == 3  # growing, and the stream still open
    assert sample(text, "delshare_relay_tcp_connections") == 1
    assert sample(text, "delshare_relay_tcp_connections_bound_total") == 1
    for closable in (client_writer, peer_writer):
        closable.close()
    control.close()
    for _ in range(100):  # after the close the totals stay (finished bridges keep counting)
        _, text = await scrape(relay)
        if sample(text, "delshare_relay_tcp_connections") == 0:
            break
        await asyncio.sleep(0.05)
    assert sample(text, "delshare_relay_tcp_connections") == 0, text  # the bridge did end
    assert tcp_bytes(text, "peer_to_client") == 3 * CHUNK
    assert tcp_bytes(text, "client_to_peer") == 3 * CHUNK // 2


async def test_a_plain_challenge_is_not_an_error(relay: RunningRelay) -> None:
    """RFC 8489 §9.2.4: the first 401 (no credentials yet) is the mechanism, not a failure."""
    control = await StunStream.open(relay.turn_port)
    reply = await control.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, PROTO_TCP))
    assert reply.cls == MessageClass.SUCCESS
    _, text = await scrape(relay)
    assert sample(text, "delshare_relay_auth_challenges_total", code="401") == 1
    assert "delshare_relay_error_responses_total{" not in text
    assert "delshare_relay_auth_failures_total{" not in text
    control.close()


async def _signed_allocate(relay: RunningRelay, user: str, password: str) -> tuple[Message, str]:
    """A challenge round trip, then Allocate signed with ``user``/``password``; the reply and
    the client address the relay saw (HOST:PORT)."""
    stream = await StunStream.open(relay.turn_port)
    first = Message(Method.ALLOCATE, MessageClass.REQUEST).add(Attr.REQUESTED_TRANSPORT, PROTO_TCP)
    stream.writer.write(first.encode(fingerprint=True))
    challenge = await stream.next_message()
    assert challenge.error is not None and challenge.error[0] == 401
    nonce = challenge.get(at.NONCE)
    assert nonce is not None
    signed = Message(Method.ALLOCATE, MessageClass.REQUEST).add(Attr.REQUESTED_TRANSPORT, PROTO_TCP)
    signed.add(Attr.USERNAME, user).add(Attr.REALM, REALM).add(Attr.NONCE, nonce)
    stream.writer.write(signed.encode(long_term_key(user, REALM, password), fingerprint=True))
    reply = await stream.next_message()
    client = stream.writer.get_extra_info("sockname")
    stream.close()
    return reply, f"{client[0]}:{client[1]}"


async def test_wrong_password_is_logged_at_info_with_user_and_address(
    relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="delshare.relay")
    reply, client = await _signed_allocate(relay, USER, "not-" + PASSWORD)
    assert reply.error is not None and reply.error[0] == 401
    lines = [r for r in caplog.records if "login failed" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    text = lines[0].getMessage()
    assert repr(USER) in text and client in text and "wrong_password" in text
    assert PASSWORD not in text.replace(repr(USER), "")
    reply, _ = await _signed_allocate(relay, "mallory\x1b[2J", PASSWORD)
    assert reply.error is not None and reply.error[0] == 401
    text = [r.getMessage() for r in caplog.records if "login failed" in r.getMessage()][-1]
    assert "unknown_user" in text and "\x1b" not in text  # control characters escaped
    _, metrics = await scrape(relay)
    assert sample(metrics, "delshare_relay_auth_failures_total", reason="wrong_password") == 1
    assert sample(metrics, "delshare_relay_auth_failures_total", reason="unknown_user") == 1
    assert "delshare_relay_error_responses_total{" not in metrics


async def test_healthz_says_ready_then_draining(relay: RunningRelay) -> None:
    assert await scrape(relay, "/healthz") == (200, "ready\n")
    relay.server.metrics.set_draining(True)
    assert await scrape(relay, "/healthz") == (503, "draining\n")
    status, text = await scrape(relay)
    assert status == 200 and sample(text, "delshare_relay_draining") == 1
    relay.server.metrics.set_draining(False)
    assert await scrape(relay, "/healthz") == (200, "ready\n")
    status, _ = await scrape(relay, "/nothing-here")
    assert status == 404


async def test_draining_the_relay_turns_healthz_to_503(relay: RunningRelay) -> None:
    """SIGTERM's drain (``RelayServer.start_draining``) is what a load balancer must see."""
    assert await scrape(relay, "/healthz") == (200, "ready\n")
    relay.server.start_draining()
    assert await scrape(relay, "/healthz") == (503, "draining\n")
