"""Sans-IO TURN rules (RFC 8656, RFC 6062): the server core, the client transactions, TURN URIs."""

from typing import TYPE_CHECKING

from delshare._exports import lazy_exports

if TYPE_CHECKING:
    from delshare.turn.auth import AuthConfig, Authenticator
    from delshare.turn.client import (
        ConnectionAttempted,
        PeerDataReceived,
        TransactionFailed,
        TransactionSucceeded,
        TurnClientCore,
    )
    from delshare.turn.client_allocation import AllocationSchedule
    from delshare.turn.server import TurnServer
    from delshare.turn.server_config import ServerConfig
    from delshare.turn.uri import TurnUri, TurnUriError, parse_turn_uri

__all__ = [
    "AllocationSchedule",
    "AuthConfig",
    "Authenticator",
    "ConnectionAttempted",
    "PeerDataReceived",
    "ServerConfig",
    "TransactionFailed",
    "TransactionSucceeded",
    "TurnClientCore",
    "TurnServer",
    "TurnUri",
    "TurnUriError",
    "parse_turn_uri",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "AuthConfig": "delshare.turn.auth",
        "Authenticator": "delshare.turn.auth",
        "ConnectionAttempted": "delshare.turn.client",
        "PeerDataReceived": "delshare.turn.client",
        "TransactionFailed": "delshare.turn.client",
        "TransactionSucceeded": "delshare.turn.client",
        "TurnClientCore": "delshare.turn.client",
        "AllocationSchedule": "delshare.turn.client_allocation",
        "TurnServer": "delshare.turn.server",
        "ServerConfig": "delshare.turn.server_config",
        "TurnUri": "delshare.turn.uri",
        "TurnUriError": "delshare.turn.uri",
        "parse_turn_uri": "delshare.turn.uri",
    },
)
