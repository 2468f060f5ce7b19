"""Re-running an interrupted transfer continues from the verified ``.part`` prefix (issue 5).

Each test interrupts a 200 MiB transfer at about half way (polling the receiver's ``.part``),
re-runs both commands and checks that the file arrives whole, that the receiver says
``resuming at N of M``, and that the second run moved only the rest: the sender's own count of
file bytes written to the link (its ``done`` event's ``moved``; that this counts real link bytes
is checked against a counting proxy in ``tests/transfer/test_resume.py``) is under 55 % of the
file, and equals what the receiver did not have.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from delshare.transfer.protocol import DEFAULT_CHUNK
from delshare.transfer.resume import temp_paths
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

SIZE = 200 << 20
NAME = "big.bin"
HALF_WAIT = 60.0  # seconds to reach half way
EXIT_WAIT = 30.0  # seconds for the survivors of a kill to give up
RESUMING = re.compile(r"^resuming big\.bin at [0-9.]+ MiB of 200 MiB$", re.MULTILINE)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("source") / NAME
    with path.open("wb") as f:
        for _ in range(SIZE >> 20):
            f.write(os.urandom(1 << 20))
    return path


@pytest.fixture(scope="module")
def source_sha(source: Path) -> str:
    return sha256_file(source)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@dataclass
class Pair:
    sender: subprocess.Popen[str]
    receiver: subprocess.Popen[str]

    def kill_all(self) -> None:
        for process in (self.sender, self.receiver):
            if process.poll() is None:
                process.kill()
                process.wait(5)


def _start_pair(
    source: Path, out: Path, env: dict[str, str], code: str, flags: Sequence[str]
) -> Pair:
    flags = [*flags, "--reconnect-timeout", "0"]  # the run fails, and a re-run resumes
    sender = start(["send", str(source), "--code", code, "--json", *flags], env)
    receiver = start(["receive", code, "-o", str(out), "--yes", *flags], env)
    return Pair(sender, receiver)


def _wait_half_way(pair: Pair, part: Path) -> int:
    """Poll the ``.part`` until it holds half the file; return its size then."""
    deadline = time.monotonic() + HALF_WAIT
    while time.monotonic() < deadline:
        size = part.stat().st_size if part.exists() else 0
        if size >= SIZE // 2:
            return size
        for process in (pair.sender, pair.receiver):
            if process.poll() is not None:
                pair.kill_all()
                raise AssertionError(f"{process.args!r} ended early: {finish(process, 5)}")
        time.sleep(0.005)
    pair.kill_all()
    raise AssertionError(f"{part} did not reach half the file in {HALF_WAIT} s")


def _interrupt(
    source: Path,
    out: Path,
    env: dict[str, str],
    code: str,
    flags: Sequence[str],
    kill: Callable[[Pair], None],
) -> tuple[Outcome, Outcome]:
    """Start a transfer, call ``kill`` half way; return both commands' outcomes."""
    pair = _start_pair(source, out, env, code, flags)
    try:
        _wait_half_way(pair, temp_paths(out / NAME)[0])
        kill(pair)
        sent, received = finish(pair.sender, EXIT_WAIT), finish(pair.receiver, EXIT_WAIT)
    finally:
        pair.kill_all()
    for outcome in (sent, received):  # a survivor fails with one line, never a traceback
        assert outcome.returncode in (1, 4, -signal.SIGKILL), outcome
        assert "Traceback" not in outcome.stderr
    return sent, received


@dataclass
class Rerun:
    sent: Outcome
    received: Outcome
    resumed_at: int
    moved: int  # the sender's count of file bytes it wrote to the link on this run


def _rerun(source: Path, out: Path, env: dict[str, str], code: str, flags: Sequence[str]) -> Rerun:
    """Run the pair again to the end (sender ``--json``, receiver plain text)."""
    pair = _start_pair(source, out, env, code, flags)
    try:
        received = finish(pair.receiver)
        sent = finish(pair.sender, 90.0 if received.returncode == 0 else 20.0)
    finally:
        pair.kill_all()
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    assert RESUMING.search(received.stdout), received.stdout  # for people, in MiB
    events = [json.loads(line) for line in sent.stdout.splitlines()]
    done = [e for e in events if e["event"] == "done"]
    assert len(done) == 1 and done[0]["total"] == SIZE
    resuming = [e for e in events if e["event"] == "resuming"]  # the sender says it too
    assert len(resuming) == 1 and resuming[0]["size"] == SIZE
    return Rerun(sent, received, int(resuming[0]["offset"]), int(done[0]["moved"]))


def _check_resumed(run: Rerun, kept: int, out: Path, source_sha: str) -> None:
    """Resumed at a chunk boundary or the end of the kept prefix, sent only the rest, file whole."""
    assert 0 < run.resumed_at <= kept
    assert run.resumed_at % DEFAULT_CHUNK == 0 or run.resumed_at == kept
    assert run.moved == SIZE - run.resumed_at
    assert run.moved < 0.55 * SIZE
    assert sha256_file(out / NAME) == source_sha
    assert not (temp_paths(out / NAME)[0]).exists()
    assert not (temp_paths(out / NAME)[1]).exists()
    saved = run.received.line("saved 1 file, 200 MiB to ")
    assert ", the rest already there" in saved


