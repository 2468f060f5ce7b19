"""SPAKE2 agreement, key confirmation, HKDF derivation and the sealed message cipher."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from delshare.errors import PairingError
from delshare.pairing.cipher import MessageCipher, direction_key
from delshare.pairing.pake import Pake, Side, derive_key


def _run(pw_a: bytes, pw_b: bytes) -> tuple[Pake, Pake]:
    a, b = Pake(pw_a, Side.SENDER), Pake(pw_b, Side.RECEIVER)
    msg_a, msg_b = a.start(), b.start()
    a.finish(msg_b)
    b.finish(msg_a)
    return a, b


def test_both_sides_agree_and_confirm() -> None:
    a, b = _run(b"7-guitar-orbit", b"7-guitar-orbit")
    assert a.key == b.key
    assert len(a.key) == 32
    a.verify_confirmation(b.confirmation())
    b.verify_confirmation(a.confirmation())


def test_wrong_code_detected_at_confirmation_on_both_sides() -> None:
    a, b = _run(b"7-guitar-orbit", b"7-guitar-otter")
    assert a.key != b.key
    with pytest.raises(PairingError, match="wrong code"):
        a.verify_confirmation(b.confirmation())
    with pytest.raises(PairingError, match="wrong code"):
        b.verify_confirmation(a.confirmation())


def test_reflected_confirmation_is_rejected() -> None:
    a, _ = _run(b"pw", b"pw")
    with pytest.raises(PairingError, match="wrong code"):
        a.verify_confirmation(a.confirmation())


def test_reflected_pake_message_is_rejected() -> None:
    a = Pake(b"pw", Side.SENDER)
    with pytest.raises(PairingError):
        a.finish(a.start())


def test_key_before_finish_is_an_error() -> None:
    with pytest.raises(PairingError, match="not finished"):
        _ = Pake(b"pw", Side.SENDER).key


@given(st.binary(max_size=40))
def test_malformed_pake_messages_raise_pairing_error(data: bytes) -> None:
    pake = Pake(b"pw", Side.SENDER)
    pake.start()
    try:
        pake.finish(data)
    except PairingError:
        return
    assert len(pake.key) == 32  # a random valid group element is a legal (useless) message


def test_derive_key_separates_purposes_and_lengths() -> None:
    key = b"k" * 32
    assert derive_key(key, b"a") == derive_key(key, b"a")
    assert derive_key(key, b"a") != derive_key(key, b"b")
    assert derive_key(key, b"a") != derive_key(b"j" * 32, b"a")
    assert len(derive_key(key, b"a", 16)) == 16
    assert len(derive_key(key, b"a", 64)) == 64


def test_sealed_messages_flow_both_ways_in_order() -> None:
    key = b"k" * 32
    sender, receiver = MessageCipher(key, Side.SENDER), MessageCipher(key, Side.RECEIVER)
    for i in range(3):
        assert receiver.open(sender.seal({"n": i})) == {"n": i}
        assert sender.open(receiver.seal({"back": [i]})) == {"back": [i]}


def test_sealed_messages_reject_wrong_key_tamper_replay_and_reflection() -> None:
    sender = MessageCipher(b"k" * 32, Side.SENDER)
    sealed = sender.seal({"secret": 1})
    with pytest.raises(PairingError, match="wrong code or tampered"):
        MessageCipher(b"x" * 32, Side.RECEIVER).open(sealed)
    with pytest.raises(PairingError, match="wrong code or tampered"):
        MessageCipher(b"k" * 32, Side.RECEIVER).open(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    with pytest.raises(PairingError, match="wrong code or tampered"):
        MessageCipher(b"k" * 32, Side.SENDER).open(sealed)  # our own message reflected
    receiver = MessageCipher(b"k" * 32, Side.RECEIVER)
    assert receiver.open(sealed) == {"secret": 1}
    with pytest.raises(PairingError, match="wrong code or tampered"):
        receiver.open(sealed)  # replay: the counter moved on


@pytest.mark.parametrize(
    ("plaintext", "error"),
    [
        (b"[" * 5000, "not JSON"),  # deeper than the parser recurses: an error, not a crash
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "not an object"),
    ],
    ids=["deep-nesting", "bad-utf8", "a-list"],
)
def test_a_sealed_message_that_is_no_json_object_is_a_pairing_error(
    plaintext: bytes, error: str
) -> None:
    """The peer knows the key (it paired) but sends garbage: one clear error."""
    key = b"k" * 32
    first = b"\x00" * 12  # the sender's first message: counter 0
    sealed = ChaCha20Poly1305(direction_key(key, Side.SENDER)).encrypt(first, plaintext, None)
    with pytest.raises(PairingError, match=error):
        MessageCipher(key, Side.RECEIVER).open(sealed)
