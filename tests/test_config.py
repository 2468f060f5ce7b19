"""The client configuration file (issue 14 item 2): keys, masking, editing, errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from delshare.config import (
    MASK,
    ClientConfig,
    ConfigError,
    TurnEntry,
    load_config,
    render,
    save_config,
    with_value,
)

HAND_WRITTEN = """
rendezvous = "ws://relay.example:4000"
ca = "/etc/ssl/my-ca.pem"          # optional
output = "~/Downloads"             # optional
[[turn]]                           # tried in order
uri = "turn:relay.example:3478?transport=tcp"
user = "alice"
password = "pa\\"ss"
[[turn]]
uri = "turns:backup.example:5349"
secret = "shared"
"""


def test_the_issue_s_example_file_reads_as_written(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    config = load_config(path)
    assert config == ClientConfig(
        "ws://relay.example:4000",
        "/etc/ssl/my-ca.pem",
        "~/Downloads",
        (
            TurnEntry("turn:relay.example:3478?transport=tcp", "alice", 'pa"ss'),
            TurnEntry("turns:backup.example:5349", secret="shared"),
        ),
    )


def test_render_masks_secrets_and_saving_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HAND_WRITTEN, encoding="utf-8")
    config = load_config(path)
    shown = render(config)
    assert "pa" not in shown.replace("password", "") and "shared" not in shown
    assert shown.count(MASK) == 2
    copy = tmp_path / "sub" / "copy.toml"
    save_config(config, copy)
    assert load_config(copy) == config
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600


def test_a_missing_file_is_an_empty_configuration(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.toml") == ClientConfig()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rendezvous = 4", "'rendezvous' must be a string"),
        ("colour = 'red'", "unknown key 'colour'"),
        ("[[turn]]\nuser = 'x'", "needs a 'uri'"),
        ("[[turn]]\nuri = 'turn:x'\nport = 1", "unknown key 'port' in [[turn]]"),
        ("turn = 'turn:x'", "list of tables"),
        ("rendezvous = ", "cannot read"),
    ],
)
def test_a_broken_file_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=None) as caught:
        load_config(path)
    assert needle in str(caught.value)


def test_with_value_edits_top_keys_and_turn_servers() -> None:
    config = with_value(ClientConfig(), "rendezvous", "ws://a:1")
    config = with_value(config, "turn.uri", "turn:a:3478")
    config = with_value(config, "turn.password", "p")
    config = with_value(config, "turn.1.uri", "turn:b:3478")
    config = with_value(config, "turn.1.user", "bob")
    assert config.rendezvous == "ws://a:1"
    assert config.turn == (TurnEntry("turn:a:3478", password="p"), TurnEntry("turn:b:3478", "bob"))
    config = with_value(config, "turn.0.uri", None)
    assert config.turn == (TurnEntry("turn:b:3478", "bob"),)
    for key in ("colour", "turn.x.uri", "turn.0.port", "turn.5.uri"):
        with pytest.raises(ConfigError):
            with_value(config, key, "v")
    with pytest.raises(ConfigError, match="uri first"):
        with_value(config, "turn.1.user", "v")
