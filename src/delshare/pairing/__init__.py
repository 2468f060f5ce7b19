"""Pairing: human codes, SPAKE2 with key confirmation, and the rendezvous mailbox protocol.

Usage::

    channel = await pair("ws://relay.example:4000", "7-guitar-orbit", "sender")
    async with channel:
        await channel.send({"candidates": [...]})
        reply = await channel.receive()
"""

from delshare.pairing.client import DEFAULT_TIMEOUT, PairedChannel, pair
from delshare.pairing.codes import Code, generate_code, parse_code
from delshare.pairing.mailbox import MailboxLimits, MailboxStore, MailboxTable
from delshare.pairing.pake import Pake, Side, derive_key
from delshare.pairing.server import RendezvousServer, serve_rendezvous

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
    "serve_rendezvous",
]
