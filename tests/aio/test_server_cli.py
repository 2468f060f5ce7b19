"""``delshare relay`` as a user runs it: help, one-line errors, default start, clean stop."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from delshare.cli.relay import relay

CODE = "from delshare.cli.main import main; main()"
START_TIMEOUT = 20.0


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CODE, "relay", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_help_documents_every_flag() -> None:
    result = run("--help")
    assert result.returncode == 0
    flags = [opt for param in relay.params for opt in param.opts if opt.startswith("--")]
    assert len(flags) > 20
    missing = [flag for flag in flags if flag not in result.stdout]
    assert not missing
    assert "del:del" in result.stdout  # the demo user is documented


@pytest.mark.parametrize(
    "args",
    [
        ("--no-such-flag",),
        ("--user", "no-colon"),
        ("--listen", "127.0.0.1"),
        ("--allow-peer", "not-a-cidr"),
        ("--min-port", "70000"),
        ("--tls-listen", "127.0.0.1:5349"),
        ("--no-turn", "--no-rendezvous"),
        ("--relay-ip", "notanip"),
        ("--relay-ip6", "1.2.3.4"),
        ("--external-ip", "203.0.113.1/notanip"),
        ("--external-ip", "203.0.113.1/2001:db8::1"),
        ("--rendezvous-turn-uri", "http://relay.example"),
        ("--alternate-server", "relay.example:3478"),
        ("--listen", "localhost:3478"),
        ("--config", "/nonexistent/relay.toml"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error:")
    assert "Traceback" not in result.stderr


def test_busy_port_gives_one_line_and_exit_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("--listen", f"127.0.0.1:{port}", "--user", "a:b", "--no-rendezvous")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]


def _port_busy(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def _start_relay(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CODE, "relay", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_log_until(process: subprocess.Popen[str], marker: str) -> str:
    """The relay's log up to ``marker`` (or the start timeout), read from the descriptor itself:
    a buffered ``readline`` may already hold the marker while ``select`` waits for more."""
    assert process.stderr is not None
    fd = process.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + START_TIMEOUT
    while marker.encode() not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
    return seen.decode(errors="replace")


def test_no_options_starts_with_the_demo_user_and_stops_on_sigterm() -> None:
    if _port_busy(3478) or _port_busy(4000):
        pytest.skip("default port 3478 or 4000 is in use here")
    process = _start_relay()
    try:
        seen = _read_log_until(process, "rendezvous listening")
        assert "TURN listening on udp 0.0.0.0:3478" in seen, seen
        assert "TURN listening on tcp 0.0.0.0:3478" in seen, seen
        assert "demo user del:del" in seen
        assert "rendezvous listening" in seen
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)


def _startup_log(*args: str) -> str:
    """What ``delshare relay --no-rendezvous ARGS`` logs until its start-up is done (the
    ``clients:`` hint is its last start-up line; then it is stopped)."""
    process = _start_relay("--no-rendezvous", *args)
    try:
        return _read_log_until(process, "clients:")
    finally:
        process.kill()
        process.wait(5)


def test_demo_password_given_with_user_is_warned_about_truthfully() -> None:
    from tests.support.ports import free_port

    port = free_port("both")
    seen = _startup_log("--user", "del:del", "--listen", f"127.0.0.1:{port}")
    assert "--user: demo user del:del" in seen, seen
    assert "no --user" not in seen
    strong = _startup_log("--user", "del:long-secret", "--listen", f"127.0.0.1:{free_port('both')}")
    assert "clients:" in strong, strong  # the whole start-up was read
    assert "demo user" not in strong, strong
