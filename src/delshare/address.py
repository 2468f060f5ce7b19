"""Transport addresses: the ``(host, port)`` tuple and its one text form, ``HOST:PORT``.

IPv6 literals go in brackets (RFC 3986 §3.2.2), as in TURN URIs (RFC 7065 §3): ``[::1]:3478``.
:func:`format_address` writes that form (TURN URIs, the relay's and turn-check's reports), and
:func:`display_address` the same for people (``connected:`` lines, candidates).
:func:`split_host_port` and :func:`parse_address` read it back (the relay's ``--listen`` flags,
TURN URIs). Sans-IO: no sockets, no name resolution; a host stays the string it was given.
"""

from __future__ import annotations

import contextlib
import ipaddress

__all__ = [
    "Address",
    "display_address",
    "format_address",
    "parse_address",
    "parse_port",
    "split_host_port",
]

Address = tuple[str, int]
"""A transport address: host (IP literal or name) and port."""


def format_address(host: str, port: int) -> str:
    """``1.2.3.4:5``, ``name:5`` or ``[::1]:5``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def display_address(host: str, port: int) -> str:
    """:func:`format_address` for people: an IPv4-mapped IPv6 address is shown as IPv4."""
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            host = str(ip.ipv4_mapped)
    return format_address(host, port)


def split_host_port(text: str) -> tuple[str, str, bool]:
    """``(host, port text, bracketed)`` from ``HOST:PORT``, ``[V6]:PORT``, ``[V6]`` or ``HOST``.

    The port text is ``""`` when there is none. Unbracketed text with more than one colon is a
    bare IPv6 literal without a port. ``ValueError`` for an unclosed bracket or anything but
    ``:PORT`` after one.
    """
    text = text.strip()
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"unclosed IPv6 literal: {text!r}")
        if tail and not tail.startswith(":"):
            raise ValueError(f"junk after IPv6 literal: {text!r}")
        return host, tail[1:], True
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        return host, port_text, False
    return text, "", False


def parse_port(text: str, *, allow_zero: bool = False) -> int:
    """A decimal port, 1 to 65535 (0 too with ``allow_zero``: "pick one"); ``ValueError``."""
    lowest = 0 if allow_zero else 1
    if not text.isascii() or not text.isdigit() or not lowest <= int(text) <= 65535:
        raise ValueError(f"bad port: {text!r}")
    return int(text)


def parse_address(
    text: str, default_port: int | None = None, *, allow_zero: bool = False
) -> Address:
    """``(host, port)`` from the forms :func:`split_host_port` reads; ``ValueError``.

    Without a port in ``text``, ``default_port`` is used, or it is an error when there is none.
    """
    host, port_text, _ = split_host_port(text)
    if not port_text:
        if default_port is None:
            raise ValueError(f"{text.strip()!r} needs a port (HOST:PORT)")
        return host, default_port
    try:
        return host, parse_port(port_text, allow_zero=allow_zero)
    except ValueError:
        raise ValueError(f"bad port in {text.strip()!r}") from None
