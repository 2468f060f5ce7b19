"""``delshare turn-check`` as a subprocess: passes against coturn and ``delshare relay``; fails with
one clear line (no traceback, exit code 1) on a wrong password, a server without TCP relay and a
closed port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.test_client_turn import (
    KINDS,
    PASSWORD,
    SECRET,
    USER,
    Server,
    start_coturn,
    start_server,
    start_tls_server,
)
from tests.support.ports import free_port

STEPS = ("connect", "binding", "allocate", "permission", "incoming", "outgoing", "throughput")


def turn_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DELSHARE_TURN")}
    return subprocess.run(
        [sys.executable, "-c", "from delshare.cli.main import main; main()", "turn-check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, **(env or {})},
    )


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    running = start_server(request.param)
    yield running
    running.stop()


def assert_one_line_failure(done: subprocess.CompletedProcess[str], step: str) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"turn-check: FAILED at {step}: ")
    return lines[0]


def test_passes_and_reports_every_step(server: Server) -> None:
    done = turn_check(server.uri("tcp"), "--user", USER, "--password", PASSWORD, "--size", "8")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for step in STEPS:
        assert any(line.split()[0] == step for line in lines[1:-1]), done.stdout
    assert "server-reflexive 127.0.0.1:" in done.stdout
    assert "relayed 127.0.0.1:" in done.stdout
    assert "MiB/s" in done.stdout
    assert lines[-1].startswith("OK")


def test_takes_the_same_flags_and_variables_as_send_and_receive(server: Server) -> None:
    """Issue 11: --turn-user/--turn-password and DELSHARE_TURN_USER/PASSWORD, as send/receive."""
    flags = turn_check(server.uri("tcp"), "--turn-user", USER, "--turn-password", PASSWORD,
                       "--size", "1")  # fmt: skip
    assert flags.returncode == 0, flags.stdout + flags.stderr
    variables = {"DELSHARE_TURN_USER": USER, "DELSHARE_TURN_PASSWORD": PASSWORD}
    done = turn_check(server.uri("tcp"), "--size", "1", env=variables)
    assert done.returncode == 0, done.stdout + done.stderr
    wrong = turn_check(server.uri("tcp"), env={**variables, "DELSHARE_TURN_PASSWORD": "wrong"})
    assert "(wrong username, password or secret?)" in assert_one_line_failure(wrong, "allocate")


def test_passes_with_rest_secret(server: Server) -> None:
    rest = start_server(server.kind, secret=SECRET)
    try:
        done = turn_check(rest.uri("tcp"), "--secret", SECRET, "--size", "1")
    finally:
        rest.stop()
    assert done.returncode == 0, done.stdout + done.stderr


def test_wrong_password_fails_at_allocate_with_401(server: Server) -> None:
    done = turn_check(server.uri("tcp"), "--user", USER, "--password", "wrong")
    line = assert_one_line_failure(done, "allocate")
    assert "401" in line and "password" in line


@pytest.mark.coturn
def test_server_without_tcp_relay_fails_at_allocate_with_442() -> None:
    running = start_coturn(no_tcp_relay=True)
    try:
        done = turn_check(running.uri("tcp"), "--user", USER, "--password", PASSWORD)
    finally:
        running.stop()
    line = assert_one_line_failure(done, "allocate")
    assert "442" in line


def test_closed_port_fails_at_connect() -> None:
    port = free_port("tcp")
    done = turn_check(f"turn:127.0.0.1:{port}?transport=tcp", "-u", USER, "-p", PASSWORD)
    line = assert_one_line_failure(done, "connect")
    assert "refused" in line.lower()


def test_udp_uri_is_a_usage_error() -> None:
    done = turn_check("turn:127.0.0.1:3478?transport=udp", "-u", USER, "-p", PASSWORD)
    assert done.returncode == 2
    assert "transport=tcp" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_passes_over_tls_with_a_private_ca(kind: str, tmp_path: Path) -> None:
    running, cert = start_tls_server(kind, tmp_path)
    try:
        uri = running.uri("tls")
        done = turn_check(uri, "-u", USER, "-p", PASSWORD, "--ca", str(cert), "--size", "1")
        untrusted = turn_check(uri, "-u", USER, "-p", PASSWORD, "--size", "1")
    finally:
        running.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    line = assert_one_line_failure(untrusted, "connect")
    assert "certificate" in line.lower()
