"""The real-NAT lab: ``delshare send``/``receive`` between namespaces (issue 4 acceptance).

``nat_lab``: Alice and Bob are each behind their own masquerading NAT, so no direct TCP path
exists between them (inbound is dropped); ``delshare relay`` runs in the public namespace. With
no path flags at all the race must end on the TURN TCP relay, and the file must arrive intact.
``lan_lab``: both on one LAN, the same commands must connect directly.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from blake3 import blake3

from tests.app.harness import (
    DELSHARE,
    TURN_PASSWORD,
    TURN_USER,
    Outcome,
    env_for,
    sha256_file,
)
from tests.lab.netns import PUB_ADDR, Lab

pytestmark = pytest.mark.netns

TURN_PORT, RENDEZVOUS_PORT = 3478, 4000
SIZE = 24 << 20


def _start_relay(lab: Lab, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        relay = lab.run(
            "pub",
            [DELSHARE, "relay", "--listen", f"{PUB_ADDR}:{TURN_PORT}",
             "--rendezvous-listen", f"{PUB_ADDR}:{RENDEZVOUS_PORT}",
             "--user", f"{TURN_USER}:{TURN_PASSWORD}", "--allow-peer", "203.0.113.0/24"],
            stdout=out, stderr=out,
        )  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "TURN listening" in text and "rendezvous listening" in text:
            return relay
        if relay.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"relay did not start: {log.read_text(errors='replace')[-2000:]}")


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "payload.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


def _transfer(
    lab: Lab, tmp_path: Path, payload: Path, *, receiver_turn: bool = True
) -> tuple[Outcome, Outcome, Path]:
    """Relay in pub, ``send`` in alice, ``receive`` in bob, no path flags."""
    _start_relay(lab, tmp_path / "relay.log")
    rendezvous = f"ws://{PUB_ADDR}:{RENDEZVOUS_PORT}"
    env = env_for(rendezvous, f"turn:{PUB_ADDR}:{TURN_PORT}")
    receiver_env = env if receiver_turn else env_for(rendezvous)
    out = tmp_path / "out"
    out.mkdir()
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    sender = lab.run(
        "alice", [DELSHARE, "send", str(payload), "--code", "21-guitar-orbit"], **pipes
    )
    receiver = lab.run("bob", [DELSHARE, "receive", "21-guitar-orbit", "-o", str(out), "-yv"],
                       **{**pipes, "env": receiver_env})  # fmt: skip
    received, sent = (_finish(p) for p in (receiver, sender))
    return sent, received, out


def _finish(process: subprocess.Popen[str]) -> Outcome:
    try:
        stdout, stderr = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return Outcome(process.returncode, stdout, stderr)


def _check_arrived(sent: Outcome, received: Outcome, out: Path, payload: Path) -> None:
    assert received.returncode == 0, received.stdout + received.stderr
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sha256_file(out / payload.name) == sha256_file(payload)
    digest = blake3(payload.read_bytes()).hexdigest()
    assert received.line("verified: ") == f"verified: blake3 {digest} {payload.name}"


def test_behind_two_nats_the_link_goes_through_the_turn_tcp_relay(
    nat_lab: Lab, tmp_path: Path, payload: Path
) -> None:
    direct = nat_lab.python(
        "alice",
        "import socket\n"
        "try:\n socket.create_connection(('10.0.2.2', 9), timeout=1); print('reached')\n"
        "except OSError as exc: print('blocked', exc)",
    )
    assert direct.stdout.startswith("blocked")  # no route into Bob's LAN
    sent, received, out = _transfer(nat_lab, tmp_path, payload)
    _check_arrived(sent, received, out, payload)
    for outcome in (sent, received):
        assert outcome.line("connected: ") == f"connected: relay {PUB_ADDR}:{TURN_PORT}"


def test_on_one_lan_the_link_is_direct(lan_lab: Lab, tmp_path: Path, payload: Path) -> None:
    sent, received, out = _transfer(lan_lab, tmp_path, payload)
    _check_arrived(sent, received, out, payload)
    assert sent.line("connected: ").startswith("connected: direct 10.0.1.3:")
    assert received.line("connected: ").startswith("connected: direct 10.0.1.2:")


def test_behind_symmetric_nats_the_relay_still_works(
    symmetric_nat_lab: Lab, tmp_path: Path, payload: Path
) -> None:
    sent, received, out = _transfer(symmetric_nat_lab, tmp_path, payload)
    _check_arrived(sent, received, out, payload)
    assert received.line("connected: ") == f"connected: relay {PUB_ADDR}:{TURN_PORT}"


def test_only_the_sender_has_turn_credentials(nat_lab: Lab, tmp_path: Path, payload: Path) -> None:
    """Bob has no TURN server configured: he learns his public address from Alice's server."""
    sent, received, out = _transfer(nat_lab, tmp_path, payload, receiver_turn=False)
    _check_arrived(sent, received, out, payload)
    assert received.line("connected: ") == f"connected: relay {PUB_ADDR}:{TURN_PORT}"


