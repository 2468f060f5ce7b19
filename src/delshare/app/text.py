"""``delshare send --text``: a short message travels in the sealed pairing channel, no link.

The text is small (at most :data:`MAX_TEXT` bytes of UTF-8), so it goes where the candidates
would: after pairing the sender sends ``{"t": "text", "text": ...}`` through the mailbox
(sealed with the PAKE key, :mod:`delshare.pairing.cipher`) and waits for
``{"t": "text-received"}``. The receiver has already sent its candidates (it cannot know in
advance); it reads the text instead of the sender's candidates, closes what it gathered, reports
the text (the UI escapes anything that could steer a terminal) and confirms.
"""

from __future__ import annotations

from typing import Any

from delshare.app.events import Reporter, TextReceived, TextSent
from delshare.errors import PairingError
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
    await paired.send({"t": "text", "text": text})
    for _ in range(_MAX_SKIPPED):
        message = await paired.receive()
        kind = message.get("t")
        if kind == "text-received":
            report(TextSent(len(text)))
            return
        if kind == "error":
            raise PairingError(f"peer gave up: {message.get('reason', '?')}")
    raise PairingError("the receiver did not confirm the text")


def is_text(message: dict[str, Any]) -> bool:
    return message.get("t") == "text"


async def take_text(paired: PairedChannel, message: dict[str, Any], report: Reporter) -> None:
    """Report the sender's text (from ``message``) and confirm it."""
    text = message.get("text")
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise PairingError("the sender sent a malformed text")
    report(TextReceived(text))
    await paired.send({"t": "text-received"})
