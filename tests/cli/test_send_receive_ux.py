"""What a person sees from ``delshare send`` / ``receive`` (issue 11), as real subprocesses.

Each test names the defect or friction line of issue 11 it covers. Everything checkable is
checked before a code is printed; every error line names the next step when there is one.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from delshare.transfer.resume import temp_paths
from tests.app.harness import (
    DELSHARE,
    TURN_PASSWORD,
    TURN_USER,
    Outcome,
    RelayProcess,
    env_for,
    finish,
    run_pair,
    start,
    stop,
)
from tests.support.ports import free_port


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text("hello\n")
    return path


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def _error_line(outcome: Outcome) -> str:
    assert "Traceback" not in outcome.stderr
    lines = [line for line in outcome.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, outcome.stderr
    return lines[0]


def _events(outcome: Outcome) -> list[dict[str, object]]:
    return [json.loads(line) for line in outcome.stdout.splitlines()]


# -- defects ---------------------------------------------------------------------------------


def test_rename_reports_the_new_name_in_text_and_json(
    env: dict[str, str], small: Path, out: Path
) -> None:
    """Defect 3: saved as ``tiny (1).txt``, reported as ``tiny.txt``."""
    (out / "tiny.txt").write_text("mine\n")
    flags = ("--yes", "--rename", "--verbose")
    _, received = run_pair([small], out, env, code="60-guitar-orbit", receive_flags=flags)
    assert received.returncode == 0, received.stderr
    saved = sorted(p.name for p in out.iterdir() if p.name != "tiny.txt")
    assert len(saved) == 1
    new = saved[0]
    assert (out / new).read_text() == "hello\n"
    assert f"tiny.txt exists: saved as {new}" in received.stderr
    assert received.line("verified: blake3 ").endswith(f" {new}")
    assert received.line("saved 1 file, 6 B to ").startswith(f"saved 1 file, 6 B to {out / new} ")
    (out / new).unlink()
    _, received = run_pair([small], out, env, code="61-guitar-orbit",
                           receive_flags=("--yes", "--rename", "--json"))  # fmt: skip
    assert received.returncode == 0, received.stderr
    events = _events(received)
    verified = next(e for e in events if e["event"] == "verified")
    assert verified["name"] == "tiny.txt" and verified["saved_as"] == new
    done = next(e for e in events if e["event"] == "done")
    assert done["saved_to"] == str(out / new)


def test_done_rate_excludes_the_time_at_the_prompt(
    env: dict[str, str], small: Path, out: Path
) -> None:
    """Defect 4: the clock starts when the offer is accepted, not when it arrives."""
    sender = start(["send", str(small), "--code", "62-guitar-orbit"], env)
    receiver = start(["receive", "62-guitar-orbit", "-o", str(out), "--json"], env,
                     stdin=subprocess.PIPE)  # fmt: skip
    try:
        assert receiver.stdout is not None and receiver.stdin is not None
        for line in receiver.stdout:
            if json.loads(line)["event"] == "offer":
                break
        time.sleep(1.5)  # someone reading the question
        answered = time.monotonic()
        receiver.stdin.write("y\n")
        receiver.stdin.flush()
        received = finish(receiver, 60)
        finished = time.monotonic()
    finally:
        sent = finish(sender, 60)
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    done = next(e for e in _events(received) if e["event"] == "done")
    assert isinstance(done["seconds"], float)
    assert done["seconds"] <= finished - answered


def test_turn_over_udp_is_a_usage_error_naming_the_fix(env: dict[str, str], small: Path) -> None:
    """Defect 5: refused before a code, like turn-check does, saying what works instead."""
    for argv in (["send", str(small)], ["receive", "5-guitar-orbit"]):
        outcome = finish(start([*argv, "--turn", "turn:127.0.0.1:3478?transport=udp"], env), 30)
        assert outcome.returncode == 2
        assert "transport=tcp or turns:" in _error_line(outcome)
        assert "code:" not in outcome.stdout


@pytest.fixture
def not_websocket() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (not a WebSocket server)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"ws://127.0.0.1:{server.getsockname()[1]}"


def test_rendezvous_that_is_not_a_websocket_server_fails_fast_on_both_sides(
    not_websocket: str, small: Path, out: Path
) -> None:
    """Defect 7: the sender printed a code and hung; the receiver gave up after 30 s."""
    env = env_for(not_websocket)
    sender = start(["send", str(small)], env)
    receiver = start(["receive", "63-guitar-orbit", "-o", str(out), "-y"], env)
    sent, received = finish(sender, 25), finish(receiver, 25)
    assert (sent.returncode, received.returncode) == (1, 1)
    assert "code:" not in sent.stdout
    for outcome in (sent, received):
        line = _error_line(outcome)
        assert not_websocket in line and "WebSocket" in line


# -- checked before a code is printed or spent ----------------------------------------------


@pytest.mark.parametrize("url", ["127.0.0.1:4000", "ws://h:abc", "http://127.0.0.1:4000"])
def test_malformed_rendezvous_url_is_a_usage_error(url: str, small: Path, out: Path) -> None:
    env = env_for(url)
    for argv in (["send", str(small)], ["receive", "5-guitar-orbit", "-o", str(out)]):
        outcome = finish(start(argv, env), 30)
        assert outcome.returncode == 2, outcome
        assert "--rendezvous" in _error_line(outcome) and "ws://" in _error_line(outcome)
        assert "code:" not in outcome.stdout


def test_unreachable_rendezvous_is_found_before_the_code(small: Path) -> None:
    url = f"ws://127.0.0.1:{free_port('tcp')}"
    outcome = finish(start(["send", str(small)], env_for(url)), 30)
    assert outcome.returncode == 1
    assert "code:" not in outcome.stdout
    assert f"cannot reach rendezvous server {url}" in _error_line(outcome)


def _unwritable(tmp_path: Path) -> Path:
    """A folder this process may not create files in (root may write anywhere but /proc)."""
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def test_unwritable_output_folder_is_refused_before_pairing(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = _unwritable(tmp_path)
    outcome = finish(start(["receive", "64-guitar-orbit", "-o", str(folder), "-y"], env), 30)
    assert outcome.returncode == 2
    line = _error_line(outcome)
    assert "cannot write to output folder" in line and "-o/--output" in line


def test_lan_mode_without_a_multicast_route_says_so_before_the_code(small: Path) -> None:
    """The test namespace has only ``lo`` and no route for the announcements' group."""
    env = {k: v for k, v in env_for("").items() if k != "DELSHARE_RENDEZVOUS"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("239.255.67.76", 47689))
        except OSError:
            pass
        else:
            pytest.skip("this host has a multicast route")
    outcome = finish(start(["send", str(small)], env), 30)
    assert outcome.returncode == 1
    assert "code:" not in outcome.stdout
    line = _error_line(outcome)
    assert "no multicast route" in line and "--rendezvous" in line


