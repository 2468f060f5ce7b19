"""``delshare demo``: a real relay-only transfer through the embedded TURN server."""

from __future__ import annotations

import os
import re

from tests.app.harness import finish, start


def test_demo_relays_through_embedded_turn_and_verifies() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELSHARE_")}
    outcome = finish(start(["demo", "--size", "8"], env), timeout=60)
    assert outcome.returncode == 0, outcome.stderr
    lines = outcome.stdout.splitlines()
    connected = [line for line in lines if "connected: " in line]
    assert len(connected) == 2
    assert all(re.search(r"connected: relay 127\.0\.0\.1:\d+$", line) for line in connected)
    hashes = {m.group(1) for line in lines if (m := re.search(r"blake3 ([0-9a-f]{64})", line))}
    assert len(hashes) == 1  # sender, receiver and the final check agree
    assert lines[-1].startswith("demo: verified: blake3 ")
