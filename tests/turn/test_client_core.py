"""The sans-IO TURN client core, driven in memory with an explicit clock.

The server side is written out by hand with the STUN codec, or is the server's own sans-IO
``Authenticator`` (an independent implementation of RFC 8489 §9.2) where that is the point.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delshare.errors import StunProtocolError, TransactionError, TransactionTimeout
from delshare.stun import attributes as at
from delshare.stun.constants import (
    NONCE_COOKIE,
    PASSWORD_ALGORITHM_MD5,
    PASSWORD_ALGORITHM_SHA256,
    Attr,
    MessageClass,
    Method,
)
from delshare.stun.credentials import long_term_key
from delshare.stun.framing import ChannelData
from delshare.stun.message import Message, decode_message, error_response, success_response
from delshare.turn.auth import AuthConfig, Authenticator
from delshare.turn.client import (
    ConnectionAttempted,
    PeerDataReceived,
    TransactionFailed,
    TransactionSucceeded,
    TurnClientCore,
    nonce_offers_password_algorithms,
)
from delshare.turn.client_errors import (
    AllocationError,
    AuthenticationError,
    PeerConnectError,
    ResponseIntegrityError,
    TryAlternateError,
)

USER, PASSWORD, REALM, NONCE = "user", "pass", "del.test", "nonce-1"
KEY = long_term_key(USER, REALM, PASSWORD)


def sent(core: TurnClientCore) -> list[Message]:
    return [decode_message(data) for data in core.data_to_send()]


def only(core: TurnClientCore) -> Message:
    messages = sent(core)
    assert len(messages) == 1
    return messages[0]


def events(core: TurnClientCore) -> list[object]:
    out: list[object] = []
    while (event := core.next_event()) is not None:
        out.append(event)
    return out


def challenge(request: Message, code: int = 401, nonce: str = NONCE) -> bytes:
    reply = error_response(request, code, None, at.REALM(REALM), at.NONCE(nonce))
    return reply.encode()


def authenticated(core: TurnClientCore, method: int = Method.ALLOCATE) -> tuple[bytes, Message]:
    """A request that went through the 401 challenge; returns (handle, authenticated request)."""
    handle = core.request(method, [at.REQUESTED_TRANSPORT(6)], 0.0)
    core.receive(challenge(only(core)), 0.0)
    return handle, only(core)


# -- retransmission (RFC 8489 §6.2.1, §6.2.2) -------------------------------------------------


def test_udp_request_is_resent_on_the_rfc_schedule_then_times_out() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=False)
    handle = core.request(Method.BINDING, [], 0.0, authenticate=False)
    send_times, last = [0.0] * len(core.data_to_send()), 0.0
    while (deadline := core.get_timer()) is not None and deadline < 100:
        core.handle_timer(deadline)
        send_times += [deadline] * len(core.data_to_send())
        last = deadline
    assert send_times == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    (failed,) = events(core)
    assert isinstance(failed, TransactionFailed) and failed.handle == handle
    assert isinstance(failed.error, TransactionTimeout)
    assert last == pytest.approx(39.5)


def test_udp_retransmissions_are_byte_identical() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=False)
    core.request(Method.BINDING, [], 0.0, authenticate=False)
    first = core.data_to_send()
    core.handle_timer(0.5)
    assert core.data_to_send() == first


def test_tcp_request_is_sent_once_and_times_out_after_39_5_s() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    core.request(Method.BINDING, [], 10.0, authenticate=False)
    assert len(core.data_to_send()) == 1
    assert core.get_timer() == pytest.approx(49.5)
    core.handle_timer(49.4)
    assert core.data_to_send() == [] and events(core) == []
    core.handle_timer(49.5)
    (failed,) = events(core)
    assert isinstance(failed, TransactionFailed)
    assert isinstance(failed.error, TransactionTimeout)
    assert core.get_timer() is None


def test_a_response_stops_retransmission() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=False)
    handle = core.request(Method.BINDING, [], 0.0, authenticate=False)
    request = only(core)
    core.receive(success_response(request, at.XOR_MAPPED_ADDRESS(("192.0.2.1", 5))).encode(), 0.1)
    (done,) = events(core)
    assert isinstance(done, TransactionSucceeded) and done.handle == handle
    assert done.response.get(at.XOR_MAPPED_ADDRESS) == ("192.0.2.1", 5)
    assert core.get_timer() is None


# -- long-term authentication (RFC 8489 §9.2) -------------------------------------------------


def test_401_teaches_realm_and_nonce_and_the_request_is_resent_signed() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    handle, again = authenticated(core)
    assert again.get(at.USERNAME) == USER
    assert again.get(at.REALM) == REALM
    assert again.get(at.NONCE) == NONCE
    assert again.get(at.REQUESTED_TRANSPORT) == 6
    assert again.verify_integrity(KEY) and not again.uses_sha256_integrity
    core.receive(success_response(again).encode(KEY), 0.0)
    (done,) = events(core)
    assert isinstance(done, TransactionSucceeded) and done.handle == handle


def test_later_requests_carry_credentials_from_the_start() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    _, again = authenticated(core)
    core.receive(success_response(again).encode(KEY), 0.0)
    core.request(Method.REFRESH, [], 1.0)
    assert only(core).verify_integrity(KEY)


def test_401_to_signed_request_with_same_nonce_is_wrong_credentials() -> None:
    core = TurnClientCore(USER, "wrong", reliable=True)
    handle, again = authenticated(core)
    core.receive(challenge(again), 0.0)
    (failed,) = events(core)
    assert isinstance(failed, TransactionFailed) and failed.handle == handle
    assert isinstance(failed.error, AuthenticationError)
    assert failed.error.code == 401
    assert sent(core) == []


def test_401_with_a_new_nonce_is_retried_once() -> None:
    """A fresh connection (RFC 6062 data connection) may not know the nonce we learnt."""
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    _, again = authenticated(core)
    core.receive(challenge(again, nonce="nonce-2"), 0.0)
    third = only(core)
    assert third.get(at.NONCE) == "nonce-2"
    core.receive(challenge(third, nonce="nonce-3"), 0.0)
    (failed,) = events(core)
    assert isinstance(failed, TransactionFailed)
    assert isinstance(failed.error, AuthenticationError)


def test_438_is_retried_with_the_new_nonce_and_counted() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    handle, again = authenticated(core)
    core.receive(challenge(again, 438, "fresh"), 0.0)
    retry = only(core)
    assert retry.get(at.NONCE) == "fresh" and retry.verify_integrity(KEY)
    assert retry.transaction_id != again.transaction_id
    core.receive(success_response(retry).encode(KEY), 0.0)
    (done,) = events(core)
    assert isinstance(done, TransactionSucceeded) and done.handle == handle
    assert core.auth.stale_nonces == 1


def test_endless_438_gives_up() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    _, request = authenticated(core)
    for round_ in range(10):
        core.receive(challenge(request, 438, f"n{round_}"), 0.0)
        out = sent(core)
        if not out:
            break
        request = out[0]
    (failed,) = events(core)
    assert isinstance(failed, TransactionFailed)
    assert isinstance(failed.error, TransactionError) and failed.error.code == 438
    assert core.auth.stale_nonces == 3


def test_fork_shares_credentials_for_a_data_connection() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    authenticated(core)
    data_core = core.fork()
    data_core.request(Method.CONNECTION_BIND, [at.CONNECTION_ID(7)], 0.0)
    bind = only(data_core)
    assert bind.get(at.NONCE) == NONCE and bind.verify_integrity(KEY)
    assert sent(core) == []


@pytest.mark.parametrize("offer_sha256", [True, False])
def test_password_algorithms_against_the_server_authenticator(offer_sha256: bool) -> None:
    """RFC 8489 §9.2.4: SHA-256 key and MESSAGE-INTEGRITY-SHA256 when the nonce cookie offers it."""
    server = Authenticator(AuthConfig(REALM, {USER: PASSWORD}), b"k" * 32)
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    handle = core.request(Method.ALLOCATE, [at.REQUESTED_TRANSPORT(6)], 0.0)
    first = only(core)
    with pytest.raises(StunProtocolError) as info:
        server.authenticate(first, 1000.0)
    reply = error_response(first, info.value.code, info.value.reason)
    for kind, value in info.value.attributes:
        if offer_sha256 or kind != Attr.PASSWORD_ALGORITHMS:
            reply.add(kind, value)
    core.receive(reply.encode(), 0.0)
    again = only(core)
    credentials = server.authenticate(again, 1000.0)
    assert again.uses_sha256_integrity is offer_sha256
    chosen = again.get(at.PASSWORD_ALGORITHM)
    if offer_sha256:
        assert chosen == (PASSWORD_ALGORITHM_SHA256, b"")
    else:
        assert chosen is None
    core.receive(success_response(again).encode(credentials.key, sha256=offer_sha256), 0.0)
    (done,) = events(core)
    assert isinstance(done, TransactionSucceeded) and done.handle == handle


def test_nonce_cookie_feature_bits() -> None:
    assert nonce_offers_password_algorithms(NONCE_COOKIE + "gAAA" + "rest")
    assert not nonce_offers_password_algorithms(NONCE_COOKIE + "QAAA" + "rest")  # bit 1 only
    assert not nonce_offers_password_algorithms("gAAA" + "rest")
    assert not nonce_offers_password_algorithms(NONCE_COOKIE + "!!!!")
    assert PASSWORD_ALGORITHM_MD5 == 1


# -- response integrity and typed errors -------------------------------------------------------


def test_tcp_response_with_wrong_integrity_fails_fast() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    _, again = authenticated(core)
    core.receive(success_response(again).encode(b"not the key"), 0.0)
    (failed,) = events(core)
    assert isinstance(failed, TransactionFailed)
    assert isinstance(failed.error, ResponseIntegrityError)


def test_udp_response_with_wrong_or_missing_integrity_is_discarded() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=False)
    handle, again = authenticated(core)
    core.receive(success_response(again).encode(b"not the key"), 0.1)
    core.receive(success_response(again).encode(), 0.2)
    assert events(core) == []
    core.receive(success_response(again).encode(KEY), 0.3)
    (done,) = events(core)
    assert isinstance(done, TransactionSucceeded) and done.handle == handle


def test_300_surfaces_the_alternate_server() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    _, again = authenticated(core)
    reply = error_response(again, 300, None, at.ALTERNATE_SERVER(("192.0.2.7", 3478)))
    core.receive(reply.encode(KEY), 0.0)
    (failed,) = events(core)
    assert isinstance(failed, TransactionFailed)
    assert isinstance(failed.error, TryAlternateError)
    assert failed.error.alternate == ("192.0.2.7", 3478)


@pytest.mark.parametrize(
    ("method", "code", "kind"),
    [
        (Method.ALLOCATE, 442, AllocationError),
        (Method.REFRESH, 437, AllocationError),
        (Method.CONNECT, 447, PeerConnectError),
        (Method.CONNECT, 403, PeerConnectError),
        (Method.CREATE_PERMISSION, 403, TransactionError),
        (Method.ALLOCATE, 441, AuthenticationError),
    ],
)
def test_error_responses_raise_typed_errors_with_code_and_reason(
    method: int, code: int, kind: type[TransactionError]
) -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    _, again = authenticated(core, method)
    core.receive(error_response(again, code, "Because  ").encode(KEY), 0.0)
    (failed,) = events(core)
    assert isinstance(failed, TransactionFailed)
    assert type(failed.error) is kind
    assert isinstance(failed.error, TransactionError)
    assert (failed.error.code, failed.error.reason) == (code, "Because")


def test_response_to_another_method_or_transaction_is_ignored() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    _, again = authenticated(core)
    wrong_method = Message(Method.REFRESH, MessageClass.SUCCESS, again.transaction_id)
    core.receive(wrong_method.encode(KEY), 0.0)
    core.receive(Message(Method.ALLOCATE, MessageClass.SUCCESS).encode(KEY), 0.0)
    assert events(core) == []


# -- indications and ChannelData --------------------------------------------------------------


def test_connection_attempt_becomes_an_event() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    indication = Message(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION)
    indication.add(at.XOR_PEER_ADDRESS, ("198.51.100.4", 4242)).add(at.CONNECTION_ID, 99)
    core.receive(indication.encode(), 0.0)
    assert events(core) == [ConnectionAttempted(99, ("198.51.100.4", 4242))]


def test_data_indication_and_channel_data_become_peer_data() -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=False)
    peer = ("198.51.100.4", 4242)
    data = Message(Method.DATA, MessageClass.INDICATION)
    data.add(at.XOR_PEER_ADDRESS, peer).add(at.DATA, b"hello")
    core.receive(data.encode(), 0.0)
    core.receive(ChannelData(0x4001, b"early").encode(), 0.0)  # not bound yet: dropped
    assert events(core) == [PeerDataReceived(peer, b"hello")]
    _, allocate = authenticated(core)
    core.receive(success_response(allocate).encode(KEY), 0.0)
    bind_attrs = [
        at.CHANNEL_NUMBER(0x4001),
        at.XOR_PEER_ADDRESS(peer),
    ]
    core.request(Method.CHANNEL_BIND, bind_attrs, 0.0)
    request = only(core)
    core.receive(success_response(request).encode(KEY), 0.0)
    events(core)
    core.receive(ChannelData(0x4001, b"bound").encode(pad=False), 0.0)
    assert events(core) == [PeerDataReceived(peer, b"bound")]


@given(st.binary(max_size=200))
def test_random_frames_never_raise(frame: bytes) -> None:
    core = TurnClientCore(USER, PASSWORD, reliable=True)
    core.request(Method.BINDING, [], 0.0)
    core.receive(frame, 0.0)
