"""coturn's relay-ip / external-ip meanings on a relay host with two addresses (issue 12 item 2).

The ``pub`` namespace of the NAT lab gets a second address, 198.51.100.1 (next to 203.0.113.1).
Clients reach the relay on 198.51.100.1; ``--relay-ip 203.0.113.1`` must bind every relayed
socket there and advertise it. (Before, the relay bound the address the client reached and
advertised ``--relay-ip``: every connection to the advertised address was refused.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.app.harness import DELSHARE, TURN_PASSWORD, TURN_USER, env_for, sha256_file
from tests.lab.netns import PUB_ADDR, Lab
from tests.lab.test_app_nat import _finish
from tests.support.relay_process import RelayProcess

pytestmark = pytest.mark.netns

SECOND_ADDR = "198.51.100.1"  # RFC 5737 TEST-NET-2
TURN_PORT, RENDEZVOUS_PORT = 3478, 4000
SIZE = 4 << 20


def _start_relay(lab: Lab, log: Path, *args: str) -> RelayProcess:
    with log.open("wb") as out:
        process = lab.run(
            "pub",
            [DELSHARE, "relay", "--listen", f"{SECOND_ADDR}:{TURN_PORT}",
             "--rendezvous-listen", f"{SECOND_ADDR}:{RENDEZVOUS_PORT}",
             "--user", f"{TURN_USER}:{TURN_PASSWORD}", "--allow-peer", "203.0.113.0/24", *args],
            stdout=out, stderr=out,
        )  # fmt: skip
    relay = RelayProcess(process, log)
    relay.wait_for("rendezvous listening")
    return relay


@pytest.mark.parametrize(
    ("flags", "advertised"),
    [
        (("--relay-ip", PUB_ADDR), PUB_ADDR),
        (("--relay-ip", PUB_ADDR, "--external-ip", f"{PUB_ADDR}/{PUB_ADDR}"), PUB_ADDR),
    ],
    ids=["relay-ip", "relay-ip+external-ip"],
)
def test_relay_binds_and_advertises_the_configured_address(
    nat_lab: Lab, tmp_path: Path, flags: tuple[str, ...], advertised: str
) -> None:
    nat_lab.address("pub", "br0", f"{SECOND_ADDR}/24")
    relay = _start_relay(nat_lab, tmp_path / "relay.log", *flags)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(SIZE))
    out = tmp_path / "out"
    out.mkdir()
    env = env_for(f"ws://{SECOND_ADDR}:{RENDEZVOUS_PORT}", f"turn:{SECOND_ADDR}:{TURN_PORT}")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    code = "31-guitar-orbit"
    sender = nat_lab.run("alice", [DELSHARE, "send", str(payload), "--code", code], **pipes)
    receiver = nat_lab.run("bob", [DELSHARE, "receive", code, "-o", str(out), "--yes"], **pipes)
    received, sent = _finish(receiver), _finish(sender)
    log = relay.text()
    assert received.returncode == 0, received.stdout + received.stderr + log[-3000:]
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sha256_file(out / payload.name) == sha256_file(payload)
    assert sent.line("connected: ") == f"connected: relay {SECOND_ADDR}:{TURN_PORT}"
    created = [line for line in log.splitlines() if " created: TCP relay " in line]
    assert created and all(f"relay {advertised}:" in line for line in created), log
    assert f"relay {SECOND_ADDR}:" not in log
