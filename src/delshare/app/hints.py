"""Error lines that say what to do next.

:func:`explain` turns a failure of ``send`` or ``receive`` into the one line the CLI prints:
the error itself, reworded where the raw text misleads (a wrong code is reported per side),
plus the next step when there is one: which flag fixes a TURN refusal, how to resume after an
interrupted transfer (a *new* code from the sender: codes are single-use; what arrived is kept
and resumes), how a script accepts without a prompt. The exception chain is searched, so a
cause wrapped by a higher layer (``TURN server X: ALLOCATE failed: 401 ...``) still gets its
hint.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal

from delshare.errors import DelshareError, PairingError, TransactionError

__all__ = ["ALLOW_PEER_HINT", "AUTH_HINT", "Side", "explain", "resume_hint", "turn_hint"]

Side = Literal["send", "receive", "send-to", "listen", ""]

AUTH_HINT = "wrong username, password or secret?"
ALLOW_PEER_HINT = (
    "the TURN server refuses this peer address (403): a `delshare relay` used within one "
    "private network or one machine needs `--allow-peer CIDR` (e.g. --allow-peer 192.168.0.0/16)"
)
_CODE_FROM_SENDER = "ask the sender for a new code (codes are single-use)"
_NEW_CODE_TO_RECEIVER = (
    "run `delshare send` again and pass its new code to the receiver (codes are single-use)"
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def turn_hint(exc: BaseException) -> str:
    """The hint for a TURN failure anywhere in ``exc``'s chain, or ``""``."""
    from delshare.stun.constants import ErrorCode
    from delshare.turn.client_errors import AuthenticationError

    for link in _chain(exc):
        if isinstance(link, AuthenticationError):
            return AUTH_HINT
        if isinstance(link, TransactionError) and link.code == ErrorCode.FORBIDDEN:
            return ALLOW_PEER_HINT
    # The race reports its attempts' failures as text (``CONNECT failed: 403 Forbidden ...``).
    text = str(exc)
    if "failed: 403 " in text:
        return ALLOW_PEER_HINT
    if "failed: 401 " in text or "failed: 441 " in text:
        return AUTH_HINT
    return ""


def resume_hint(side: Side) -> str:
    """How to continue an interrupted transfer from this side."""
    if side in ("receive", "listen"):
        return f"to resume, {_CODE_FROM_SENDER} and run receive again: what arrived is kept"
    return f"to resume, {_NEW_CODE_TO_RECEIVER}: what arrived is kept and resumes"


def _wrong_code(side: Side) -> str:
    if side == "receive":
        return f"wrong code: it does not match the sender's; {_CODE_FROM_SENDER}"
    return f"wrong code: the receiver typed a different code; {_NEW_CODE_TO_RECEIVER}"


def _no_sender(message: str) -> str:
    return (
        f"{message}: no sender is waiting with this code; check it, or {_CODE_FROM_SENDER}; "
        "if the sender printed `announcing code N on the local network`, run receive without "
        "--rendezvous (and without DELSHARE_RENDEZVOUS)"
    )


def _pairing(exc: PairingError, side: Side) -> str | None:
    message = str(exc)
    if message.startswith("wrong code") or "wrong code or tampered" in message:
        return _wrong_code(side)
    if side == "receive" and message == "timed out waiting for the peer":
        return _no_sender(message)
    return None


_NO_SPACE = re.compile(r"need (\d+) bytes, only (\d+) free")


def _refusal(reason: str) -> str | None:
    """A receiver's refusal reworded for people, where it is written for programs."""
    from delshare.app.units import human_size

    match = _NO_SPACE.fullmatch(reason)
    if match is None:
        return None
    needed, free = (human_size(int(n)) for n in match.groups())
    return (
        f"refused by peer: the receiver has not enough space (the offer needs {needed}, "
        f"{free} free there); it can free some or receive into another folder"
    )


def explain(exc: BaseException, side: Side = "", transferring: bool = False) -> str:
    """The one error line (without ``error: ``) for ``exc`` on ``side``."""
    from delshare.link.race import NoPathError
    from delshare.link.records import LinkClosedError
    from delshare.transfer.errors import RefusedByPeerError, TransferInterruptedError

    message = str(exc) or type(exc).__name__
    if isinstance(exc, PairingError):
        message = _pairing(exc, side) or message
    if isinstance(exc, RefusedByPeerError):
        message = _refusal(exc.reason) or message
    hint = turn_hint(exc)
    if hint and hint not in message:
        return f"{message} ({hint})" if hint == AUTH_HINT else f"{message}; {hint}"
    if isinstance(exc, TransferInterruptedError | LinkClosedError) or (
        transferring and isinstance(exc, DelshareError) and "link" in message
    ):
        return f"{message}; {resume_hint(side)}"
    if isinstance(exc, NoPathError) and side == "send-to":
        message = message.replace(" on both sides", "")  # the receiver never dials a sender
        return (
            f"{message}; if the receiver listens through a TURN relay, it must let this sender "
            "in: `delshare receive --listen --turn ... --permit THIS_SENDER_PUBLIC_IP`"
        )
    return message
