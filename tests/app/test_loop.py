"""`delshare send`/`receive` run on uvloop when installed; `DELSHARE_LOOP=asyncio` opts out."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from delshare.cli.send import _event_loop_factory
from tests.app.harness import env_for, finish, start

uvloop = pytest.importorskip("uvloop")


def test_uvloop_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DELSHARE_LOOP", raising=False)
    assert _event_loop_factory() is uvloop.new_event_loop


@pytest.mark.parametrize("value", ["asyncio", "ASYNCIO "])
def test_delshare_loop_asyncio_opts_out(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DELSHARE_LOOP", value)
    assert _event_loop_factory() is None


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts and never answers: a sender waits there for its rendezvous."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.mark.parametrize(("loop", "loaded"), [(None, True), ("asyncio", False)])
def test_running_sender_loads_uvloop_unless_opted_out(
    silent_server: int, tmp_path: Path, loop: str | None, loaded: bool
) -> None:
    source = tmp_path / "f.txt"
    source.write_text("x")
    env = env_for(f"ws://127.0.0.1:{silent_server}", **({"DELSHARE_LOOP": loop} if loop else {}))
    sender = start(["send", str(source), "--code", "3-guitar-orbit"], env)
    try:
        assert sender.stdout is not None
        assert sender.stdout.readline().startswith("code: ")  # running its event loop
        maps = Path(f"/proc/{sender.pid}/maps").read_text()
    finally:
        sender.kill()
        finish(sender, 10)
    assert ("/uvloop/loop." in maps) is loaded
