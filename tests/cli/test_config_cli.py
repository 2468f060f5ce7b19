"""``delshare config`` and the configuration file in use (issue 14 item 2), as real processes.

A file set once makes ``delshare send FILE`` / ``delshare receive CODE`` work with no flag and no
``DELSHARE_*`` setting but ``DELSHARE_CONFIG``; a flag beats a variable, which beats the file
(told apart by which server the error names); ``config show`` never prints a secret; TURN
servers from the file are tried in order.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.app.harness import (
    DELSHARE,
    TURN_PASSWORD,
    TURN_USER,
    RelayProcess,
    finish,
    sha256_file,
)
from tests.support.ports import free_port


def _env(config: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELSHARE_")}
    return {**env, "DELSHARE_CONFIG": str(config), **more}


def _run(
    argv: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DELSHARE, *argv], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def _set(config: Path, *pairs: tuple[str, str]) -> None:
    for key, value in pairs:
        done = _run(["config", "set", key, "-"], _env(config), stdin=value + "\n")
        assert done.returncode == 0, done.stderr


def test_config_set_show_path_and_secrets_stay_hidden(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "config.toml"
    _set(config, ("rendezvous", "ws://relay.example:4000"), ("turn.uri", "turn:r.example:3478"),
         ("turn.user", "alice"), ("turn.password", "hunter2-secret"))  # fmt: skip
    assert _run(["config", "path"], _env(config)).stdout.strip() == str(config)
    shown = _run(["config", "show"], _env(config)).stdout
    assert 'rendezvous = "ws://relay.example:4000"' in shown
    assert 'user = "alice"' in shown and 'password = "********"' in shown
    assert "hunter2" not in shown
    assert "hunter2-secret" in config.read_text()
    assert (config.stat().st_mode & 0o077) == 0
    done = _run(["config", "set", "turn.port", "1"], _env(config))
    assert done.returncode != 0 and "unknown key" in done.stderr


def test_a_config_file_set_once_makes_send_and_receive_work_without_flags(
    tmp_path: Path, relay: RelayProcess
) -> None:
    config = tmp_path / "config.toml"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    _set(config, ("rendezvous", relay.rendezvous), ("turn.uri", relay.turn),
         ("turn.user", TURN_USER), ("turn.password", TURN_PASSWORD),
         ("output", str(downloads)))  # fmt: skip
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(3 << 20))
    env = _env(config)
    sender = subprocess.Popen(
        [DELSHARE, "send", str(payload)], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sender.stdout is not None
        first = sender.stdout.readline()
        assert first.startswith("code: "), first
        code = first.split()[1]
        received = _run(["receive", code], env, stdin="y\n")
    finally:
        sent = finish(sender, 30)
    assert received.returncode == 0, received.stdout + received.stderr
    assert sent.returncode == 0, sent.stderr
    assert sha256_file(downloads / payload.name) == sha256_file(payload)


def _dead_rendezvous() -> str:
    return f"ws://127.0.0.1:{free_port('tcp')}"


def test_a_flag_beats_a_variable_which_beats_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    in_file, in_variable, in_flag = (_dead_rendezvous() for _ in range(3))
    _set(config, ("rendezvous", in_file))
    payload = tmp_path / "small.txt"
    payload.write_text("hello\n")
    cases = [
        ({}, [], in_file),
        ({"DELSHARE_RENDEZVOUS": in_variable}, [], in_variable),
        ({"DELSHARE_RENDEZVOUS": in_variable}, ["--rendezvous", in_flag], in_flag),
    ]
    for variables, flags, expected in cases:
        done = _run(["send", str(payload), *flags], _env(config, **variables))
        assert done.returncode == 1
        assert f"cannot reach rendezvous server {expected}" in done.stderr, done.stderr


def test_turn_servers_from_the_file_are_tried_in_order(tmp_path: Path, relay: RelayProcess) -> None:
    config = tmp_path / "config.toml"
    dead = f"turn:127.0.0.1:{free_port('tcp')}?transport=tcp"
    _set(config, ("rendezvous", relay.rendezvous), ("turn.uri", dead),
         ("turn.user", TURN_USER), ("turn.password", TURN_PASSWORD),
         ("turn.1.uri", relay.turn), ("turn.1.user", TURN_USER),
         ("turn.1.password", TURN_PASSWORD))  # fmt: skip
    payload = tmp_path / "small.txt"
    payload.write_text("hello\n")
    out = tmp_path / "out"
    out.mkdir()
    env = _env(config, DELSHARE_CODE="12-guitar-orbit")
    sender = subprocess.Popen(
        [DELSHARE, "send", str(payload), "--relay-only"], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        received = _run(["receive", "-o", str(out), "--yes", "--relay-only"], env)
    finally:
        sent = finish(sender, 30)
    assert received.returncode == 0 and sent.returncode == 0, received.stderr + sent.stderr
    assert "unusable, trying the next one" in sent.stderr
    assert f"connected: relay 127.0.0.1:{relay.turn_port}" in sent.stdout
    assert (out / "small.txt").read_text() == "hello\n"
