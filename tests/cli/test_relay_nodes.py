"""Two ``delshare relay`` nodes share rendezvous state through Redis; peers pair across them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.harness import (
    DELSHARE,
    RelayProcess,
    env_for,
    finish,
    sha256_file,
    start,
    start_relay_process,
    stop,
)
from tests.support.ports import free_port
from tests.support.redis_server import redis_missing, redis_running


@pytest.fixture
def redis_url() -> Iterator[str]:
    if redis_missing():
        pytest.skip(str(redis_missing()))
    with redis_running() as url:
        yield url


def test_sender_and_receiver_on_different_nodes(tmp_path: Path, redis_url: str) -> None:
    nodes: list[RelayProcess] = [
        start_relay_process(tmp_path, turn=False, extra=("--rendezvous-redis", redis_url))
        for _ in range(2)
    ]
    try:
        source = tmp_path / "note.bin"
        source.write_bytes(os.urandom(3 << 20))
        out = tmp_path / "out"
        out.mkdir()
        code = "8-guitar-orbit"
        sender = start(
            ["send", str(source), "--code", code, "--direct-only"], env_for(nodes[0].rendezvous)
        )
        receiver = start(
            ["receive", code, "-o", str(out), "--yes", "--direct-only"],
            env_for(nodes[1].rendezvous),
        )
        received = finish(receiver)
        sent = finish(sender)
        assert sent.returncode == 0, sent.stderr
        assert received.returncode == 0, received.stderr
        assert sha256_file(out / "note.bin") == sha256_file(source)
    finally:
        for node in nodes:
            stop(node.process)


def test_unreachable_redis_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port('tcp')}/0"
    port = free_port("tcp")
    done = subprocess.run(
        [DELSHARE, "relay", "--no-turn", "--rendezvous-listen", f"127.0.0.1:{port}",
         "--rendezvous-redis", url],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("delshare relay: ") and "Redis" in lines[-1]
    assert "Traceback" not in done.stderr
