"""`delshare send`/`receive` run on uvloop when installed; `DELSHARE_LOOP=asyncio` opts out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from delshare.cli.common import _event_loop_factory
from tests.app.harness import env_for, finish, start, start_relay_process, stop

uvloop = pytest.importorskip("uvloop")


def test_uvloop_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DELSHARE_LOOP", raising=False)
    assert _event_loop_factory() is uvloop.new_event_loop


@pytest.mark.parametrize("value", ["asyncio", "ASYNCIO "])
def test_delshare_loop_asyncio_opts_out(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DELSHARE_LOOP", value)
    assert _event_loop_factory() is None


@pytest.fixture(scope="module")
def rendezvous(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A rendezvous where a sender waits for its receiver (it checks it answers first)."""
    relay = start_relay_process(tmp_path_factory.mktemp("loop"), turn=False, shared=True)
    yield relay.rendezvous
    stop(relay.process)


@pytest.mark.parametrize(("loop", "loaded"), [(None, True), ("asyncio", False)])
def test_running_sender_loads_uvloop_unless_opted_out(
    rendezvous: str, tmp_path: Path, loop: str | None, loaded: bool
) -> None:
    source = tmp_path / "f.txt"
    source.write_text("x")
    env = env_for(rendezvous, **({"DELSHARE_LOOP": loop} if loop else {}))
    sender = start(["send", str(source), "--code", "3-guitar-orbit"], env)
    try:
        assert sender.stdout is not None
        assert sender.stdout.readline().startswith("code: ")  # running its event loop
        maps = Path(f"/proc/{sender.pid}/maps").read_text()
    finally:
        sender.kill()
        finish(sender, 10)
    assert ("/uvloop/loop." in maps) is loaded
