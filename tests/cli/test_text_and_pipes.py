"""``send --text``, ``send -`` and ``receive -o -`` (issue 14 item 3), as real processes.

The text arrives as sent (each line printed, anything that could steer a terminal escaped); a
pipe into ``send -`` comes out of ``receive CODE -o -`` byte for byte, with every message on
stderr (``DELSHARE_TEST_PIPE_MIB`` sets the size: 32 MiB by default, 1024 for the long run).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess
import threading
from pathlib import Path
from typing import IO

import pytest

from delshare.app.units import human_size
from tests.app.harness import (
    DELSHARE,
    RelayProcess,
    env_for,
    finish,
    sha256_file,
    start,
)

PIPE_SIZE = int(os.environ.get("DELSHARE_TEST_PIPE_MIB", "32")) << 20
STREAM_MIB = int(os.environ.get("DELSHARE_TEST_PIPE_MIB", "8"))


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


def _first_line(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The process's first stdout line, waited for at most ``timeout`` s (killed after it)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()

    def readline() -> str:  # byte by byte: the rest stays in the pipe for communicate()
        line = b""
        while not line.endswith(b"\n") and (byte := os.read(fd, 1)):
            line += byte
        return line.decode()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        line = pool.submit(readline)
        try:
            return line.result(timeout)
        except TimeoutError:
            process.kill()
            raise AssertionError("no line in time: the sender waits for its input") from None


def _feed(stdin: IO[str], mib: int, digest: hashlib._Hash) -> None:
    """Write ``mib`` MiB of random bytes (hashed on the way) to a pipe, then close it."""
    pipe = stdin.buffer  # type: ignore[attr-defined]
    try:
        for _ in range(mib):
            block = os.urandom(1 << 20)
            digest.update(block)
            pipe.write(block)
    finally:
        pipe.close()


def _stream_sender(env: dict[str, str], code: str | None) -> tuple[subprocess.Popen[str], str]:
    """``send -`` with its stdin still open; the code it printed before reading anything."""
    argv = ["send", "-", "--verbose", *(["--code", code] if code else [])]
    sender = start(argv, env, stdin=subprocess.PIPE)
    first = _first_line(sender)
    assert first.startswith("code: "), first
    return sender, first.removeprefix("code: ").split()[0]


def test_stdin_is_streamed_into_a_file(env: dict[str, str], tmp_path: Path) -> None:
    """The code comes before any input (a stream, not a spooled file), then N MiB arrive."""
    sender, code = _stream_sender(env, None)
    receiver = start(["receive", code, "-o", str(tmp_path), "--yes", "--verbose"], env)
    sha = hashlib.sha256()
    assert sender.stdin is not None
    feeder = threading.Thread(target=_feed, args=(sender.stdin, STREAM_MIB, sha))
    feeder.start()
    received = finish(receiver, 300)
    feeder.join(60)
    sender.stdin = None  # closed by the feeder
    sent = finish(sender, 60)
    assert (received.returncode, sent.returncode) == (0, 0), received.stderr + sent.stderr
    assert sha256_file(tmp_path / "stdin") == sha.hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stdin"]  # no .part, no state file
    assert "stdin (size unknown)" in sent.stdout and "cannot be resumed" in sent.stderr
    assert "free space is not checked" in received.stderr + received.stdout
    assert f"sent 1 file, {human_size(STREAM_MIB << 20)} in " in sent.stdout
    assert "verified: blake3 " in received.stdout


def test_stdin_is_streamed_to_stdout(env: dict[str, str], tmp_path: Path) -> None:
    sender, code = _stream_sender(env, "64-guitar-orbit")
    target = tmp_path / "target.bin"
    with target.open("wb") as out:
        receiver = subprocess.Popen(
            [DELSHARE, "receive", code, "-o", "-", "--yes"], env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        sha = hashlib.sha256()
        assert sender.stdin is not None
        feeder = threading.Thread(target=_feed, args=(sender.stdin, STREAM_MIB, sha))
        feeder.start()
        _, receiver_err = receiver.communicate(timeout=300)
    feeder.join(60)
    sender.stdin = None  # closed by the feeder
    sent = finish(sender, 60)
    assert receiver.returncode == 0, receiver_err
    assert sent.returncode == 0, sent.stderr
    assert sha256_file(target) == sha.hexdigest()


def test_a_broken_stream_is_neither_healed_nor_kept(env: dict[str, str], tmp_path: Path) -> None:
    """The sender dies mid-stream: its bytes cannot come again, so the receiver does not try
    to reconnect, fails, and leaves no partial file or state file behind."""
    sender, code = _stream_sender(env, None)
    receiver = start(["receive", code, "-o", str(tmp_path), "--yes"], env)
    assert sender.stdin is not None
    pipe = sender.stdin.buffer  # type: ignore[attr-defined]
    try:
        for _ in range(200):  # until the receiver writes its partial file (bounded)
            pipe.write(os.urandom(1 << 16))
            pipe.flush()
            if any(p.name.endswith(".part") for p in tmp_path.iterdir()):
                break
        else:
            raise AssertionError("the receiver never started writing")
        sender.kill()
        received = finish(receiver, 60)
    finally:
        sender.kill()
        sender.wait(10)
    assert received.returncode != 0
    assert "reconnecting" not in received.stderr, received.stderr
    assert "cannot be resumed" in received.stderr
    assert list(tmp_path.iterdir()) == []
