"""The rendezvous JSON schema, one WebSocket text frame per message.

Client to server, once: ``{"type": "allocate"}`` (a sender asking the server for a fresh code
number, answered by ``{"type": "allocated", "nameplate": "123"}``) or ``{"type": "open",
"nameplate": "7", "side": "receiver"}`` (take that side's seat of a chosen number; ``side`` is
``sender`` or ``receiver``, and older clients that omit it get the first seat never used); then
any number of ``{"type": "add", "body": "<str>"}``. Server to client: ``{"type": "message",
"body": "<str>"}`` (a body the other side added), ``{"type": "error", "reason": "..."}`` (request
refused, e.g. a limit: the server then closes) and ``{"type": "close", "reason": "..."}`` (peer
left, mailbox expired, or the rendezvous lost its state). Bodies are opaque to the server; paired
clients put base64 there. docs/operations.md lists the limits and their refusals.

TURN servers for clients without secrets (issue 12 item 9): ``open`` and ``allocate`` may carry
``"turn": true``; a server that can hand out TURN REST credentials then answers first with
``{"type": "turn", "servers": [{"urls": "turn:HOST:PORT?transport=tcp", "username":
"<expiry>:<id>", "credential": "<base64 HMAC-SHA1>"}, ...]}`` (WebRTC's RTCIceServer fields;
an empty list when it has none). Older servers ignore the field and send no such message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from delshare.errors import PairingError

MAX_FRAME = 64 * 1024  # bytes per WebSocket frame, enforced by both ends
_NAMEPLATE = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class OpenMessage:
    nameplate: str
    side: str | None = None
    turn: bool = False


@dataclass(frozen=True)
class AllocateMessage:
    turn: bool = False


@dataclass(frozen=True)
class TurnServer:
    """One TURN server and the short-lived credentials for it."""

    urls: str
    username: str
    credential: str


@dataclass(frozen=True)
class TurnMessage:
    servers: tuple[TurnServer, ...]


@dataclass(frozen=True)
class AllocatedMessage:
    nameplate: str


@dataclass(frozen=True)
class AddMessage:
    body: str


@dataclass(frozen=True)
class RelayMessage:
    body: str


@dataclass(frozen=True)
class ErrorMessage:
    reason: str


@dataclass(frozen=True)
class CloseMessage:
    reason: str


ClientMessage = OpenMessage | AllocateMessage | AddMessage
ServerMessage = RelayMessage | AllocatedMessage | TurnMessage | ErrorMessage | CloseMessage
MAX_TURN_SERVERS = 8
SIDES = ("sender", "receiver")


def encode(message: ClientMessage | ServerMessage) -> str:
    """One JSON text frame for ``message``."""
    match message:
        case OpenMessage(nameplate, side, turn):
            fields: dict[str, Any] = {"type": "open", "nameplate": nameplate}
            if side is not None:
                fields["side"] = side
            if turn:
                fields["turn"] = True
        case AllocateMessage(turn):
            fields = {"type": "allocate", "turn": True} if turn else {"type": "allocate"}
        case TurnMessage(servers):
            fields = {"type": "turn", "servers": [vars(server) for server in servers]}
        case AllocatedMessage(nameplate):
            fields = {"type": "allocated", "nameplate": nameplate}
        case AddMessage(body):
            fields = {"type": "add", "body": body}
        case RelayMessage(body):
            fields = {"type": "message", "body": body}
        case ErrorMessage(reason):
            fields = {"type": "error", "reason": reason}
        case CloseMessage(reason):
            fields = {"type": "close", "reason": reason}
    return json.dumps(fields, separators=(",", ":"))


def decode_client(frame: str | bytes) -> ClientMessage:
    """Parse a client frame; PairingError (the reason to answer) if it is not valid."""
    fields = _load(frame)
    kind = fields.get("type")
    if kind == "open":
        side = fields.get("side")
        if side is not None and side not in SIDES:
            raise PairingError(f"side must be one of {', '.join(SIDES)}")
        return OpenMessage(_nameplate(fields), side, fields.get("turn") is True)
    if kind == "allocate":
        return AllocateMessage(fields.get("turn") is True)
    if kind == "add":
        return AddMessage(_string(fields, "body"))
    raise PairingError(f"unknown message type {kind!r}")


def decode_server(frame: str | bytes) -> ServerMessage:
    """Parse a server frame; PairingError if it is not valid."""
    fields = _load(frame)
    kind = fields.get("type")
    if kind == "message":
        return RelayMessage(_string(fields, "body"))
    if kind == "allocated":
        return AllocatedMessage(_nameplate(fields))
    if kind == "turn":
        return TurnMessage(_turn_servers(fields.get("servers")))
    if kind == "error":
        return ErrorMessage(_string(fields, "reason"))
    if kind == "close":
        return CloseMessage(_string(fields, "reason"))
    raise PairingError(f"unknown message type {kind!r}")


def _load(frame: str | bytes) -> dict[str, Any]:
    try:
        fields = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise PairingError("message is not JSON") from exc
    if not isinstance(fields, dict):
        raise PairingError("message is not a JSON object")
    return fields


def _string(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str):
        raise PairingError(f"field {name!r} must be a string")
    return value


def _nameplate(fields: dict[str, Any]) -> str:
    nameplate = _string(fields, "nameplate")
    if not _NAMEPLATE.fullmatch(nameplate):
        raise PairingError("bad nameplate")
    return nameplate


def _turn_servers(value: Any) -> tuple[TurnServer, ...]:
    if not isinstance(value, list) or len(value) > MAX_TURN_SERVERS:
        raise PairingError(f"field 'servers' must be a list of at most {MAX_TURN_SERVERS}")
    servers = []
    for entry in value:
        if not isinstance(entry, dict):
            raise PairingError("a TURN server must be a JSON object")
        servers.append(
            TurnServer(
                _string(entry, "urls"), _string(entry, "username"), _string(entry, "credential")
            )
        )
    return tuple(servers)