def test_lan_mode_needs_no_server(lan_lab: Lab, tmp_path: Path, payload: Path) -> None:
    """No rendezvous configured: the sender serves one and announces the nameplate."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELSHARE_")}
    out = tmp_path / "out"
    out.mkdir()
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    sender = lan_lab.run("alice", [DELSHARE, "send", str(payload), "--code", "23-guitar-orbit"],
                         **pipes)  # fmt: skip
    receiver = lan_lab.run("bob", [DELSHARE, "receive", "23-guitar-orbit", "-o", str(out), "-yv"],
                           **pipes)  # fmt: skip
    received, sent = (_finish(p) for p in (receiver, sender))
    _check_arrived(sent, received, out, payload)
    assert "announcing code 23 on the local network" in sent.stderr
    assert "found the sender on the local network: ws://10.0.1.2:" in received.stderr
    assert received.line("connected: ").startswith("connected: direct 10.0.1.2:")


def _ticket_transfer(
    lab: Lab, tmp_path: Path, payload: Path, listen_flags: list[str]
) -> tuple[Outcome, Outcome, Path]:
    """``receive --listen`` in bob prints a ticket; ``send --to TICKET`` in alice uses it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELSHARE_")}
    out = tmp_path / "out"
    out.mkdir()
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    receiver = lab.run("bob", [DELSHARE, "receive", "--listen", "-o", str(out), "-yv",
                               *listen_flags], **pipes)  # fmt: skip
    assert receiver.stdout is not None
    first = receiver.stdout.readline()
    assert first.startswith("ticket: del1"), first + (
        receiver.stderr.read() if receiver.stderr else ""
    )
    ticket = first.split()[1]
    sender = lab.run("alice", [DELSHARE, "send", str(payload)], **{**pipes, "env": {
        **env, "DELSHARE_TICKET": ticket}})  # fmt: skip
    received, sent = (_finish(p) for p in (receiver, sender))
    received = Outcome(received.returncode, first + received.stdout, received.stderr)
    return sent, received, out


def test_manual_ticket_flow_direct_on_a_lan(lan_lab: Lab, tmp_path: Path, payload: Path) -> None:
    sent, received, out = _ticket_transfer(lan_lab, tmp_path, payload, [])
    _check_arrived(sent, received, out, payload)
    assert sent.line("connected: ").startswith("connected: direct 10.0.1.3:")


def test_manual_ticket_flow_through_the_relay_with_permit(
    nat_lab: Lab, tmp_path: Path, payload: Path
) -> None:
    _start_relay(nat_lab, tmp_path / "relay.log")
    turn = ["--turn", f"turn:{PUB_ADDR}:{TURN_PORT}", "--turn-user", TURN_USER,
            "--turn-password", TURN_PASSWORD]  # fmt: skip
    permit = ["--permit", nat_lab.public_addr("alice")]
    sent, received, out = _ticket_transfer(nat_lab, tmp_path, payload, [*turn, *permit])
    _check_arrived(sent, received, out, payload)
    assert received.line("connected: ") == f"connected: relay {PUB_ADDR}:{TURN_PORT}"
    assert sent.line("connected: ") == f"connected: relay {PUB_ADDR}:{TURN_PORT}"
