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

Frames are read through ``delshare.fields``: a missing or mistyped field is refused with a
``PairingError`` naming it (``add message: 'body' is missing``); an unknown type is
``unknown message type 'x'`` (how an older server refuses ``allocate``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from delshare.errors import PairingError
from delshare.fields import Fields

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
    fields = Fields.load(frame, PairingError)
    kind = fields.message_type(("open", "allocate", "add"))
    fields = fields.named(f"{kind} message")
    if kind == "open":
        side = None if fields.null("side") else fields.one_of("side", SIDES)
        return OpenMessage(_nameplate(fields), side, _turn_asked(fields))
    if kind == "allocate":
        return AllocateMessage(_turn_asked(fields))
    return AddMessage(fields.text("body", max_len=MAX_FRAME))


def decode_server(frame: str | bytes) -> ServerMessage:
    """Parse a server frame; PairingError if it is not valid."""
    fields = Fields.load(frame, PairingError)
    kind = fields.message_type(("message", "allocated", "turn", "error", "close"))
    fields = fields.named(f"{kind} message")
    if kind == "message":
        return RelayMessage(fields.text("body", max_len=MAX_FRAME))
    if kind == "allocated":
        return AllocatedMessage(_nameplate(fields))
    if kind == "turn":
        return TurnMessage(_turn_servers(fields))
    if kind == "error":
        return ErrorMessage(fields.text("reason", max_len=MAX_FRAME))
    return CloseMessage(fields.text("reason", max_len=MAX_FRAME))


def _nameplate(fields: Fields) -> str:
    return fields.text("nameplate", max_len=64, matching=_NAMEPLATE)


def _turn_asked(fields: Fields) -> bool:
    """``"turn": true`` asks for TURN servers (absent: false)."""
    return fields.flag("turn", default=False)


def _turn_servers(fields: Fields) -> tuple[TurnServer, ...]:
    return tuple(
        TurnServer(
            server.text("urls", max_len=MAX_FRAME),
            server.text("username", max_len=MAX_FRAME),
            server.text("credential", max_len=MAX_FRAME),
        )
        for server in fields.objects("servers", max_items=MAX_TURN_SERVERS)
    )
