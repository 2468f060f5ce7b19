"""``delshare send --text``: a short message travels in the sealed pairing channel, no link.

The text is small (at most :data:`MAX_TEXT` bytes of UTF-8), so it goes where the candidates
would: after pairing the sender sends ``{"t": "text", "v": 2, "text": ...}`` through the
mailbox (sealed with the PAKE key, :mod:`delshare.pairing.cipher`) and waits for
``{"t": "text-received", "v": 2}`` (docs/protocol.md §2.4; ``"v"`` is the link signalling
version, :data:`delshare.link.signalling.VERSION`). The receiver has already sent its candidates
(it cannot know in advance); it reads the text instead of the sender's candidates, closes what it
gathered, reports the text (the UI escapes anything that could steer a terminal) and confirms.
What the peer sent is read through :class:`delshare.fields.Fields`.
"""

from __future__ import annotations

from typing import Any

from delshare.app.events import Reporter, TextReceived, TextSent
from delshare.errors import PairingError
from delshare.fields import VERSION_FIELD, Fields
from delshare.link.signalling import VERSION
from delshare.pairing import PairedChannel

__all__ = ["MAX_TEXT", "check_text", "deliver_text", "is_text", "take_text"]

MAX_TEXT = 16 * 1024
_MAX_SKIPPED = 4  # the receiver's candidates, reflexive, ready: never more before its answer


def check_text(text: str) -> str | None:
    """Why ``text`` cannot be sent this way, or None."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT:
        return f"text longer than {MAX_TEXT} bytes: send it as a file, or through a pipe (-)"
    return None


async def deliver_text(paired: PairedChannel, text: str, report: Reporter) -> None:
    """Send ``text`` to the paired receiver; return once it confirmed."""
    await paired.send({"t": "text", VERSION_FIELD: VERSION, "text": text})
    for _ in range(_MAX_SKIPPED):
        fields = Fields(await paired.receive(), PairingError, "the receiver's answer")
        kind = fields.text("t", max_len=64)
        if kind == "text-received":
            report(TextSent(len(text)))
            return
        if kind == "error":
            raise PairingError(f"peer gave up: {fields.text('reason', max_len=1000, default='?')}")
    raise PairingError("the receiver did not confirm the text")


def is_text(message: dict[str, Any]) -> bool:
    return message.get("t") == "text"


async def take_text(paired: PairedChannel, message: dict[str, Any], report: Reporter) -> None:
    """Report the sender's text (from ``message``) and confirm it."""
    text = Fields(message, PairingError, "the sender's text").text("text", max_len=MAX_TEXT)
    report(TextReceived(text))
    await paired.send({"t": "text-received", VERSION_FIELD: VERSION})
