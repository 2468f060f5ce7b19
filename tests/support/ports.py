"""Free loopback ports for servers that a test starts as a subprocess.

A port from ``bind(0)`` is free only at the moment it is probed; another process may take it
before the server binds. Servers of our own should bind port 0 and report the port instead; this
helper is for tools such as coturn that must be given a port number.
"""

from __future__ import annotations

import socket
from typing import Literal

PortKind = Literal["tcp", "udp", "both"]

_ATTEMPTS = 64


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bindable(host: str, port: int, sock_type: socket.SocketKind) -> bool:
    with socket.socket(_family(host), sock_type) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _probe(host: str, sock_type: socket.SocketKind) -> int:
    with socket.socket(_family(host), sock_type) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def free_port(kind: PortKind = "both", host: str = "127.0.0.1") -> int:
    """Return a port on ``host`` that is free for TCP, UDP or both (the default).

    Raises ``RuntimeError`` if no port free for both protocols turns up in a bounded number of
    tries.
    """
    first = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    for _ in range(_ATTEMPTS):
        port = _probe(host, first)
        if kind != "both" or _bindable(host, port, socket.SOCK_DGRAM):
            return port
    raise RuntimeError(f"no port free for both TCP and UDP on {host} after {_ATTEMPTS} tries")


def free_ports(count: int, kind: PortKind = "both", host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct free ports (see ``free_port``)."""
    ports: list[int] = []
    for _ in range(count * _ATTEMPTS):
        port = free_port(kind, host)
        if port not in ports:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"could not find {count} distinct free ports on {host}")
