"""Fixtures the CLI tests share: one real relay process (TURN and rendezvous) per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.app.harness import RelayProcess, env_for, start_relay_process, stop


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A ``delshare relay`` subprocess serving TURN and the rendezvous, shared by a module."""
    process = start_relay_process(tmp_path_factory.mktemp("relay"), shared=True)
    yield process
    stop(process.process)


@pytest.fixture
def env(relay: RelayProcess) -> dict[str, str]:
    """The environment that points ``delshare send``/``receive`` at ``relay``."""
    return env_for(relay.rendezvous, relay.turn)
