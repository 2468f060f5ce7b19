"""Link signalling: the sealed messages paired peers exchange to set up their link.

Theory of operation (docs/protocol.md §2.4; the flow is in :mod:`delshare.app.connect`). After
pairing, each side sends :class:`CandidatesOffered` (its link mode and candidates). When a relay
may be used, each then sends :class:`ReflexiveFound` (the server-reflexive address it learned
from the peer's TURN server, maybe none) and, once the peer's IPs are permitted on its own
allocation, :class:`RelayReady`. During the race a side whose attempts are all spent sends
:class:`AttemptsExhausted`. :class:`SetupFailed` (``"t": "error"``) ends the setup with a reason.

Each message is one JSON object: ``"t"`` names it and ``"v"`` gives the signalling version
(:data:`VERSION`). A message without ``"v"`` is version 1, whose peers always take the
reflexive and ready steps; a later version is read as this one (its additions are fields an
older reader may skip, docs/protocol.md "Versioning"). :func:`encode` and :func:`decode` are
the only places that see the JSON; everything a peer sent is checked by
:class:`delshare.fields.Fields`, and anything malformed is one
:class:`~delshare.errors.PairingError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from delshare.errors import PairingError
from delshare.fields import VERSION_FIELD, Fields
from delshare.link.candidates import MAX_CANDIDATES, Candidate, CandidateError, parse_candidates
from delshare.link.race import Mode

__all__ = [
    "FIRST_SKIPPING_VERSION",
    "VERSION",
    "AttemptsExhausted",
    "CandidatesOffered",
    "ReflexiveFound",
    "RelayReady",
    "SetupFailed",
    "Signal",
    "decode",
    "encode",
]

VERSION = 2
"""The signalling version we speak; 1 is a peer that sends no ``"v"``."""
FIRST_SKIPPING_VERSION = 2
"""From this version on, both sides skip the reflexive and ready steps when no relay can be used."""
_MAX_VERSION = 1 << 16
_MODES: tuple[Mode, ...] = get_args(Mode)
_MAX_REASON = 1000


@dataclass(frozen=True, slots=True)
class CandidatesOffered:
    """``{"t":"candidates"}``: the sender's link mode and candidates, and its version."""

    mode: Mode
    candidates: tuple[Candidate, ...]
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class ReflexiveFound:
    """``{"t":"reflexive"}``: server-reflexive candidates learned from the peer's TURN server."""

    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class RelayReady:
    """``{"t":"ready"}``: the peer's IPs are permitted on the sender's allocation."""


@dataclass(frozen=True, slots=True)
class AttemptsExhausted:
    """``{"t":"exhausted"}``: every outgoing attempt of the sender has failed."""


@dataclass(frozen=True, slots=True)
class SetupFailed:
    """``{"t":"error"}``: the sender gave up on the setup, saying why."""

    reason: str


Signal = CandidatesOffered | ReflexiveFound | RelayReady | AttemptsExhausted | SetupFailed

_NAMES: dict[type[Signal], str] = {
    CandidatesOffered: "candidates",
    ReflexiveFound: "reflexive",
    RelayReady: "ready",
    AttemptsExhausted: "exhausted",
    SetupFailed: "error",
}


def encode(signal: Signal) -> dict[str, object]:
    """The JSON object of ``signal`` (docs/protocol.md §2.4)."""
    wire: dict[str, object] = {"t": _NAMES[type(signal)], VERSION_FIELD: VERSION}
    match signal:
        case CandidatesOffered(mode, candidates):
            wire |= {"mode": mode, "candidates": [c.to_wire() for c in candidates]}
        case ReflexiveFound(candidates):
            wire["candidates"] = [c.to_wire() for c in candidates]
        case SetupFailed(reason):
            wire["reason"] = reason
    return wire


def decode(obj: object) -> Signal:
    """The signal in a JSON object from the peer; :class:`PairingError` if it is malformed."""
    fields = Fields(obj, PairingError, "link signalling message")
    kind = fields.one_of("t", tuple(_NAMES.values()))
    version = fields.integer(VERSION_FIELD, 1, _MAX_VERSION, default=1)
    if kind == "candidates":
        mode = fields.one_of("mode", _MODES, default="any")
        return CandidatesOffered(mode, _candidates(fields), version)
    if kind == "reflexive":
        return ReflexiveFound(_candidates(fields))
    if kind == "error":
        return SetupFailed(fields.text("reason", max_len=_MAX_REASON, default="?"))
    return RelayReady() if kind == "ready" else AttemptsExhausted()


def _candidates(fields: Fields) -> tuple[Candidate, ...]:
    try:
        return tuple(parse_candidates(fields.items("candidates", max_len=MAX_CANDIDATES)))
    except CandidateError as exc:
        raise PairingError(f"bad candidates from peer: {exc}") from exc
