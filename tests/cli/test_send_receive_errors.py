"""``delshare send`` / ``receive``: exit codes, one-line errors, JSON events, hostile offers.

Exit codes (documented in ``delshare.cli.common``): 0 done, 1 failed, 2 usage, 3 refused,
4 interrupted. No failure may print a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from delshare.app.connect import ConnectOptions, connect_peer
from delshare.pairing import pair
from delshare.transfer.manifest import Entry, Manifest
from delshare.transfer.protocol import Offer, Reject, recv_message, send_message
from tests.app.harness import (
    DELSHARE,
    Outcome,
    RelayProcess,
    env_for,
    finish,
    run_pair,
    start,
)
from tests.support.ports import free_port
from tests.support.terminal import read_until


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text("hello\n")
    return path


def _one_clean_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["send", "{small}", "--direct-only", "--relay-only"], "exclude each other"),
        (["send", "{missing}"], "cannot read"),
        (["send", "{small}", "--code", "0-nope"], "bad code"),
        (["receive", "5-guitar-orbit", "--output", "{missing}"], "does not exist"),
        (["receive"], "missing CODE"),
        (["send", "{small}", "--turn", "http://x"], "not a TURN URI"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], needle: str, env: dict[str, str], small: Path, tmp_path: Path
) -> None:
    filled = [a.format(small=small, missing=tmp_path / "missing") for a in argv]
    outcome = finish(start(filled, env), timeout=30)
    assert outcome.returncode == 2
    assert needle in _one_clean_line(outcome.stderr)


def test_wrong_code_fails_both_sides_with_one_line(
    env: dict[str, str], small: Path, tmp_path: Path
) -> None:
    sender = start(["send", str(small), "--code", "9-guitar-orbit"], env)
    receiver = start(["receive", "9-guitar-pilot", "-o", str(tmp_path), "--yes"], env)
    received, sent = finish(receiver, 60), finish(sender, 60)
    assert (sent.returncode, received.returncode) == (1, 1)
    _one_clean_line(sent.stderr)
    _one_clean_line(received.stderr)
    assert list(tmp_path.iterdir()) == [small]


def test_declined_offer_exits_3_on_both_sides(
    env: dict[str, str], small: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    sender = start(["send", str(small), "--code", "11-guitar-orbit"], env)
    receiver = start(["receive", "11-guitar-orbit", "-o", str(out)], env, stdin=subprocess.PIPE)
    received, sent = finish(receiver, 60, input_text="n\n"), finish(sender, 60)
    assert received.returncode == 3, received.stderr
    assert sent.returncode == 3, sent.stderr
    assert "refused by peer" in _one_clean_line(sent.stderr)
    assert list(out.iterdir()) == []


def test_interrupted_sender_exits_4(env: dict[str, str], small: Path) -> None:
    sender = start(["send", str(small), "--code", "12-guitar-orbit"], env)
    assert sender.stdout is not None
    assert sender.stdout.readline().startswith("code: 12-guitar-orbit")
    time.sleep(0.3)  # let it reach the rendezvous; the interrupt works either way
    sender.send_signal(signal.SIGINT)
    outcome = finish(sender, 30)
    assert outcome.returncode == 4
    assert _one_clean_line(outcome.stderr) == "error: interrupted"


def test_code_from_environment_and_json_events(
    env: dict[str, str], small: Path, tmp_path: Path
) -> None:
    env = {**env, "DELSHARE_CODE": "13-guitar-orbit"}
    out = tmp_path / "out"
    out.mkdir()
    sender = start(["send", str(small), "--json"], env)
    receiver = start(["receive", "-o", str(out), "--yes", "--json"], env)
    received, sent = finish(receiver, 60), finish(sender, 60)
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    assert "13-guitar-orbit" not in repr(receiver.args)
    events = [json.loads(line) for line in received.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "connected" and kinds[-1] == "done"
    assert {"offer", "started", "verified"} <= set(kinds)
    verified = next(e for e in events if e["event"] == "verified")
    assert verified["name"] == "small.txt" and verified["size"] == 6
    sent_events = [json.loads(line) for line in sent.stdout.splitlines()]
    assert sent_events[0] == {"event": "code", "code": "13-guitar-orbit", "valid_for": 600.0}
    offering = sent_events[1]
    assert offering == {"event": "offering", "files": 1, "total": 6, "names": ["small.txt"]}
    assert (out / "small.txt").read_text() == "hello\n"


def test_existing_file_is_kept_unless_overwrite_or_rename(
    env: dict[str, str], small: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "small.txt").write_text("mine\n")
    sent, received = run_pair([small], out, env, code="14-guitar-orbit")  # stdin: not a tty
    assert received.returncode == 1
    line = _one_clean_line(received.stderr)
    assert line == "error: small.txt already exists (use --overwrite or --rename)"
    assert sent.returncode == 3
    assert (out / "small.txt").read_text() == "mine\n"
    _, received = run_pair(
        [small], out, env, code="15-guitar-orbit", receive_flags=("--yes", "--rename")
    )
    assert received.returncode == 0, received.stderr
    assert (out / "small.txt").read_text() == "mine\n"
    assert sorted(p.name for p in out.iterdir()) != ["small.txt"]
    _, received = run_pair(
        [small], out, env, code="16-guitar-orbit", receive_flags=("--yes", "--overwrite")
    )
    assert received.returncode == 0, received.stderr
    assert (out / "small.txt").read_text() == "hello\n"


def _receive_on_terminal(
    code: str, out: Path, env: dict[str, str], answer: str
) -> tuple[Outcome, str]:
    """``delshare receive`` with stdin and stderr on a pty; answer its overwrite question."""
    master, slave = pty.openpty()
    try:
        receiver = subprocess.Popen(
            [DELSHARE, "receive", code, "-o", str(out), "--yes"],
            env=env,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
        )
        os.close(slave)
        slave = -1
        try:
            seen = read_until(master, b"? [y/N]: ", 60)
            os.write(master, answer.encode() + b"\n")
            outcome = finish(receiver, 60)
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.wait(5)
        while select.select([master], [], [], 0.5)[0]:  # the rest of stderr
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return outcome, seen.decode(errors="replace").replace("\r\n", "\n")


@pytest.mark.parametrize("answer", ["y", "n"])
def test_existing_file_on_a_terminal_asks_before_overwriting(
    env: dict[str, str], small: Path, tmp_path: Path, answer: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "small.txt").write_text("mine\n")
    code = f"{25 + (answer == 'n')}-guitar-orbit"
    sender = start(["send", str(small), "--code", code], env)
    try:
        received, terminal = _receive_on_terminal(code, out, env, answer)
    finally:
        sent = finish(sender, 30)
    question = f"Receive small.txt (6 B) into {out}, replacing the existing small.txt? [y/N]: "
    assert question in terminal  # one question, with the offer and the destination
    assert terminal.count("[y/N]") == 1
    assert "Traceback" not in terminal
    if answer == "y":
        assert (received.returncode, sent.returncode) == (0, 0), terminal + sent.stderr
        assert (out / "small.txt").read_text() == "hello\n"
        assert received.line(f"saved 1 file, 6 B to {out / 'small.txt'} in ")
        assert "receiving small.txt" not in received.stdout  # the question said it already
    else:  # answering no declines the offer: exit 3 (README), the file is kept
        assert (received.returncode, sent.returncode) == (3, 3), terminal + sent.stderr
        assert terminal.rstrip().endswith(
            "error: offer declined: small.txt already exists, kept (--overwrite or --rename "
            "next time)"
        )
        assert (out / "small.txt").read_text() == "mine\n"
    assert sorted(p.name for p in out.iterdir()) == ["small.txt"]


async def _hostile_sender(rendezvous: str, code: str, entries: tuple[Entry, ...]) -> object:
    """Pair and connect like ``delshare send``, then offer a hand-made manifest."""
    async with await pair(rendezvous, code, "sender", timeout=30) as paired:
        connection = await connect_peer(paired, "sender", ConnectOptions(mode="direct"))
    try:
        await send_message(connection.link.channel, Offer(Manifest(entries)))
        return await recv_message(connection.link.channel)
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "entries",
    [
        (Entry("../x", "file", 5),),
        (Entry("/tmp/delshare-abs-x", "file", 5),),
        (Entry("link", "dir"), Entry("link/x", "file", 5)),
    ],
    ids=["dotdot", "absolute", "symlink-escape"],
)
async def test_hostile_manifest_is_refused_with_nothing_written(
    relay: RelayProcess, tmp_path: Path, entries: tuple[Entry, ...]
) -> None:
    outside = tmp_path / "outside"
    out = tmp_path / "out"
    outside.mkdir()
    out.mkdir()
    (out / "link").symlink_to(outside)
    code = "17-guitar-orbit"
    env = env_for(relay.rendezvous)
    receiver = await asyncio.create_subprocess_exec(
        DELSHARE, "receive", code, "-o", str(out), "--yes", "--direct-only",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        reply = await asyncio.wait_for(_hostile_sender(relay.rendezvous, code, entries), 60)
        _, err = await asyncio.wait_for(receiver.communicate(), 60)
    finally:
        if receiver.returncode is None:
            receiver.kill()
            await receiver.wait()
    assert isinstance(reply, Reject)
    assert receiver.returncode == 1
    _one_clean_line(err.decode())
    _assert_nothing_written(tmp_path, out, outside)


def _assert_nothing_written(tmp_path: Path, out: Path, outside: Path) -> None:
    assert list(outside.iterdir()) == []
    assert [p.name for p in out.iterdir()] == ["link"]
    assert not (tmp_path / "x").exists()
    assert not Path("/tmp/delshare-abs-x").exists()


def test_unusable_turn_server_falls_back_to_direct_unless_relay_only(
    relay: RelayProcess, small: Path, tmp_path: Path
) -> None:
    dead = free_port("tcp")
    env = env_for(relay.rendezvous, f"turn:127.0.0.1:{dead}?transport=tcp")
    (tmp_path / "out").mkdir()
    sent, received = run_pair([small], tmp_path / "out", env, code="18-guitar-orbit",
                              receive_flags=("--yes",))  # fmt: skip
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    assert received.line("connected: ").startswith("connected: direct ")
    assert "note: TURN server 127.0.0.1:" in received.stderr
    sender = start(["send", str(small), "--code", "19-guitar-orbit", "--relay-only"], env)
    receiver = start(["receive", "19-guitar-orbit", "-o", str(tmp_path), "--relay-only"], env)
    received, sent = finish(receiver, 60), finish(sender, 60)
    assert (sent.returncode, received.returncode) == (1, 1)
    assert "TURN server 127.0.0.1:" in _one_clean_line(received.stderr)


def test_interrupt_at_the_confirmation_prompt_exits_4(
    env: dict[str, str], small: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    sender = start(["send", str(small), "--code", "24-guitar-orbit"], env)
    receiver = start(["receive", "24-guitar-orbit", "-o", str(out)], env, stdin=subprocess.PIPE)
    assert receiver.stdout is not None
    assert receiver.stdout.readline().startswith("connected: ")
    time.sleep(0.5)  # the offer arrives and the prompt blocks on stdin; the signal works anyway
    receiver.send_signal(signal.SIGINT)
    receiver.wait(15)  # stdin stays open: only the interrupt can end it
    received = finish(receiver, 5)
    finish(sender, 30)
    assert received.returncode == 4
    assert received.stderr.rstrip().endswith("error: interrupted")
    assert "Traceback" not in received.stderr
    assert list(out.iterdir()) == []


def test_a_broken_relay_only_setup_fails_before_any_receiver(
    relay: RelayProcess, small: Path
) -> None:
    """Gathering runs alongside pairing: a dead TURN server is reported without a peer."""
    env = env_for(relay.rendezvous, f"turn:127.0.0.1:{free_port('tcp')}?transport=tcp")
    outcome = finish(start(["send", str(small), "--relay-only"], env), 30)
    assert outcome.returncode == 1
    assert "TURN server 127.0.0.1:" in _one_clean_line(outcome.stderr)
