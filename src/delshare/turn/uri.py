"""TURN URIs (RFC 7065 §3): ``turn:host[:port][?transport=udp|tcp]`` and ``turns:host[:port]``.

``turns`` means TLS over TCP (port 5349 by default); ``turn`` means plain UDP or TCP (port 3478).
When ``turn:`` carries no ``transport`` the choice is left to the caller (``transport`` is None):
DEL's TCP allocations need a stream, so the asyncio client picks TCP in that case.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import parse_qs

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
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?transport={self.transport}" if self.transport else ""
        return f"{'turns' if self.secure else 'turn'}:{host}:{self.port}{query}"


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
    default = DEFAULT_TLS_PORT if secure else DEFAULT_PORT
    if hostport.startswith("["):
        host, bracket, tail = hostport[1:].partition("]")
        if not bracket:
            raise TurnUriError(f"unclosed IPv6 literal: {hostport!r}")
        _check_ipv6(host)
        port_text = tail.removeprefix(":") if tail.startswith(":") else tail
        if tail and not tail.startswith(":"):
            raise TurnUriError(f"junk after IPv6 literal: {hostport!r}")
    else:
        host, _, port_text = hostport.partition(":")
    if not host or "@" in host or "/" in host:
        raise TurnUriError(f"bad TURN host: {hostport!r}")
    return host, _parse_port(port_text, default)


def _check_ipv6(host: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError as exc:
        raise TurnUriError(f"bad IPv6 literal: {host!r}") from exc


def _parse_port(text: str, default: int) -> int:
    if not text:
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise TurnUriError(f"bad port: {text!r}")
    return int(text)


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
