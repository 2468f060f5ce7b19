"""The manual flow on loopback: ``receive --listen`` prints a ticket, ``send --to`` uses it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.harness import (
    Outcome,
    RelayProcess,
    env_for,
    finish,
    sha256_file,
    start,
    start_relay_process,
    stop,
)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    process = start_relay_process(tmp_path_factory.mktemp("relay"), rendezvous=False)
    yield process
    stop(process.process)


def _ticket_run(
    env: dict[str, str], source: Path, out: Path, listen: list[str], send: list[str]
) -> tuple[Outcome, Outcome]:
    receiver = start(["receive", "--listen", "-o", str(out), "--yes", *listen], env)
    assert receiver.stdout is not None
    first = receiver.stdout.readline()
    if not first.startswith("ticket: "):
        raise AssertionError(first + finish(receiver, 10).stderr)
    sender = start(["send", str(source), "--to", first.split()[1], *send], env)
    received, sent = finish(receiver, 60), finish(sender, 60)
    return sent, Outcome(received.returncode, first + received.stdout, received.stderr)


@pytest.mark.parametrize("flag", ["--direct-only", "--relay-only"])
def test_ticket_flow(relay: RelayProcess, tmp_path: Path, flag: str) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(5 << 20))
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in env_for("").items() if k != "DELSHARE_RENDEZVOUS"}
    listen = [flag]
    if flag == "--relay-only":
        listen += ["--turn", relay.turn, "--turn-user", "alice", "--turn-password",
                   "s3cret-pass", "--permit", "127.0.0.1"]  # fmt: skip
    sent, received = _ticket_run(env, source, out, listen, [flag])
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    expected = "connected: direct " if flag == "--direct-only" else "connected: relay 127.0.0.1:"
    assert sent.line("connected: ").startswith(expected)
    assert received.line("connected: ").startswith(expected)
    assert sha256_file(out / "data.bin") == sha256_file(source)


def test_a_damaged_ticket_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in env_for("").items() if k != "DELSHARE_RENDEZVOUS"}
    (tmp_path / "f").write_text("x")
    outcome = finish(start(["send", str(tmp_path / "f"), "--to", "del1garbage"], env), 30)
    assert outcome.returncode == 2
    assert outcome.stderr.startswith("error: ticket is damaged")
