"""Long-term credential checks for the TURN server (RFC 8489 §9.2, RFC 8656 §6.2, TURN REST).

Theory of operation: a request without MESSAGE-INTEGRITY(-SHA256) is challenged with 401, REALM, a
NONCE and PASSWORD-ALGORITHMS. Nonces are stateless: the RFC 8489 §9.2 cookie ``obMatJos2``, four
base64 characters of security-feature bits (password algorithms, username anonymity), the expiry
time and a truncated HMAC under a per-server key. The HMAC also covers the client's 5-tuple
(transport, client and server address; ``binding``, not written into the nonce), so a nonce is a
capability for one transport address only: a signed request replayed from another 5-tuple or over
another transport (a new TCP connection, UDP instead of TCP) gets 438 like an expired nonce does,
with a fresh nonce for the new 5-tuple (RFC 8489 §9.2: the server chooses what its nonces encode;
RFC 8656 §21). The key is H(username:realm:password) with H = MD5, or SHA-256 when
the client chose it through PASSWORD-ALGORITHM; clients that send neither PASSWORD-ALGORITHMS nor
PASSWORD-ALGORITHM (coturn's uclient) get MD5 as §9.2.4 says. Users come from a static table or,
with a shared secret, from the TURN REST scheme (username ``<expiry>:<id>``). MACs compare in
constant time (``Message.verify_integrity`` uses ``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from delshare.errors import StunProtocolError
from delshare.stun.attributes import (
    NONCE,
    PASSWORD_ALGORITHM,
    PASSWORD_ALGORITHMS,
    REALM,
    USERHASH,
    USERNAME,
)
from delshare.stun.constants import (
    NONCE_COOKIE,
    PASSWORD_ALGORITHM_MD5,
    PASSWORD_ALGORITHM_SHA256,
    ErrorCode,
)
from delshare.stun.credentials import (
    long_term_key,
    rest_password,
    rest_username_expired,
    userhash,
)
from delshare.stun.message import Message

# RFC 8489 §18.1: bit 0 "Password algorithms", bit 1 "Username anonymity", most significant first.
FEATURE_PASSWORD_ALGORITHMS = 1 << 23
FEATURE_USERNAME_ANONYMITY = 1 << 22
SERVER_FEATURES = FEATURE_PASSWORD_ALGORITHMS | FEATURE_USERNAME_ANONYMITY
OFFERED_ALGORITHMS: tuple[tuple[int, bytes], ...] = (
    (PASSWORD_ALGORITHM_SHA256, b""),
    (PASSWORD_ALGORITHM_MD5, b""),
)
DEFAULT_NONCE_LIFETIME = 600.0


@dataclass(frozen=True)
class AuthConfig:
    """Realm, static users, optional REST shared secret, nonce lifetime in seconds."""

    realm: str
    users: Mapping[str, str] = field(default_factory=dict)
    secret: str | None = None
    nonce_lifetime: float = DEFAULT_NONCE_LIFETIME


@dataclass(frozen=True)
class Credentials:
    """Who sent an authenticated request, and how to sign the answer (RFC 8489 §9.2.4)."""

    username: str
    key: bytes
    sha256: bool


class NonceState(Enum):
    """What a request's NONCE is to this server (RFC 8489 §9.2.4: a stale one gets 438)."""

    VALID = "valid"  # ours, for this 5-tuple, not expired
    STALE = "stale"  # ours and for this 5-tuple, but expired: 438 with a fresh one
    INVALID = "invalid"  # not ours, or issued to another 5-tuple: 438 as well


class CredentialsRefused(StunProtocolError):
    """A 401 challenge answering credentials that were present but wrong (RFC 8489 §9.2.4), as
    opposed to the normal challenge of a request without any. ``failure`` says why
    (``unknown_user``, ``wrong_password``, ``expired``, ``wrong_realm``); ``username`` is as the
    client sent it (unsanitized)."""

    def __init__(self, challenge: StunProtocolError, failure: str, username: str) -> None:
        super().__init__(challenge.code, challenge.reason, *challenge.attributes)
        self.failure = failure
        self.username = username


