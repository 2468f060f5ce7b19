"""`delshare send`, `receive` and `relay` run on uvloop when installed; `DELSHARE_LOOP=asyncio`
opts out."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from delshare.cli.loop import event_loop_factory
from tests.app.harness import (
    DELSHARE,
    env_for,
    finish,
    start,
    start_relay_process,
    stop,
    wait_listening,
)
from tests.support.ports import free_port

uvloop = pytest.importorskip("uvloop")


def test_uvloop_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DELSHARE_LOOP", raising=False)
    assert event_loop_factory() is uvloop.new_event_loop


@pytest.mark.parametrize("value", ["asyncio", "ASYNCIO "])
def test_delshare_loop_asyncio_opts_out(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DELSHARE_LOOP", value)
    assert event_loop_factory() is None


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


@pytest.mark.parametrize(("loop", "loaded"), [(None, True), ("asyncio", False)])
def test_running_relay_loads_uvloop_unless_opted_out(
    tmp_path: Path, loop: str | None, loaded: bool
) -> None:
    """The relay runs on the same loop as send and receive (one runner, ``delshare.cli.loop``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELSHARE_")}
    if loop:
        env["DELSHARE_LOOP"] = loop
    port = free_port("tcp")
    argv = [DELSHARE, "relay", "--no-turn", "--rendezvous-listen", f"127.0.0.1:{port}"]
    log = tmp_path / "relay.log"
    with log.open("wb") as out:
        relay = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        wait_listening(relay, [port], log=log)  # running its event loop
        maps = Path(f"/proc/{relay.pid}/maps").read_text()
    finally:
        stop(relay)
    assert ("/uvloop/loop." in maps) is loaded