def test_control_characters_in_folder_names_are_all_listed_before_the_code(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "fine.txt").write_text("ok")
    (folder / "bad\x01name").write_text("x")
    (folder / "sub" / "esc\x1bname").write_text("x")
    outcome = finish(start(["send", str(folder)], env), 30)
    assert outcome.returncode == 2
    assert "code:" not in outcome.stdout
    line = _error_line(outcome)
    assert "'photos/bad\\x01name'" in line and "'photos/sub/esc\\x1bname'" in line
    assert "cannot send 2 names" in line and "\x1b" not in line


def test_symlinks_left_out_of_a_folder_are_noted_on_both_sides(
    env: dict[str, str], tmp_path: Path, out: Path
) -> None:
    """Friction: symlinks skipped with a note only the sender saw; the receiver is told too
    (the first 20 by name, escaped; the rest counted), in text and in the ``offer`` event."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.txt").write_text("kept\n")
    (folder / "esc\x1b[2Jlink").symlink_to("/etc/passwd")
    for n in range(21):
        (folder / f"link{n:02d}").symlink_to("a.txt")
    sent, received = run_pair([folder], out, env, code="74-guitar-orbit")
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    assert "note: skipping photos/esc\\x1b[2Jlink (not a regular file or folder)" in sent.stderr
    notes = [line for line in received.stderr.splitlines() if line.startswith("note: ")]
    assert "note: the sender left out photos/esc\\x1b[2Jlink (not a regular file or folder)" in (
        notes
    )
    assert "note: the sender left out photos/link18 (not a regular file or folder)" in notes
    assert "note: the sender left out 2 more (not a regular file or folder)" in notes
    assert "\x1b" not in received.stderr
    assert sorted(p.name for p in (out / "photos").iterdir()) == ["a.txt"]
    shutil.rmtree(out / "photos")
    _, received = run_pair([folder], out, env, code="75-guitar-orbit",
                           receive_flags=("--yes", "--json"))  # fmt: skip
    assert received.returncode == 0, received.stderr
    offer = next(e for e in _events(received) if e["event"] == "offer")
    assert offer["skipped_count"] == 22
    assert offer["skipped"] == ["photos/esc\\x1b[2Jlink"] + [
        f"photos/link{n:02d}" for n in range(19)
    ]
    notices = [e["text"] for e in _events(received) if e["event"] == "notice"]
    assert "the sender left out 2 more (not a regular file or folder)" in notices


# -- messages that say what to do next -----------------------------------------------------


def test_wrong_code_tells_each_side_what_to_do(env: dict[str, str], small: Path, out: Path) -> None:
    sender = start(["send", str(small), "--code", "65-guitar-orbit"], env)
    receiver = start(["receive", "65-guitar-pilot", "-o", str(out), "--yes"], env)
    received, sent = finish(receiver, 60), finish(sender, 60)
    assert (sent.returncode, received.returncode) == (1, 1)
    assert _error_line(received) == (
        "error: wrong code: it does not match the sender's; ask the sender for a new code "
        "(codes are single-use)"
    )
    assert _error_line(sent).startswith(
        "error: wrong code: the receiver typed a different code; run `delshare send` again"
    )


def test_declining_without_a_terminal_exits_3_and_names_yes(
    env: dict[str, str], small: Path, out: Path
) -> None:
    _, received = run_pair([small], out, env, code="66-guitar-orbit", receive_flags=())
    assert received.returncode == 3
    assert "pass -y (--yes) to accept without asking" in _error_line(received)
    assert list(out.iterdir()) == []


def test_sender_names_what_is_offered_and_how_long_the_code_works(
    env: dict[str, str], small: Path, out: Path
) -> None:
    sent, received = run_pair([small], out, env, code="67-guitar-orbit")
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    lines = sent.stdout.splitlines()
    assert lines[:4] == [
        "code: 67-guitar-orbit",
        "On the other device run:  delshare receive 67-guitar-orbit",
        "(the code works once, valid for 10 minutes)",
        "offering tiny.txt (6 B)",
    ]
    assert sent.line("sent 1 file, 6 B in ")
    assert received.line(f"receiving tiny.txt (6 B) into {out}")
    assert received.line(f"saved 1 file, 6 B to {out / 'tiny.txt'} in ")
    assert "verified:" not in sent.stdout + received.stdout  # hashes: --verbose and --json


def test_wrong_turn_password_names_the_likely_cause(relay: RelayProcess, small: Path) -> None:
    env = env_for(relay.rendezvous, relay.turn, password="wrong")
    outcome = finish(start(["send", str(small), "--relay-only"], env), 30)
    assert outcome.returncode == 1
    line = _error_line(outcome)
    assert "401" in line and "(wrong username, password or secret?)" in line


def test_turns_against_a_plain_port_names_tls(relay: RelayProcess, small: Path) -> None:
    env = env_for(relay.rendezvous, f"turns:127.0.0.1:{relay.turn_port}")
    outcome = finish(start(["send", str(small), "--relay-only"], env), 30)
    assert outcome.returncode == 1
    assert "TLS handshake failed: not a TLS server?" in _error_line(outcome)


def test_a_relay_refusing_loopback_peers_names_allow_peer(
    tmp_path: Path, small: Path, out: Path
) -> None:
    """A default ``delshare relay`` used from one machine: ``403 Forbidden peer address``."""
    turn_port, rendezvous_port = free_port("both"), free_port("tcp")
    log = tmp_path / "relay.log"
    argv = [DELSHARE, "relay", "--user", f"{TURN_USER}:{TURN_PASSWORD}",
            "--listen", f"127.0.0.1:{turn_port}",
            "--rendezvous-listen", f"127.0.0.1:{rendezvous_port}"]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 15
        while "rendezvous listening" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        env = env_for(f"ws://127.0.0.1:{rendezvous_port}",
                      f"turn:127.0.0.1:{turn_port}?transport=tcp")  # fmt: skip
        sent, received = run_pair([small], out, env, ["--relay-only"], code="68-guitar-orbit")
    finally:
        stop(process)
    assert (sent.returncode, received.returncode) == (1, 1)
    for outcome in (sent, received):
        assert "--allow-peer CIDR" in _error_line(outcome)
    started = log.read_text()
    assert (
        f"clients: delshare send|receive --rendezvous ws://127.0.0.1:{rendezvous_port} "
        f"--turn 'turn:127.0.0.1:{turn_port}?transport=tcp'"
    ) in started
    assert "add --allow-peer CIDR" in started


def test_ticket_through_a_relay_without_permit_names_permit(
    relay: RelayProcess, small: Path, out: Path
) -> None:
    env = env_for(relay.rendezvous, relay.turn)
    receiver = start(["receive", "--listen", "--relay-only", "-o", str(out), "-y"], env)
    try:
        assert receiver.stdout is not None
        ticket = receiver.stdout.readline().removeprefix("ticket: ").strip()
        assert ticket, finish(receiver, 5)
        sender_env = env_for(relay.rendezvous)
        sent = finish(start(["send", str(small), "--to", ticket], sender_env), 30)
    finally:
        receiver.kill()
        received = finish(receiver, 10)
    assert sent.returncode == 1
    assert "--permit" in _error_line(sent)
    assert "no --permit" in received.stderr


async def test_an_expired_code_says_so_and_what_to_do(small: Path) -> None:
    """A rendezvous that forgets mailboxes after 1 s: the waiting sender is told its code
    expired and to run send again (the default lifetime, 10 minutes, is announced)."""
    import asyncio

    from delshare.pairing import MailboxLimits, serve_rendezvous

    server = await serve_rendezvous(
        "127.0.0.1", 0, limits=MailboxLimits(max_age=1.0), sweep_interval=0.2
    )
    try:
        env = env_for(f"ws://127.0.0.1:{server.port}")
        sender = await asyncio.create_subprocess_exec(
            DELSHARE, "send", str(small), "--code", "69-guitar-orbit", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(sender.communicate(), 30)
        finally:
            if sender.returncode is None:
                sender.kill()
                await sender.wait()
    finally:
        server.close()
        await server.wait_closed()
    assert sender.returncode == 1
    assert "valid for 10 minutes" in out.decode()
    outcome = Outcome(1, out.decode(), err.decode())
    assert _error_line(outcome).startswith(
        "error: the code expired before a receiver used it; run `delshare send` again for a "
        "new code"
    )


def test_receiver_in_lan_mode_without_multicast_names_rendezvous(out: Path) -> None:
    """One side on LAN mode, no way to find a sender there: say which flag to pass."""
    env = {k: v for k, v in env_for("").items() if k != "DELSHARE_RENDEZVOUS"}
    outcome = finish(start(["receive", "70-guitar-orbit", "-o", str(out), "-y"], env), 45)
    assert outcome.returncode == 1
    assert "--rendezvous URL" in _error_line(outcome)


def test_not_enough_space_is_said_in_binary_units_with_the_next_step(
    env: dict[str, str], tmp_path: Path, out: Path
) -> None:
    """A sparse 1 TiB file is offered (nothing is read): more than the disk has free."""
    huge = tmp_path / "huge.img"
    with huge.open("wb") as f:
        f.truncate(1 << 40)
    if shutil.disk_usage(out).free >= 1 << 40:
        pytest.skip("this disk has 1 TiB free")
    sent, received = run_pair([huge], out, env, code="71-guitar-orbit")
    assert (sent.returncode, received.returncode) == (3, 1)
    line = _error_line(received)
    assert line.startswith(f"error: not enough space in {out}: the offer needs 1.0 TiB, ")
    assert "iB free; free some space or receive into another folder with -o/--output" in line
    assert _error_line(sent).startswith(
        "error: refused by peer: the receiver has not enough space (the offer needs 1.0 TiB, "
    )
    assert list(out.iterdir()) == []


def _drain(fd: int, process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """Everything the child writes to its terminal until it exits (bounded)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    return seen


