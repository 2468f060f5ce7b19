"""Pairing: human codes, SPAKE2 with key confirmation, and the rendezvous mailbox protocol.

Usage::

    channel = await pair("ws://relay.example:4000", "7-guitar-orbit", "sender")
    async with channel:
        await channel.send({"candidates": [...]})
        reply = await channel.receive()

The server side (mailbox table, rendezvous server) is imported on first use, so a client
(``send``, ``receive``) does not pay for it at start-up.
"""

import importlib
from typing import TYPE_CHECKING, Any

from delshare.pairing.client import DEFAULT_TIMEOUT, PairedChannel, pair, rejoin
from delshare.pairing.codes import Code, generate_code, parse_code
from delshare.pairing.pake import Pake, Side, derive_key

if TYPE_CHECKING:
    from delshare.pairing.mailbox import MailboxLimits, MailboxStore, MailboxTable
    from delshare.pairing.server import RendezvousServer, serve_rendezvous

_SERVER_SIDE = {
    "MailboxLimits": "delshare.pairing.mailbox",
    "MailboxStore": "delshare.pairing.mailbox",
    "MailboxTable": "delshare.pairing.mailbox",
    "RendezvousServer": "delshare.pairing.server",
    "serve_rendezvous": "delshare.pairing.server",
}

__all__ = [
    "DEFAULT_TIMEOUT",
    "Code",
    "MailboxLimits",
    "MailboxStore",
    "MailboxTable",
    "PairedChannel",
    "Pake",
    "RendezvousServer",
    "Side",
    "derive_key",
    "generate_code",
    "pair",
    "parse_code",
    "rejoin",
    "serve_rendezvous",
]


def __getattr__(name: str) -> Any:
    """Import the server-side names on first use (PEP 562)."""
    module = _SERVER_SIDE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
