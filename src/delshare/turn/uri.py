"""TURN URIs (RFC 7065 §3): ``turn:host[:port][?transport=udp|tcp]`` and ``turns:host[:port]``.

``turns`` means TLS over TCP (port 5349 by default); ``turn`` means plain UDP or TCP (port 3478).
When ``turn:`` carries no ``transport`` the choice is left to the caller (``transport`` is None):
DEL's TCP allocations need a stream, so the asyncio client picks TCP in that case.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import parse_qs

from delshare.address import format_address, parse_port, split_host_port
from delshare.errors import DelshareError
from delshare.stun.constants import DEFAULT_PORT, DEFAULT_TLS_PORT


class TurnUriError(DelshareError, ValueError):
    """A string that is not a TURN URI (RFC 7065 §3)."""


@dataclass(frozen=True)
class TurnUri:
    """A parsed TURN URI (RFC 7065 §3)."""

    secure: bool
    host: str
    port: int
    transport: str | None  # "udp", "tcp" or None when unspecified

    @property
    def stream(self) -> bool:
        """Whether the control connection is TCP or TLS (unspecified transport counts as TCP)."""
        return self.secure or self.transport != "udp"

    def __str__(self) -> str:
        query = f"?transport={self.transport}" if self.transport else ""
        return f"{'turns' if self.secure else 'turn'}:{format_address(self.host, self.port)}{query}"


def parse_turn_uri(text: str) -> TurnUri:
    """Parse ``turn:``/``turns:`` URIs; IPv6 literals go in brackets (RFC 7065 §3)."""
    scheme, sep, rest = text.strip().partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("turn", "turns"):
        raise TurnUriError(f"not a TURN URI (want turn: or turns:): {text!r}")
    secure = scheme == "turns"
    hostport, _, query = rest.partition("?")
    host, port = _split_host_port(hostport.removeprefix("//"), secure)
    transport = _parse_transport(query)
    if secure and transport == "udp":
        raise TurnUriError("turns: with transport=udp (DTLS) is not supported")
    return TurnUri(secure, host, port, transport)


def _split_host_port(hostport: str, secure: bool) -> tuple[str, int]:
    try:
        host, port_text, bracketed = split_host_port(hostport)
    except ValueError as exc:
        raise TurnUriError(str(exc)) from None
    if bracketed:
        _check_ipv6(host)
    elif ":" in host:  # RFC 7065 §3: an IPv6 literal must be in brackets
        raise TurnUriError(f"bad TURN host: {hostport!r}")
    if not host or "@" in host or "/" in host:
        raise TurnUriError(f"bad TURN host: {hostport!r}")
    return host, _parse_port(port_text, DEFAULT_TLS_PORT if secure else DEFAULT_PORT)


def _check_ipv6(host: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError as exc:
        raise TurnUriError(f"bad IPv6 literal: {host!r}") from exc


def _parse_port(text: str, default: int) -> int:
    if not text:
        return default
    try:
        return parse_port(text)
    except ValueError as exc:
        raise TurnUriError(str(exc)) from None


def _parse_transport(query: str) -> str | None:
    if not query:
        return None
    params = parse_qs(query, keep_blank_values=True)
    unknown = set(params) - {"transport"}
    if unknown:
        raise TurnUriError(f"unknown TURN URI parameter(s): {', '.join(sorted(unknown))}")
    value = params["transport"][-1].lower()
    if value not in ("udp", "tcp"):
        raise TurnUriError(f"transport must be udp or tcp, not {value!r}")
    return value
