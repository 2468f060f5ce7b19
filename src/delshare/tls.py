"""TLS for the clients (``wss://`` rendezvous, ``turns:`` relays) and the relay's listeners.

Clients verify the server's certificate and host name against the system's CAs, or only against
the PEM file given with ``--ca FILE`` / ``DELSHARE_CA`` (a private CA, or a self-signed relay).
A failed handshake is described by its cause, so the user knows what to change:
``certificate verify failed: unknown CA`` (→ ``--ca``), ``hostname mismatch``, ``expired``, or
``not a TLS server`` (the URL says wss://, turns: where the server speaks plain text).

The relay serves TURN over TLS and, with ``--rendezvous-tls``, ``wss://`` from the same
``--cert``/``--key`` files (``server_context``).
"""

from __future__ import annotations

import os
import ssl

from delshare.errors import DelshareError

CA_ENV = "DELSHARE_CA"
"""Environment variable naming the CA file clients trust (the same as ``--ca``)."""

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) that mean "signed by nobody we trust".
_UNKNOWN_CA = frozenset({2, 18, 19, 20, 21})
_EXPIRED = frozenset({10})
_NOT_YET_VALID = frozenset({9})
_NAME_MISMATCH = frozenset({62, 64})  # hostname, IP address
# What OpenSSL reports when the other side answered without TLS (a plain HTTP or STUN server).
_PLAINTEXT_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
        "WRONG_SSL_VERSION",
        "UNSUPPORTED_PROTOCOL",
    }
)


class TlsSetupError(DelshareError):
    """A certificate, key or CA file could not be loaded."""


def client_context(ca: str | None = None) -> ssl.SSLContext:
    """A verifying client context: trusts ``ca`` (PEM), else ``$DELSHARE_CA``, else the system."""
    cafile = ca or os.environ.get(CA_ENV) or None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load CA file {cafile}: {_short(exc)}") from exc


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for TURN over TLS and ``wss://`` from PEM ``cert`` and ``key``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load certificate {cert} / key {key}: {_short(exc)}") from exc
    return context


def describe_tls_error(exc: BaseException, host: str = "") -> str | None:
    """The cause of a failed TLS handshake in words, or None when ``exc`` is not one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _verify_failure(exc, host)
    if isinstance(exc, ssl.SSLEOFError) or (
        isinstance(exc, ssl.SSLError) and exc.reason == "UNEXPECTED_EOF_WHILE_READING"
    ):
        return _CLOSED_IN_HANDSHAKE
    if isinstance(exc, ssl.SSLError):
        if exc.reason in _PLAINTEXT_REASONS:
            return "not a TLS server (it answered in plain text: use ws:// or turn: for it)"
        return f"TLS failed: {exc.reason or _short(exc)}"
    return None


def describe_secure_connect_error(exc: BaseException, host: str = "") -> str | None:
    """``describe_tls_error``, and a connection cut before TLS was up (a plain server that
    dropped our ClientHello) also described as such; None for other errors."""
    tls = describe_tls_error(exc, host)
    if tls is not None:
        return tls
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError | EOFError):
        return _CLOSED_IN_HANDSHAKE
    return None


_CLOSED_IN_HANDSHAKE = (
    "TLS handshake failed: not a TLS server? (it closed the connection during the handshake; "
    "a plain server needs ws:// or turn:)"
)


def _verify_failure(exc: ssl.SSLCertVerificationError, host: str) -> str:
    code, message = exc.verify_code, exc.verify_message or _short(exc)
    if code in _UNKNOWN_CA:
        return (
            f"certificate verify failed: unknown CA ({message}); "
            f"pass --ca FILE (or {CA_ENV}) with the certificate of the CA that signed it"
        )
    if code in _NAME_MISMATCH:
        named = f" {host}" if host else " this host"
        return f"certificate verify failed: hostname mismatch (the certificate is not for{named})"
    if code in _EXPIRED:
        return "certificate verify failed: the server's certificate has expired"
    if code in _NOT_YET_VALID:
        return "certificate verify failed: the server's certificate is not valid yet (clock?)"
    return f"certificate verify failed: {message}"


def _short(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