class Authenticator:
    """Checks long-term credentials on requests; issues and validates nonces."""

    def __init__(self, config: AuthConfig, nonce_key: bytes) -> None:
        self.config = config
        self._nonce_key = nonce_key
        self._userhashes = {userhash(name, config.realm): name for name in config.users}

    # -- nonces ------------------------------------------------------------------------------

    def make_nonce(self, now: float, binding: str = "") -> str:
        """A nonce valid until ``now + nonce_lifetime`` for ``binding`` (RFC 8489 §9.2 cookie
        first); ``binding`` names the client's 5-tuple and transport."""
        features = base64.b64encode(SERVER_FEATURES.to_bytes(3, "big")).decode("ascii")
        expiry = f"{int(now + self.config.nonce_lifetime):x}"
        body = f"{NONCE_COOKIE}{features}{expiry}"
        return f"{body}.{self._nonce_mac(body, binding)}"

    def _nonce_mac(self, body: str, binding: str) -> str:
        signed = f"{body}\n{binding}".encode()
        return hmac.new(self._nonce_key, signed, hashlib.sha256).hexdigest()[:16]

    def nonce_state(self, nonce: str, now: float, binding: str = "") -> NonceState:
        """Whether ``nonce`` is ours, for ``binding``, and not expired (RFC 8489 §9.2.4)."""
        body, _, mac = nonce.rpartition(".")
        prefix = len(NONCE_COOKIE) + 4
        if not body.startswith(NONCE_COOKIE) or len(body) <= prefix:
            return NonceState.INVALID
        if not hmac.compare_digest(mac, self._nonce_mac(body, binding)):
            return NonceState.INVALID
        try:
            expiry = int(body[prefix:], 16)
        except ValueError:
            return NonceState.INVALID
        return NonceState.VALID if expiry >= now else NonceState.STALE

    def challenge(
        self, now: float, code: int = ErrorCode.UNAUTHENTICATED, binding: str = ""
    ) -> StunProtocolError:
        """401 or 438 with REALM, NONCE and PASSWORD-ALGORITHMS (RFC 8489 §9.2.4)."""
        reason = "Stale Nonce" if code == ErrorCode.STALE_NONCE else "Unauthenticated"
        attrs: list[tuple[int, object]] = [
            REALM(self.config.realm),
            NONCE(self.make_nonce(now, binding)),
            PASSWORD_ALGORITHMS(OFFERED_ALGORITHMS),
        ]
        return StunProtocolError(code, reason, *attrs)

    # -- requests ----------------------------------------------------------------------------

    def authenticate(
        self,
        request: Message,
        now: float,
        binding: str = "",
        also: tuple[str, ...] = (),
        session: Credentials | None = None,
    ) -> Credentials:
        """Return the sender's credentials or raise ``StunProtocolError`` (a challenge or a 400).

        Follows the order of RFC 8489 §9.2.4: no integrity → 401; missing USERNAME/USERHASH,
        REALM or NONCE → 400; bad nonce (expired, or issued to another 5-tuple ``binding``) →
        438; unknown user or wrong MAC → 401. Every challenge carries a nonce for ``binding``;
        a nonce issued to one of ``also`` is accepted too (RFC 6062 §5.4: a ConnectionBind on a
        new connection may carry its control connection's nonce).

        ``session`` are the credentials an existing allocation was created with: a request of
        that allocation signed with its key is accepted although the user's password changed
        since (a reload must not cut live relays at their next Refresh, as coturn keeps a
        session's key); a user no longer configured, or an expired REST username, is refused.
        """
        if not request.has_integrity:
            raise self.challenge(now, binding=binding)
        realm = request.get(REALM)
        nonce = request.get(NONCE)
        has_user = request.has(USERNAME) or request.has(USERHASH)
        if realm is None or nonce is None or not has_user:
            raise StunProtocolError(ErrorCode.BAD_REQUEST, "Missing USERNAME, REALM or NONCE")
        state = self.nonce_state(nonce, now, binding)
        for other in also:
            if state != NonceState.INVALID:
                break
            state = self.nonce_state(nonce, now, other)
        if state != NonceState.VALID:
            raise self.challenge(now, ErrorCode.STALE_NONCE, binding)
        algorithm = self._algorithm(request)
        username = self._username(request)
        if username is None:
            named = request.get(USERNAME) or ""
            raise CredentialsRefused(self.challenge(now, binding=binding), "unknown_user", named)
        if realm != self.config.realm:
            raise CredentialsRefused(self.challenge(now, binding=binding), "wrong_realm", username)
        password = self._password(username, now)
        if password is None:
            why = self._unknown_why(username, now)
            raise CredentialsRefused(self.challenge(now, binding=binding), why, username)
        key = _cached_key(username, realm, password, algorithm)
        if not request.verify_integrity(key):
            if (
                session is not None
                and session.username == username
                and request.verify_integrity(session.key)
            ):
                return Credentials(username, session.key, request.uses_sha256_integrity)
            challenge = self.challenge(now, binding=binding)
            raise CredentialsRefused(challenge, "wrong_password", username)
        return Credentials(username, key, request.uses_sha256_integrity)

    def _unknown_why(self, username: str, now: float) -> str:
        """``expired`` for a well-formed TURN REST username past its time, else unknown."""
        stamp = username.split(":", 1)[0]
        if self.config.secret is not None and stamp.isdigit() and int(stamp) < now:
            return "expired"
        return "unknown_user"

    def _algorithm(self, request: Message) -> int:
        """PASSWORD-ALGORITHM negotiation (RFC 8489 §9.2.4 bullet on password algorithms)."""
        offered = request.get(PASSWORD_ALGORITHMS)
        chosen = request.get(PASSWORD_ALGORITHM)
        if offered is None and chosen is None:
            return PASSWORD_ALGORITHM_MD5
        if offered is None or chosen is None:
            raise StunProtocolError(
                ErrorCode.BAD_REQUEST, "PASSWORD-ALGORITHMS and PASSWORD-ALGORITHM go together"
            )
        if tuple(offered) != OFFERED_ALGORITHMS or chosen not in OFFERED_ALGORITHMS:
            raise StunProtocolError(
                ErrorCode.BAD_REQUEST, "PASSWORD-ALGORITHMS tampered or unsupported algorithm"
            )
        return int(chosen[0])

    def _username(self, request: Message) -> str | None:
        name = request.get(USERNAME)
        if name is not None:
            return name
        hashed = request.get(USERHASH)
        return self._userhashes.get(hashed) if hashed is not None else None

    def _password(self, username: str, now: float) -> str | None:
        static = self.config.users.get(username)
        if static is not None:
            return static
        if self.config.secret is not None and not rest_username_expired(username, now):
            return rest_password(self.config.secret, username)
        return None


@functools.lru_cache(maxsize=4096)
def _cached_key(username: str, realm: str, password: str, algorithm: int) -> bytes:
    """Long-term keys are pure functions of their inputs; SASLprep + hash once per user."""
    return long_term_key(username, realm, password, algorithm)
