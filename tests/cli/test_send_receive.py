"""``delshare send`` / ``delshare receive`` as subprocesses on loopback (issue 4 acceptance).

A 200 MiB file and a folder tree go ``--direct-only`` and ``--relay-only`` through ``delshare
relay`` (TURN + rendezvous) and through coturn (TURN; our relay with ``--no-turn`` serves the
rendezvous). Each run checks the exit codes, the ``connected:`` line on both sides, the
``verified:`` hash and the bytes on disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from blake3 import blake3

from tests.app.harness import (
    TURN_PASSWORD,
    TURN_USER,
    RelayProcess,
    env_for,
    run_pair,
    sha256_file,
    start_relay_process,
    stop,
    tree_digest,
)
from tests.support.coturn import Turnserver, coturn_missing, start_turnserver

BIG = 200 << 20


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("send-receive")


@pytest.fixture(scope="module")
def relay(workdir: Path) -> Iterator[RelayProcess]:
    process = start_relay_process(workdir, shared=True)
    yield process
    stop(process.process)


@pytest.fixture(scope="module")
def coturn() -> Iterator[Turnserver]:
    if coturn_missing() is not None:
        pytest.skip(f"coturn: {coturn_missing()}")
    server = start_turnserver(users=((TURN_USER, TURN_PASSWORD),))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rendezvous_only(workdir: Path) -> Iterator[RelayProcess]:
    process = start_relay_process(workdir, turn=False, shared=True)
    yield process
    stop(process.process)


@pytest.fixture(scope="module")
def big_file(workdir: Path) -> Path:
    path = workdir / "big.bin"
    with path.open("wb") as f:
        for _ in range(BIG >> 20):
            f.write(os.urandom(1 << 20))
    return path


@pytest.fixture(scope="module")
def tree(workdir: Path) -> Path:
    """Nested folders, an empty file, an empty folder, unicode names."""
    root = workdir / "projet-été"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "vide").mkdir()
    (root / "empty.txt").write_bytes(b"")
    (root / "a" / "naïve résumé.txt").write_text("ça marche\n", encoding="utf-8")
    (root / "a" / "b" / "日本語.bin").write_bytes(os.urandom(300_000))
    (root / "a" / "b" / "c" / "emoji-🚀.dat").write_bytes(os.urandom(70_000))
    (root / "top.bin").write_bytes(os.urandom(2 << 20))
    return root


def _servers(name: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Environment for one server setup: ``delshare`` relay, or coturn + our rendezvous."""
    if name == "delshare":
        relay: RelayProcess = request.getfixturevalue("relay")
        return env_for(relay.rendezvous, relay.turn)
    server: Turnserver = request.getfixturevalue("coturn")
    rendezvous: RelayProcess = request.getfixturevalue("rendezvous_only")
    return env_for(rendezvous.rendezvous, server.uri("tcp"))


def _expected_path(flag: str) -> str:
    return "connected: direct " if flag == "--direct-only" else "connected: relay 127.0.0.1:"


@pytest.mark.parametrize("server", ["delshare", "coturn"])
@pytest.mark.parametrize("flag", ["--direct-only", "--relay-only"])
def test_200_mib_file(
    server: str, flag: str, big_file: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = _servers(server, request)
    sent, received = run_pair([big_file], tmp_path, env, [flag, "--verbose"])
    assert received.returncode == 0, received.stderr
    assert sent.returncode == 0, sent.stderr
    for outcome in (sent, received):
        assert outcome.line("connected: ").startswith(_expected_path(flag))
    assert sha256_file(tmp_path / "big.bin") == sha256_file(big_file)
    expected = blake3(big_file.read_bytes()).hexdigest()
    assert received.line("verified: ") == f"verified: blake3 {expected} big.bin"
    assert sent.line("verified: ") == f"verified: blake3 {expected} big.bin"
    assert not [p for p in tmp_path.iterdir() if p.name != "big.bin"]  # no .part left


@pytest.mark.parametrize("server", ["delshare", "coturn"])
@pytest.mark.parametrize("flag", ["--direct-only", "--relay-only"])
def test_folder_tree(
    server: str, flag: str, tree: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = _servers(server, request)
    sent, received = run_pair([tree], tmp_path, env, [flag, "--verbose"])
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    assert received.line("connected: ").startswith(_expected_path(flag))
    assert tree_digest(tmp_path / tree.name) == tree_digest(tree)
    assert (tmp_path / tree.name / "vide").is_dir()
    assert (tmp_path / tree.name / "empty.txt").stat().st_size == 0
    verified = [line for line in received.stdout.splitlines() if line.startswith("verified: ")]
    assert len(verified) == 5  # one per file, the empty one included


def test_relay_only_with_a_rest_shared_secret(workdir: Path, tree: Path, tmp_path: Path) -> None:
    """``DELSHARE_TURN_SECRET`` (TURN REST credentials) instead of a user and password."""
    relay = start_relay_process(workdir, extra=["--auth-secret", "rest-secret-of-the-test"])
    try:
        env = env_for(relay.rendezvous, relay.turn)
        for name in ("DELSHARE_TURN_USER", "DELSHARE_TURN_PASSWORD"):
            del env[name]
        env["DELSHARE_TURN_SECRET"] = "rest-secret-of-the-test"
        sent, received = run_pair([tree], tmp_path, env, ["--relay-only"], code="22-guitar-orbit")
    finally:
        stop(relay.process)
    assert (sent.returncode, received.returncode) == (0, 0), sent.stderr + received.stderr
    assert received.line("connected: ") == f"connected: relay 127.0.0.1:{relay.turn_port}"
    assert tree_digest(tmp_path / tree.name) == tree_digest(tree)
