"""TURN servers and short-lived credentials the rendezvous hands its clients (issue 12 item 9).

A relay node that holds the TURN REST shared secret (``delshare relay --auth-secret``) can give
each rendezvous client the node's TURN server and credentials minted for it: username
``<expiry>:<id>`` (``expiry`` = now + ``lifetime``, ``id`` random), password
base64(HMAC-SHA1(secret, username)) — the scheme coturn calls ``use-auth-secret``. A client then
needs one URL and no secret, and what it is given stops working after ``lifetime`` seconds,
so it is worth little to anyone it leaks to. ``now`` comes in: no clock read here.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from delshare.address import format_address, split_host_port
from delshare.pairing.wire import TurnServer
from delshare.stun.credentials import rest_password

_HOST_NAME = re.compile(r"[A-Za-z0-9.-]{1,253}")
_V6_LITERAL = re.compile(r"[0-9A-Fa-f:.]{2,45}")


@dataclass(frozen=True)
class TurnGrant:
    """What to hand out: the REST secret, the credentials' lifetime, where TURN listens.

    ``uris`` names the servers explicitly; empty: ``turn:HOST:port?transport=tcp``, with HOST
    the name the client used to reach the rendezvous.
    """

    secret: str
    lifetime: int = 3600
    port: int = 3478
    uris: tuple[str, ...] = ()

    def servers(self, host: str, now: float) -> tuple[TurnServer, ...]:
        """Fresh credentials for the servers, for a client that reached us as ``host``."""
        username = f"{int(now) + self.lifetime}:{secrets.token_hex(8)}"
        password = rest_password(self.secret, username)
        uris = self.uris or (f"turn:{format_address(host, self.port)}?transport=tcp",)
        return tuple(TurnServer(uri, username, password) for uri in uris)


def reached_host(host_header: str | None, local_host: str) -> str:
    """The host a client used to reach us: its ``Host`` header when well-formed, else the
    local address its connection arrived at."""
    if host_header:
        try:
            host, _port, bracketed = split_host_port(host_header)
        except ValueError:
            host, bracketed = "", False
        pattern = _V6_LITERAL if bracketed else _HOST_NAME
        if host and pattern.fullmatch(host):
            return host
    return local_host.split("%", 1)[0]
