"""The client configuration file: settings people set once instead of on every command.

``~/.config/delshare/config.toml`` (the platform's user configuration folder, from
platformdirs), or the file ``DELSHARE_CONFIG`` names. Its keys, written by hand or with
``delshare config set``::

    rendezvous = "ws://relay.example:4000"
    ca = "/etc/ssl/my-ca.pem"          # optional
    output = "~/Downloads"             # optional
    [[turn]]                           # tried in order
    uri = "turn:relay.example:3478?transport=tcp"
    user = "alice"
    password = "..."                   # or: secret = "..." (REST shared secret)

Flags and ``DELSHARE_*`` variables override the file (flag > variable > file); the file is
read only by ``send``, ``receive`` and ``config``. Secrets (``password``, ``secret``) are never
printed: :func:`render` masks them unless asked not to (writing the file itself).
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from delshare.errors import DelshareError

__all__ = [
    "ClientConfig",
    "ConfigError",
    "TurnEntry",
    "chosen_host_addresses",
    "config_path",
    "load_config",
    "render",
    "save_config",
    "with_value",
]

MASK = "********"
_TOP_KEYS = ("rendezvous", "ca", "output")
_TURN_KEYS = ("uri", "user", "password", "secret")
_SECRET_KEYS = frozenset({"password", "secret"})


class ConfigError(DelshareError):
    """The configuration file cannot be read or a setting is not valid."""


@dataclass(frozen=True)
class TurnEntry:
    """One ``[[turn]]`` table: a TURN server and its credentials."""

    uri: str
    user: str | None = None
    password: str | None = None
    secret: str | None = None


@dataclass(frozen=True)
class ClientConfig:
    """What the file says; every field may be missing."""

    rendezvous: str | None = None
    ca: str | None = None
    output: str | None = None
    turn: tuple[TurnEntry, ...] = field(default_factory=tuple)


def chosen_host_addresses() -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    """``DELSHARE_HOST_ADDRESSES`` (comma-separated IPs): the only host addresses to advertise.

    Read here, at the edge, by the commands; empty when unset (every interface is gathered).
    """
    text = os.environ.get("DELSHARE_HOST_ADDRESSES", "").strip()
    try:
        return tuple(ipaddress.ip_address(a.strip()) for a in text.split(",") if a.strip())
    except ValueError as exc:
        raise ConfigError(f"DELSHARE_HOST_ADDRESSES: {exc}") from exc


def config_path() -> Path:
    """``DELSHARE_CONFIG``, else ``config.toml`` in the user configuration folder."""
    named = os.environ.get("DELSHARE_CONFIG", "").strip()
    if named:
        return Path(named).expanduser()
    import platformdirs  # only when a command reads its configuration

    return Path(platformdirs.user_config_dir("delshare", appauthor=False)) / "config.toml"


def load_config(path: Path | None = None) -> ClientConfig:
    """The file's settings; an empty configuration when it does not exist."""
    path = path or config_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ClientConfig()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return _parse(data, path)


def _parse(data: dict[str, object], path: Path) -> ClientConfig:
    unknown = sorted(set(data) - {*_TOP_KEYS, "turn"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}")
    top = {key: _string(data, key, path) for key in _TOP_KEYS}
    turns = data.get("turn", [])
    if not isinstance(turns, list):
        raise ConfigError(f"{path}: 'turn' must be a list of tables ([[turn]])")
    return ClientConfig(**top, turn=tuple(_turn_entry(t, path) for t in turns))


def _string(table: dict[str, object], key: str, path: Path) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path}: {key!r} must be a string")
    return value


def _turn_entry(table: object, path: Path) -> TurnEntry:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: every [[turn]] must be a table")
    unknown = sorted(set(table) - set(_TURN_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} in [[turn]]")
    uri = _string(table, "uri", path)
    if not uri:
        raise ConfigError(f"{path}: every [[turn]] needs a 'uri'")
    return TurnEntry(uri, *(_string(table, k, path) for k in _TURN_KEYS[1:]))


def render(config: ClientConfig, *, secrets: bool = False) -> str:
    """The configuration as TOML; ``password`` and ``secret`` masked unless ``secrets``."""
    lines = [f"{key} = {_quote(getattr(config, key))}" for key in _TOP_KEYS if getattr(config, key)]
    for entry in config.turn:
        lines += ["", "[[turn]]"]
        for key in _TURN_KEYS:
            value = getattr(entry, key)
            if value is not None:
                shown = value if secrets or key not in _SECRET_KEYS else MASK
                lines.append(f"{key} = {_quote(shown)}")
    return "\n".join(lines) + "\n" if lines else ""


def _quote(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, ``\\uXXXX`` included)."""
    return json.dumps(value, ensure_ascii=False)


def save_config(config: ClientConfig, path: Path | None = None) -> Path:
    """Write the file (readable by its owner only: it may hold secrets); return its path."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(render(config, secrets=True))
    os.replace(temporary, path)
    return path


def with_value(config: ClientConfig, key: str, value: str | None) -> ClientConfig:
    """``config`` with ``key`` set (``None``: removed).

    Keys: ``rendezvous``, ``ca``, ``output``, and ``turn.FIELD`` or ``turn.N.FIELD`` for the
    N-th ``[[turn]]`` (from 0; N = the current count appends one), FIELD one of ``uri``,
    ``user``, ``password``, ``secret``. Unsetting ``turn.N.uri`` removes that server.
    """
    if key == "rendezvous":
        return replace(config, rendezvous=value)
    if key == "ca":
        return replace(config, ca=value)
    if key == "output":
        return replace(config, output=value)
    parts = key.split(".")
    if parts[0] != "turn" or len(parts) not in (2, 3) or parts[-1] not in _TURN_KEYS:
        raise ConfigError(f"unknown key {key!r} (rendezvous, ca, output, turn.N.uri|user|...)")
    index = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0
    if len(parts) == 3 and not parts[1].isdigit():
        raise ConfigError(f"bad TURN server number in {key!r}")
    return replace(config, turn=_set_turn(list(config.turn), index, parts[-1], value))


def _set_turn(
    turns: list[TurnEntry], index: int, name: str, value: str | None
) -> tuple[TurnEntry, ...]:
    if index > len(turns):
        raise ConfigError(f"there are {len(turns)} TURN servers: use a number up to that")
    if index == len(turns):
        if name != "uri" or value is None:
            raise ConfigError("set the new TURN server's uri first")
        turns.append(TurnEntry(value))
    elif name == "uri" and value is None:
        del turns[index]
    else:
        turns[index] = _with_field(turns[index], name, value)
    return tuple(turns)


def _with_field(entry: TurnEntry, name: str, value: str | None) -> TurnEntry:
    if name == "uri":
        assert value is not None  # unsetting the uri removes the server instead
        return replace(entry, uri=value)
    if name == "user":
        return replace(entry, user=value)
    if name == "password":
        return replace(entry, password=value)
    return replace(entry, secret=value)
