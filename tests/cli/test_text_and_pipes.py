"""``send --text``, ``send -`` and ``receive -o -`` (issue 14 item 3), as real processes.

The text arrives as sent (each line printed, anything that could steer a terminal escaped); a
pipe into ``send -`` comes out of ``receive CODE -o -`` byte for byte, with every message on
stderr (``DELSHARE_TEST_PIPE_MIB`` sets the size: 32 MiB by default, 1024 for the long run).
"""

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

PIPE_SIZE = int(os.environ.get("DELSHARE_TEST_PIPE_MIB", "32")) << 20


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    process = start_relay_process(tmp_path_factory.mktemp("relay"), shared=True)
    yield process
    stop(process.process)


@pytest.fixture
def env(relay: RelayProcess) -> dict[str, str]:
    return env_for(relay.rendezvous)


def test_send_text_is_printed_by_the_receiver(env: dict[str, str]) -> None:
    text = "hello\nsecond line \x1b]0;pwned\x07 caf\u00e9"
    sender = start(["send", "--text", text, "--code", "61-guitar-orbit"], env)
    received = finish(start(["receive", "61-guitar-orbit"], env))
    sent = finish(sender, 30)
    assert (received.returncode, sent.returncode) == (0, 0), received.stderr + sent.stderr
    lines = received.stdout.splitlines()
    assert lines[0] == "hello"
    assert lines[1] == "second line \\x1b]0;pwned\\x07 caf\u00e9"
    assert "\x1b" not in received.stdout
    assert sent.line("done: ") == f"done: text, {len(text)} characters"


def test_send_text_with_paths_is_a_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    done = finish(start(["send", "--text", "hi", str(tmp_path)], env), 30)
    assert done.returncode == 2 and "--text" in done.stderr


def test_a_pipe_goes_through_byte_for_byte(env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    with source.open("wb") as f:
        for _ in range(PIPE_SIZE >> 20):
            f.write(os.urandom(1 << 20))
    target = tmp_path / "target.bin"
    cat = subprocess.Popen(["cat", str(source)], stdout=subprocess.PIPE)
    sender = subprocess.Popen(
        [DELSHARE, "send", "-", "--code", "62-guitar-orbit", "--verbose"], env=env,
        stdin=cat.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert cat.stdout is not None
    cat.stdout.close()
    with target.open("wb") as out:
        receiver = subprocess.Popen(
            [DELSHARE, "receive", "62-guitar-orbit", "-o", "-", "--yes", "--verbose"], env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _, receiver_err = receiver.communicate(timeout=120)
    sent = finish(sender, 60)
    cat.wait(10)
    assert receiver.returncode == 0, receiver_err
    assert sent.returncode == 0, sent.stderr
    assert sha256_file(target) == sha256_file(source)
    assert "connected: " in receiver_err and "verified: blake3 " in receiver_err
    assert "resumed" in sent.stderr or "cannot be resumed" in sent.stderr
    assert "verified: blake3 " in sent.stdout and "sent 1 file, " in sent.stdout


def test_receive_to_stdout_refuses_an_offer_of_several_files(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")
    sender = start(["send", str(folder), "--code", "63-guitar-orbit"], env)
    received = finish(start(["receive", "63-guitar-orbit", "-o", "-", "--yes"], env))
    finish(sender, 30)
    assert received.returncode == 3
    assert received.stdout == ""
    assert "-o - takes a single file" in received.stderr