def test_bars_stop_where_an_interrupted_transfer_stopped(
    env: dict[str, str], tmp_path: Path, out: Path
) -> None:
    """Defect 2: a receiver on a terminal whose sender dies half way must not show 100%."""
    size = 200 << 20
    source = tmp_path / "big.bin"
    with source.open("wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    part = temp_paths(out / "big.bin")[0]
    sender = start(["send", str(source), "--code", "72-guitar-orbit", "--direct-only"], env)
    master, slave = pty.openpty()
    try:
        receiver = subprocess.Popen(
            [DELSHARE, "receive", "72-guitar-orbit", "-o", str(out), "-y", "--direct-only",
             "--reconnect-timeout", "0"],  # a dead sender: fail now, not after reconnecting
            env={**env, "COLUMNS": "120"}, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
        )  # fmt: skip
        os.close(slave)
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= size // 2):
            assert time.monotonic() < deadline and receiver.poll() is None
            assert sender.poll() is None, finish(sender, 5)
            time.sleep(0.005)
        sender.kill()
        terminal = _drain(master, receiver, 60).decode(errors="replace")
        receiver.wait(10)
    finally:
        os.close(master)
        if sender.poll() is None:
            sender.kill()
        finish(sender, 10)
    assert receiver.returncode == 1, terminal
    assert "/200 MiB" in terminal or "/200.0 MiB" in terminal, terminal  # the bars were there
    assert "200.0/200.0 MiB" not in terminal and "200/200 MiB" not in terminal
    assert "to resume, ask the sender for a new code" in terminal
