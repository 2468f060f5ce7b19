"""Re-running an interrupted transfer continues from the verified ``.part`` prefix."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.harness import (
    RelayProcess,
    env_for,
    finish,
    run_pair,
    sha256_file,
    start,
    start_relay_process,
    stop,
)

SIZE = 200 << 20


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    process = start_relay_process(tmp_path_factory.mktemp("relay"))
    yield process
    stop(process.process)


def _kill_sender_midway(source: Path, out: Path, env: dict[str, str], code: str) -> None:
    """Start a transfer and kill -9 the sender once about half of the file arrived."""
    sender = start(["send", str(source), "--code", code, "--relay-only"], env)
    receiver = start(["receive", code, "-o", str(out), "--yes", "--relay-only"], env)
    part = out / f"{source.name}.part"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sender.poll() is None:
        if part.exists() and part.stat().st_size >= SIZE // 2:
            break
        time.sleep(0.005)
    sender.send_signal(signal.SIGKILL)
    finish(sender, 10)
    assert finish(receiver, 30).returncode == 1


def test_rerun_after_killed_sender_resumes(relay: RelayProcess, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    with source.open("wb") as f:
        for _ in range(SIZE >> 20):
            f.write(os.urandom(1 << 20))
    out = tmp_path / "out"
    out.mkdir()
    env = env_for(relay.rendezvous, relay.turn)
    _kill_sender_midway(source, out, env, "40-guitar-orbit")
    kept = (out / "big.bin.part").stat().st_size
    assert 0 < kept < SIZE
    sent, received = run_pair([source], out, env, ["--relay-only", "--json"], "41-guitar-orbit")
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    events = [json.loads(line) for line in received.stdout.splitlines()]
    resuming = [e for e in events if e["event"] == "resuming"]
    assert len(resuming) == 1 and resuming[0]["size"] == SIZE
    assert 0 < resuming[0]["offset"] <= kept
    done = events[-1]
    assert done["event"] == "done" and done["moved"] == SIZE - resuming[0]["offset"]
    assert done["moved"] < 0.55 * SIZE
    assert sha256_file(out / "big.bin") == sha256_file(source)
