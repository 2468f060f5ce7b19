"""coturn's ``turnutils_uclient`` against ``delshare relay`` on loopback (issue 2 acceptance).

One relay subprocess (``delshare relay`` with free ports, ``--allow-peer 127.0.0.0/8``, a long-term
user, a REST secret and a TLS listener with a certificate made here) serves every run. All uclient
runs start together in one module fixture (each is 5-15 s of mostly waiting), then each test checks
one. Zero loss is required: every message sent is received (``-P``: the tool counts one direction,
so received == sent / 2, exactly what coturn itself gives).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.coturn import (
    UclientFailed,
    UclientResult,
    coturn_missing,
    run_uclient,
    start_peer,
)
from tests.support.ports import free_port
from tests.support.tlscert import make_self_signed

pytestmark = [
    pytest.mark.coturn,
    pytest.mark.skipif(coturn_missing() is not None, reason=f"coturn: {coturn_missing()}"),
]

USER, PASSWORD, SECRET = "alice", "wonderland", "rest-secret-for-tests"
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0


@dataclass
class Relay:
    port: int
    tls_port: int
    port6: int | None  # the [::1] listener, when this host has IPv6 loopback
    process: subprocess.Popen[bytes]
    log: Path


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def relay_argv(port: int, tls_port: int, port6: int | None, cert: Path, key: Path) -> list[str]:
    code = "from delshare.cli.main import main; main()"
    argv = [
        sys.executable, "-c", code, "relay", "--no-rendezvous",
        "--listen", f"{HOST}:{port}", "--tls-listen", f"{HOST}:{tls_port}",
        "--cert", str(cert), "--key", str(key),
        "--user", f"{USER}:{PASSWORD}", "--auth-secret", SECRET,
        "--allow-peer", "127.0.0.0/8", "--allow-peer", "::1/128", "--realm", "interop.test",
    ]  # fmt: skip
    if port6 is not None:
        argv += ["--listen", f"[::1]:{port6}"]
    return argv


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    with tempfile.TemporaryDirectory() as tmp:
        files = make_self_signed(Path(tmp))
        port, tls_port = free_port("both"), free_port("tcp")
        port6 = free_port("both", "::1") if _ipv6_loopback() else None
        log = Path(tmp) / "relay.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                relay_argv(port, tls_port, port6, files.cert, files.key),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while not (_accepts(port) and _accepts(tls_port)):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "relay did not start"
                time.sleep(0.05)
            yield Relay(port, tls_port, port6, process, log)
        finally:
            stop(process)


Outcome = UclientResult | UclientFailed


def _attempt(job: Callable[[], UclientResult]) -> Outcome:
    try:
        return job()
    except UclientFailed as failure:
        return failure


def _jobs(relay: Relay, peer: tuple[str, int]) -> dict[str, Callable[[], UclientResult]]:
    def job(
        flags: tuple[str, ...], *, tls: bool = False, clients: int = 4, messages: int = 100,
        rest: bool = False, echo: bool = False, ipv6: bool = False,
    ) -> Callable[[], UclientResult]:  # fmt: skip
        def run() -> UclientResult:
            if ipv6 and relay.port6 is None:
                raise UclientFailed("no IPv6 loopback", flags, None, "")
            host, port = ("::1", relay.port6) if ipv6 and relay.port6 else (HOST, relay.port)
            return run_uclient(
                host, relay.tls_port if tls else port, mode_flags=flags,
                user=USER, password=None if rest else PASSWORD, secret=SECRET if rest else None,
                clients=clients, messages=messages, peer=peer if echo else None,
                timeout=60, retries=1,
            )  # fmt: skip

        return run

    return {
        "tcp-relay": job(("-T", "-y"), clients=10, messages=300),
        "tcp-relay-passive": job(("-P",), clients=2, messages=50),
        "udp-relay": job(("-y",), clients=10, messages=200),
        "udp-relay-over-tcp": job(("-t", "-y"), clients=10, messages=200),
        "tls-tcp-relay": job(("-S", "-T"), tls=True),
        "tls-udp-relay": job(("-S", "-t", "-y"), tls=True),
        "rest-tcp-relay": job(("-T", "-y"), rest=True),
        "rest-udp-relay": job(("-y",), rest=True),
        "udp-peer": job((), echo=True, messages=50),
        "tcp-peer": job(("-t",), echo=True, messages=50),
        "udp-relay-dont-fragment": job(("-g", "-y")),
        "ipv6-tcp-relay": job(("-T", "-y", "-x"), ipv6=True),
        "ipv6-udp-relay": job(("-y", "-x"), ipv6=True),
    }


@pytest.fixture(scope="module")
def outcomes(relay: Relay) -> Iterator[dict[str, Future[Outcome]]]:
    with start_peer(HOST) as peer:
        jobs = _jobs(relay, (peer.host, peer.port))
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            yield {name: pool.submit(_attempt, job) for name, job in jobs.items()}


def check(outcomes: dict[str, Future[Outcome]], name: str, relay: Relay) -> UclientResult:
    outcome = outcomes[name].result(timeout=120)
    if isinstance(outcome, UclientFailed):
        pytest.fail(f"{outcome}\n--- relay log tail ---\n{relay.log.read_text()[-3000:]}")
    assert outcome.clean, outcome.summary()
    assert outcome.attempts == 1 or outcome.received_messages == outcome.expected_received
    return outcome


def test_tcp_relay_client_to_client(outcomes: dict[str, Future[Outcome]], relay: Relay) -> None:
    """-T -y, 10 clients: Connect, ConnectionAttempt, ConnectionBind; 3000 messages, none lost."""
    result = check(outcomes, "tcp-relay", relay)
    assert result.sent_messages == 10 * 300
    assert result.lost_messages == 0


def test_tcp_relay_passive_peer(outcomes: dict[str, Future[Outcome]], relay: Relay) -> None:
    """-P: a plain TCP peer dials the relayed address; the tool counts one way (as on coturn)."""
    result = check(outcomes, "tcp-relay-passive", relay)
    assert result.received_messages == result.sent_messages // 2 > 0


def test_udp_relay_over_udp(outcomes: dict[str, Future[Outcome]], relay: Relay) -> None:
    """-y, 10 clients with RTCP pairs: EVEN-PORT, RESERVATION-TOKEN, ChannelBind, ChannelData."""
    result = check(outcomes, "udp-relay", relay)
    assert result.lost_messages == 0
    assert result.sent_messages >= 10 * 200


def test_udp_relay_over_tcp(outcomes: dict[str, Future[Outcome]], relay: Relay) -> None:
    """-t -y: padded ChannelData on the stream (RFC 8656 §12.5)."""
    result = check(outcomes, "udp-relay-over-tcp", relay)
    assert result.lost_messages == 0


def test_tls_tcp_relay(outcomes: dict[str, Future[Outcome]], relay: Relay) -> None:
    """-S -T: TLS control and data connections, TCP relay."""
    assert check(outcomes, "tls-tcp-relay", relay).lost_messages == 0


def test_tls_udp_relay(outcomes: dict[str, Future[Outcome]], relay: Relay) -> None:
    """-S -t -y: TLS control connection, UDP relay (coturn itself loses one message here)."""
    assert check(outcomes, "tls-udp-relay", relay).lost_messages == 0


def test_udp_relay_with_dont_fragment(outcomes: dict[str, Future[Outcome]], relay: Relay) -> None:
    """-g: DONT-FRAGMENT in Allocate is honoured (DF set on the relay socket), not refused."""
    assert check(outcomes, "udp-relay-dont-fragment", relay).lost_messages == 0


def test_rest_credentials_tcp_relay(outcomes: dict[str, Future[Outcome]], relay: Relay) -> None:
    """-W SECRET: TURN REST usernames '<expiry>:<user>' with HMAC-SHA1 passwords."""
    assert check(outcomes, "rest-tcp-relay", relay).lost_messages == 0


def test_rest_credentials_udp_relay(outcomes: dict[str, Future[Outcome]], relay: Relay) -> None:
    assert check(outcomes, "rest-udp-relay", relay).lost_messages == 0


def test_udp_relay_to_echo_peer(outcomes: dict[str, Future[Outcome]], relay: Relay) -> None:
    """No -y: Send indications / channels to turnutils_peer and back."""
    assert check(outcomes, "udp-peer", relay).lost_messages == 0


def test_udp_relay_over_tcp_to_echo_peer(
    outcomes: dict[str, Future[Outcome]], relay: Relay
) -> None:
    assert check(outcomes, "tcp-peer", relay).lost_messages == 0


def test_wrong_password_is_refused(relay: Relay) -> None:
    """A wrong password never gets an allocation: uclient gives up with an error."""
    with pytest.raises(UclientFailed):
        run_uclient(
            HOST, relay.port, mode_flags=("-T", "-y"), user=USER, password="wrong",
            clients=2, messages=5, timeout=30,
        )  # fmt: skip


@pytest.mark.parametrize("name", ["ipv6-tcp-relay", "ipv6-udp-relay"])
def test_ipv6_relays(outcomes: dict[str, Future[Outcome]], relay: Relay, name: str) -> None:
    """-x over [::1]: IPv6 relayed addresses (REQUESTED-ADDRESS-FAMILY), TCP and UDP relays."""
    if relay.port6 is None:
        pytest.skip("no IPv6 loopback")
    assert check(outcomes, name, relay).lost_messages == 0
