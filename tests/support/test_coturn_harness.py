"""The coturn harness checked against coturn itself, on loopback.

All uclient runs start together in one module fixture (each takes 5-15 s of mostly waiting, see
``tests.support.coturn``), then each test checks one of them. Every command is
``turnutils_uclient FLAGS -m 4 -n 10 -l 100 -p PORT CREDS 127.0.0.1`` with PORT the server's
plain port (TLS port for ``-S``) and CREDS ``-u user -w pass`` unless a test says otherwise.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import pytest

from tests.support.coturn import (
    MODES,
    Turnserver,
    UclientFailed,
    UclientResult,
    coturn_missing,
    rest_credentials,
    run_uclient,
    start_peer,
    start_turnserver,
)

pytestmark = [
    pytest.mark.coturn,
    pytest.mark.skipif(coturn_missing() is not None, reason=f"coturn: {coturn_missing()}"),
]

CLIENTS = 4
MESSAGES = 10
SECRET = "s3cret-for-tests"

Outcome = UclientResult | UclientFailed


@dataclass(frozen=True)
class Servers:
    plain: Turnserver  # long-term credentials user/pass, TLS listener too
    rest: Turnserver  # --use-auth-secret
    udp_only: Turnserver  # --no-tcp-relay


def _attempt(job: Callable[[], UclientResult]) -> Outcome:
    try:
        return job()
    except UclientFailed as failure:
        return failure


def _jobs(servers: Servers, peer: tuple[str, int]) -> dict[str, Callable[[], UclientResult]]:
    plain, rest, udp_only = servers.plain, servers.rest, servers.udp_only
    jobs: dict[str, Callable[[], UclientResult]] = {}
    for mode in MODES.values():
        port = plain.tls_port if mode.tls else plain.port
        assert port is not None
        jobs[mode.name] = partial(
            run_uclient, plain.host, port, mode_flags=mode.flags, user="user", password="pass",
            peer=peer if mode.needs_peer else None, retries=1,
            tolerated_loss=0 if mode.lossless else CLIENTS, clients=CLIENTS, messages=MESSAGES,
        )  # fmt: skip
    rest_user, rest_password = rest_credentials(SECRET, "alice")
    jobs["rest-W"] = partial(
        run_uclient, rest.host, rest.port, mode_flags=["-T"], user="alice", secret=SECRET,
        retries=1, clients=CLIENTS, messages=MESSAGES,
    )  # fmt: skip
    jobs["rest-precomputed"] = partial(
        run_uclient, rest.host, rest.port, mode_flags=["-y"], user=rest_user,
        password=rest_password, retries=1, clients=CLIENTS, messages=MESSAGES,
    )  # fmt: skip
    jobs["rest-wrong-secret"] = partial(
        run_uclient, rest.host, rest.port, mode_flags=["-T"], user="alice", secret="not-it",
        timeout=30,
    )  # fmt: skip
    jobs["wrong-password"] = partial(
        run_uclient, plain.host, plain.port, mode_flags=["-T"], user="user", password="nope",
        timeout=30,
    )  # fmt: skip
    jobs["no-tcp-relay-T"] = partial(
        run_uclient, udp_only.host, udp_only.port, mode_flags=["-T"], user="user",
        password="pass", timeout=30, clients=CLIENTS, messages=MESSAGES,
    )  # fmt: skip
    jobs["no-tcp-relay-y"] = partial(
        run_uclient, udp_only.host, udp_only.port, mode_flags=["-y"], user="user",
        password="pass", retries=1, clients=CLIENTS, messages=MESSAGES,
    )  # fmt: skip
    return jobs


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    with (
        start_turnserver(tls=True) as plain,
        start_turnserver(users=(), auth_secret=SECRET) as rest,
        start_turnserver(no_tcp_relay=True) as udp_only,
    ):
        yield Servers(plain, rest, udp_only)


@pytest.fixture(scope="module")
def outcomes(servers: Servers) -> dict[str, Outcome]:
    with start_peer() as peer:
        jobs = _jobs(servers, (peer.host, peer.port))
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = {name: pool.submit(_attempt, job) for name, job in jobs.items()}
            return {name: future.result() for name, future in futures.items()}


def _result(outcomes: dict[str, Outcome], name: str) -> UclientResult:
    outcome = outcomes[name]
    if isinstance(outcome, UclientFailed):
        pytest.fail(f"{name}: {outcome}")
    return outcome


def _assert_clean(result: UclientResult, sent: int = CLIENTS * MESSAGES) -> None:
    assert result.sent_messages == sent, result.output
    assert result.sent_bytes == sent * 100
    assert result.clean, result.summary() + "\n" + result.output[-2000:]
    assert result.lost_messages == sent - result.expected_received


def test_tcp_relay_client_to_client(outcomes: dict[str, Outcome]) -> None:
    """``-T -y``: RFC 6062 Connect/ConnectionBind between client pairs.

    coturn 4.6.1: sent=40 received=40 lost=0 dropped=0, about 6 s.
    """
    _assert_clean(_result(outcomes, "tcp-relay"))


def test_tcp_relay_passive(outcomes: dict[str, Outcome]) -> None:
    """``-P``: a raw TCP peer connects to the relayed address (ConnectionAttempt).

    coturn 4.6.1: sent=40 received=20 "lost"=20: uclient counts only one direction; about 15 s.
    """
    result = _result(outcomes, "tcp-relay-passive")
    _assert_clean(result)
    assert result.received_messages * 2 == result.sent_messages


def test_udp_relay_client_to_client(outcomes: dict[str, Outcome]) -> None:
    """``-y``: UDP allocations over UDP, ChannelData between client pairs (RTP+RTCP sessions).

    coturn 4.6.1: sent=40 received=40 lost=0 dropped=0, about 6 s.
    """
    _assert_clean(_result(outcomes, "udp-relay"))


def test_udp_relay_over_tcp(outcomes: dict[str, Outcome]) -> None:
    """``-t -y``: UDP allocations over a TCP control connection.

    coturn 4.6.1: sent=40 received=40 lost=0 dropped=0, about 6 s.
    """
    _assert_clean(_result(outcomes, "udp-relay-over-tcp"))


def test_tls_tcp_relay(outcomes: dict[str, Outcome]) -> None:
    """``-S -T`` to the TLS port: TCP allocations over TLS.

    coturn 4.6.1: sent=40 received=40 lost=0 dropped=0, about 6 s.
    """
    _assert_clean(_result(outcomes, "tls-tcp-relay"))


def test_tls_udp_relay_loses_at_most_one_per_session(outcomes: dict[str, Outcome]) -> None:
    """``-S -t -y`` to the TLS port: UDP allocations over TLS.

    coturn 4.6.1: sent=40 received=36 or 37, lost=4 or 3, every run (the tool seems to leave
    the last TLS record unread), about 15 s. So only "at most one lost per session" holds; a run
    that loses more (5 of 40 once, with the 2 cores loaded by other work) is run once more.
    """
    result = _result(outcomes, "tls-udp-relay")
    assert result.sent_messages == CLIENTS * MESSAGES
    assert result.received_messages >= result.sent_messages - CLIENTS, result.summary()
    assert result.send_dropped == 0


def test_udp_to_echo_peer(outcomes: dict[str, Outcome]) -> None:
    """no mode flag, ``-e 127.0.0.1 -r PEERPORT``: UDP allocation, data to turnutils_peer's echo.

    coturn 4.6.1: sent=40 received=40 lost=0 dropped=0, about 5 s.
    """
    _assert_clean(_result(outcomes, "udp-peer"))


def test_tcp_control_to_echo_peer(outcomes: dict[str, Outcome]) -> None:
    """``-t -e 127.0.0.1 -r PEERPORT``: UDP allocation over TCP, data to the UDP echo peer.

    coturn 4.6.1: sent=40 received=40 lost=0 dropped=0, about 5 s.
    """
    _assert_clean(_result(outcomes, "tcp-peer"))


def test_rest_api_secret(outcomes: dict[str, Outcome]) -> None:
    """``-T -u alice -W SECRET`` against ``--use-auth-secret --static-auth-secret SECRET``.

    coturn 4.6.1: sent=40 received=40 lost=0 dropped=0, about 6 s.
    """
    _assert_clean(_result(outcomes, "rest-W"))


def test_rest_credentials_match_coturn(outcomes: dict[str, Outcome]) -> None:
    """``-y -u EXPIRY:alice -w HMAC`` with ``rest_credentials()``: coturn accepts our HMAC."""
    _assert_clean(_result(outcomes, "rest-precomputed"))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rest-wrong-secret", "Cannot complete Allocation"),
        ("wrong-password", "Cannot complete Allocation"),
        ("no-tcp-relay-T", "error 442 (TCP Transport is not allowed"),
    ],
)
def test_refused_allocation_fails(outcomes: dict[str, Outcome], name: str, message: str) -> None:
    """Wrong secret or password (401 twice), ``-T`` against ``--no-tcp-relay`` (442): exit 255.

    uclient prints the error at once and no statistics.
    """
    outcome = outcomes[name]
    assert isinstance(outcome, UclientFailed), outcome
    assert outcome.returncode == 255
    assert message in outcome.output


def test_no_tcp_relay_still_relays_udp(outcomes: dict[str, Outcome]) -> None:
    """``-y`` against ``--no-tcp-relay``: UDP allocations still work (sent=40 received=40)."""
    _assert_clean(_result(outcomes, "no-tcp-relay-y"))


def test_turnserver_listens_where_it_says(servers: Servers) -> None:
    plain = servers.plain
    assert plain.uri("udp") == f"turn:127.0.0.1:{plain.port}?transport=udp"
    assert plain.uri("tls") == f"turns:127.0.0.1:{plain.tls_port}?transport=tcp"
    with pytest.raises(ValueError):
        servers.rest.uri("tls")
    assert "Relay ports initialization done" in plain.log_text()
    with socket.create_connection((plain.host, plain.port), timeout=2):
        pass


def test_stop_frees_the_port() -> None:
    server = start_turnserver()
    pid, port, workdir = server.pid, server.port, server.workdir
    server.stop()
    assert server.process.returncode is not None
    assert not workdir.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert pid > 0
