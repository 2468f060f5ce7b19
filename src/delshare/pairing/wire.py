"""The rendezvous JSON schema, one WebSocket text frame per message.

Client to server: ``{"type": "open", "nameplate": "7"}`` once, then any number of
``{"type": "add", "body": "<str>"}``. Server to client: ``{"type": "message", "body": "<str>"}``
(a body the other side added), ``{"type": "error", "reason": "..."}`` (request refused; the server
then closes) and ``{"type": "close", "reason": "..."}`` (peer left or mailbox expired). Bodies are
opaque to the server; paired clients put base64 there.
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


ClientMessage = OpenMessage | AddMessage
ServerMessage = RelayMessage | ErrorMessage | CloseMessage


def encode(message: ClientMessage | ServerMessage) -> str:
    """One JSON text frame for ``message``."""
    match message:
        case OpenMessage(nameplate):
            fields: dict[str, str] = {"type": "open", "nameplate": nameplate}
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
        nameplate = _string(fields, "nameplate")
        if not _NAMEPLATE.fullmatch(nameplate):
            raise PairingError("bad nameplate")
        return OpenMessage(nameplate)
    if kind == "add":
        return AddMessage(_string(fields, "body"))
    raise PairingError(f"unknown message type {kind!r}")


def decode_server(frame: str | bytes) -> ServerMessage:
    """Parse a server frame; PairingError if it is not valid."""
    fields = _load(frame)
    kind = fields.get("type")
    if kind == "message":
        return RelayMessage(_string(fields, "body"))
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
