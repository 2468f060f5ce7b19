"""Tickets for the manual flow: one token carrying a receiver's addresses and a one-time key.

``delshare receive --listen`` prints ``ticket: <TICKET>``; ``delshare send PATH --to TICKET``
dials the addresses in it (directly, or the TURN relayed address) and proves knowledge of the key
in the record handshake. The token is ``del1`` + base64url(JSON); the key is 32 random bytes, so
whoever holds the ticket can send to that receiver once: treat it as a secret.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
from dataclasses import dataclass, field

from delshare.errors import PairingError
from delshare.fields import Fields

PREFIX = "del1"
KEY_BYTES = 32
MAX_ADDRESSES = 32
MAX_TICKET = 4096
_KINDS = ("host", "srflx", "relay")


@dataclass(frozen=True)
class TicketAddress:
    """One address to dial: ``kind`` is host, srflx or relay."""

    kind: str
    host: str
    port: int


@dataclass(frozen=True)
class Ticket:
    """The receiver's addresses and the one-time key."""

    addresses: tuple[TicketAddress, ...]
    key: bytes = field(default_factory=lambda: os.urandom(KEY_BYTES))

    def encode(self) -> str:
        """The printable one-token form."""
        body = {
            "a": [[a.kind, a.host, a.port] for a in self.addresses],
            "k": base64.urlsafe_b64encode(self.key).decode().rstrip("="),
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _address(item: object) -> TicketAddress:
    if not (isinstance(item, list) and len(item) == 3):
        raise PairingError("ticket address is not [kind, host, port]")
    fields = Fields(
        dict(zip(("kind", "host", "port"), item, strict=True)), PairingError, "ticket address"
    )
    kind = fields.one_of("kind", _KINDS)
    host = fields.text("host", max_len=64)
    port = fields.integer("port", 1, 65535)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise PairingError(f"ticket address {host!r} is not an IP address") from None
    return TicketAddress(kind, host, port)


def _damaged(detail: str) -> PairingError:
    return PairingError(f"ticket is damaged ({detail})")


def parse_ticket(text: str) -> Ticket:
    """Decode a ticket; any malformed input gives one clear ``PairingError``."""
    text = text.strip()
    if not text.startswith(PREFIX) or len(text) > MAX_TICKET:
        raise PairingError("not a DEL ticket (it starts with 'del1')")
    try:
        fields = Fields(json.loads(_b64(text[len(PREFIX) :])), _damaged, "ticket")
        key = _b64(fields.text("k", max_len=MAX_TICKET))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: nested too deeply
        raise _damaged("copy it again, whole") from None
    items = fields.items("a", max_len=MAX_ADDRESSES)
    if len(key) != KEY_BYTES:
        raise _damaged("bad key")
    return Ticket(tuple(_address(item) for item in items), key)
