"""A configuration file set once makes ``delshare send FILE`` / ``delshare receive CODE`` work
across two NATs with no flag and no ``DELSHARE_*`` setting but ``DELSHARE_CONFIG`` (issue 14)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from delshare.config import ClientConfig, TurnEntry, save_config
from tests.app.harness import DELSHARE, TURN_PASSWORD, TURN_USER, sha256_file
from tests.lab.netns import PUB_ADDR, Lab
from tests.lab.test_app_nat import RENDEZVOUS_PORT, TURN_PORT, _finish, _start_relay

pytestmark = pytest.mark.netns


def test_a_config_file_is_all_send_and_receive_need(nat_lab: Lab, tmp_path: Path) -> None:
    _start_relay(nat_lab, tmp_path / "relay.log")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    config = tmp_path / "config.toml"
    turn = TurnEntry(f"turn:{PUB_ADDR}:{TURN_PORT}", TURN_USER, TURN_PASSWORD)
    save_config(
        ClientConfig(f"ws://{PUB_ADDR}:{RENDEZVOUS_PORT}", None, str(downloads), (turn,)), config
    )
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(4 << 20))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELSHARE_")}
    env["DELSHARE_CONFIG"] = str(config)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    sender = nat_lab.run("alice", [DELSHARE, "send", str(payload)], **pipes)
    assert sender.stdout is not None
    first = sender.stdout.readline()
    assert first.startswith("code: "), first
    receiver = nat_lab.run("bob", [DELSHARE, "receive", first.split()[1], "--yes"], **pipes)
    received, sent = (_finish(p) for p in (receiver, sender))
    assert received.returncode == 0, received.stdout + received.stderr
    assert sent.returncode == 0, sent.stderr
    assert sha256_file(downloads / payload.name) == sha256_file(payload)
    assert received.line("connected: ") == f"connected: relay {PUB_ADDR}:{TURN_PORT}"
