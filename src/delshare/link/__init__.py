"""The link between two peers: candidates, connection racing, the encrypted record channel."""

from typing import TYPE_CHECKING

from delshare._exports import lazy_exports

if TYPE_CHECKING:
    from delshare.link.candidates import Candidate, CandidateError, parse_candidates
    from delshare.link.crypto import LinkError
    from delshare.link.race import NoPathError, RaceConfig, RacedLink, race
    from delshare.link.records import RecordChannel, handshake
    from delshare.link.relay import TurnSettings, open_relay
    from delshare.link.ticket import Ticket, parse_ticket

__all__ = [
    "Candidate",
    "CandidateError",
    "LinkError",
    "NoPathError",
    "RaceConfig",
    "RacedLink",
    "RecordChannel",
    "Ticket",
    "TurnSettings",
    "handshake",
    "open_relay",
    "parse_candidates",
    "parse_ticket",
    "race",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "Candidate": "delshare.link.candidates",
        "CandidateError": "delshare.link.candidates",
        "parse_candidates": "delshare.link.candidates",
        "NoPathError": "delshare.link.race",
        "RaceConfig": "delshare.link.race",
        "RacedLink": "delshare.link.race",
        "race": "delshare.link.race",
        "LinkError": "delshare.link.crypto",
        "RecordChannel": "delshare.link.records",
        "handshake": "delshare.link.records",
        "TurnSettings": "delshare.link.relay",
        "open_relay": "delshare.link.relay",
        "Ticket": "delshare.link.ticket",
        "parse_ticket": "delshare.link.ticket",
    },
)
