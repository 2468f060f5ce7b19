"""Credentials: long-term keys (RFC 8489 §9.2.2), USERHASH (§14.4), TURN REST API usernames.

The REST scheme is draft-uberti-behave-turn-rest-00, as implemented by coturn's
``use-auth-secret``: username ``<expiry>:<id>``, password base64(HMAC-SHA1(secret, username)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stringprep
import unicodedata

from delshare.stun.constants import PASSWORD_ALGORITHM_MD5, PASSWORD_ALGORITHM_SHA256


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013), as the RFC 5769 §2.4 vector expects; identity on plain ASCII."""
    if text.isascii() and text.isprintable():
        return text
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    for ch in normal:
        if stringprep.in_table_c21(ch) or stringprep.in_table_c22(ch) or stringprep.in_table_c9(ch):
            raise ValueError("prohibited character in credential")
    return normal


def long_term_key(
    username: str, realm: str, password: str, algorithm: int = PASSWORD_ALGORITHM_MD5
) -> bytes:
    """key = H(username ":" realm ":" password), H = MD5 or SHA-256 (RFC 8489 §9.2.2)."""
    material = f"{username}:{realm}:{saslprep(password)}".encode()
    if algorithm == PASSWORD_ALGORITHM_SHA256:
        return hashlib.sha256(material).digest()
    return hashlib.md5(material, usedforsecurity=False).digest()


def userhash(username: str, realm: str) -> bytes:
    """USERHASH = SHA-256(username ":" realm) (RFC 8489 §14.4)."""
    return hashlib.sha256(f"{username}:{realm}".encode()).digest()


def rest_password(secret: str, username: str) -> str:
    """The REST API password for ``username``: base64(HMAC-SHA1(secret, username))."""
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def rest_credentials(
    secret: str, now: float, ttl: int = 86400, user_id: str = "del"
) -> tuple[str, str]:
    """Ephemeral (username, password) valid until ``now + ttl``."""
    username = f"{int(now) + ttl}:{user_id}"
    return username, rest_password(secret, username)


def rest_username_expired(username: str, now: float) -> bool:
    """Whether a REST username's timestamp is in the past (or unparsable)."""
    stamp = username.split(":", 1)[0]
    return not stamp.isdigit() or int(stamp) < now