def _signal(
    pick: Callable[[Pair], subprocess.Popen[Any]], signum: int = signal.SIGKILL
) -> Callable[[Pair], None]:
    def kill(pair: Pair) -> None:
        pick(pair).send_signal(signum)

    return kill


def _kept(out: Path) -> int:
    kept = (temp_paths(out / NAME)[0]).stat().st_size
    assert SIZE // 2 <= kept < SIZE
    return kept


def test_rerun_after_killed_sender_resumes(
    relay: RelayProcess, source: Path, source_sha: str, out: Path
) -> None:
    env = env_for(relay.rendezvous, relay.turn)
    flags = ["--relay-only"]
    sent, received = _interrupt(
        source, out, env, "40-guitar-orbit", flags, _signal(lambda p: p.sender)
    )
    assert sent.returncode == -signal.SIGKILL
    assert received.returncode == 1, received.stderr
    kept = _kept(out)
    run = _rerun(source, out, env, "41-guitar-orbit", flags)
    _check_resumed(run, kept, out, source_sha)


@pytest.mark.parametrize("path", ["--direct-only", "--relay-only"])
def test_rerun_after_killed_receiver_resumes(
    relay: RelayProcess, source: Path, source_sha: str, out: Path, path: str
) -> None:
    env = env_for(relay.rendezvous, relay.turn)
    kill = _signal(lambda p: p.receiver)
    sent, received = _interrupt(source, out, env, "42-guitar-orbit", [path], kill)
    assert received.returncode == -signal.SIGKILL
    assert sent.returncode == 1, sent.stdout + sent.stderr
    kept = _kept(out)
    run = _rerun(source, out, env, "43-guitar-orbit", [path])
    _check_resumed(run, kept, out, source_sha)


def test_rerun_after_interrupted_receiver_resumes(
    relay: RelayProcess, source: Path, source_sha: str, out: Path
) -> None:
    """Ctrl-C keeps the .part (everything authenticated so far is written out) for the re-run."""
    env = env_for(relay.rendezvous, relay.turn)
    interrupt = _signal(lambda p: p.receiver, signal.SIGINT)
    sent, received = _interrupt(source, out, env, "48-guitar-orbit", ["--direct-only"], interrupt)
    assert received.returncode == 4, received.stderr
    assert received.stderr.rstrip().endswith(  # issue 11: how to resume (codes are single-use)
        "error: interrupted; to resume, ask the sender for a new code (codes are single-use) "
        "and run receive again: what arrived is kept"
    )
    assert sent.returncode == 1, sent.stdout + sent.stderr
    error = json.loads(sent.stdout.splitlines()[-1])
    assert error["event"] == "error"
    assert "to resume, run `delshare send` again and pass its new code" in error["message"]
    kept = _kept(out)
    run = _rerun(source, out, env, "49-guitar-orbit", ["--direct-only"])
    _check_resumed(run, kept, out, source_sha)


def test_rerun_after_relay_restart_resumes(
    tmp_path: Path, source: Path, source_sha: str, out: Path
) -> None:
    relay = start_relay_process(tmp_path)
    ports = (relay.turn_port, relay.rendezvous_port)
    env = env_for(relay.rendezvous, relay.turn)
    flags = ["--relay-only"]
    try:
        kill = _signal(lambda _pair: relay.process)
        sent, received = _interrupt(source, out, env, "44-guitar-orbit", flags, kill)
        relay.process.wait(5)
        assert (sent.returncode, received.returncode) == (1, 1), sent.stderr + received.stderr
        kept = _kept(out)
        relay = start_relay_process(tmp_path, ports=ports)
        run = _rerun(source, out, env, "45-guitar-orbit", flags)
        _check_resumed(run, kept, out, source_sha)
    finally:
        stop(relay.process)


def test_flipped_byte_in_part_prefix_is_resent(
    relay: RelayProcess, source: Path, source_sha: str, out: Path
) -> None:
    env = env_for(relay.rendezvous, relay.turn)
    flags = ["--direct-only"]
    kill = _signal(lambda p: p.sender)
    _interrupt(source, out, env, "46-guitar-orbit", flags, kill)
    kept = _kept(out)
    bad = 3 * DEFAULT_CHUNK + 12345  # inside the 4th chunk of the prefix
    part = temp_paths(out / NAME)[0]
    stat = part.stat()
    with part.open("r+b") as f:
        f.seek(bad)
        byte = f.read(1)
        f.seek(bad)
        f.write(bytes([byte[0] ^ 0x01]))
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    run = _rerun(source, out, env, "47-guitar-orbit", flags)
    assert run.resumed_at == 3 * DEFAULT_CHUNK < kept
    assert run.moved == SIZE - run.resumed_at
    assert sha256_file(out / NAME) == source_sha
