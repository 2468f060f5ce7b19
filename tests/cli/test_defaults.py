"""Each default lives in one place: the flags show the configuration records' defaults.

A flag's default is read from the dataclass that uses it (``SessionOptions``, ``RelaySettings``,
``ServerConfig``, ``RelayConfig``), so the help text and the behaviour without the flag agree.
"""

from __future__ import annotations

from dataclasses import fields

import click
import pytest

from delshare.aio.server import RelayConfig
from delshare.app.common import SessionOptions
from delshare.cli.receive import receive
from delshare.cli.relay import relay, relay_config, rendezvous_limits
from delshare.cli.relay_config import DEFAULTS, RelaySettings
from delshare.cli.send import send
from delshare.pairing.mailbox import MailboxLimits
from delshare.turn.auth import DEFAULT_NONCE_LIFETIME
from delshare.turn.server_config import ServerConfig

CORE_FLAGS = {  # the record whose default a flag shows (RelaySettings keeps None: not given)
    "max_pending_per_allocation": ServerConfig,
    "max_pending_per_user": ServerConfig,
    "tls_handshake_timeout": RelayConfig,
    "max_tls_handshakes": RelayConfig,
    "max_tls_handshakes_per_ip": RelayConfig,
    "max_bps": RelayConfig,
    "bps_capacity": RelayConfig,
}


def option(command: click.Command, name: str) -> click.Parameter:
    return next(p for p in command.params if p.name == name)


@pytest.mark.parametrize("command", [send, receive])
def test_reconnect_timeout_default_is_the_session_default(command: click.Command) -> None:
    assert option(command, "reconnect_timeout").default == SessionOptions.reconnect_timeout


def test_relay_flags_show_the_settings_defaults() -> None:
    names = {f.name for f in fields(RelaySettings)}
    checked = 0
    for param in relay.params:
        if (
            param.name in names
            and param.name not in CORE_FLAGS
            and isinstance(param.default, int | float | str)
        ):
            assert param.default == getattr(DEFAULTS, param.name), param.name
            checked += 1
    assert checked > 20


@pytest.mark.parametrize(("name", "record"), sorted(CORE_FLAGS.items()))
def test_relay_flags_show_the_core_defaults(name: str, record: type) -> None:
    assert option(relay, name).default == getattr(record, name)


def test_a_relay_without_flags_runs_with_the_core_defaults() -> None:
    config = relay_config(DEFAULTS)
    assert config.server == ServerConfig(auth=config.server.auth)
    assert config.server.auth.nonce_lifetime == DEFAULT_NONCE_LIFETIME
    plain = RelayConfig(server=config.server, optional_listen=config.optional_listen)
    assert config == plain
    assert rendezvous_limits(DEFAULTS) == MailboxLimits()
