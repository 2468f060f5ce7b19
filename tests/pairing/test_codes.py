"""Pairing codes: wordlist, generation, parsing and normalisation."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delshare.errors import PairingError
from delshare.pairing.codes import Code, generate_code, parse_code, wordlist


def test_wordlist_is_large_distinct_and_simple() -> None:
    words = wordlist()
    assert len(words) >= 256
    assert len(set(words)) == len(words)
    assert all(re.fullmatch(r"[a-z]{3,8}", w) for w in words)


@given(seed=st.integers(), count=st.integers(min_value=2, max_value=8))
def test_generated_codes_parse_back(seed: int, count: int) -> None:
    text = generate_code(random.Random(seed), words=count)
    code = parse_code(text)
    assert str(code) == text
    assert 1 <= int(code.nameplate) <= 999
    assert len(code.words) == count


def test_default_code_shape() -> None:
    assert re.fullmatch(r"[1-9][0-9]{0,2}-[a-z]+-[a-z]+", generate_code())


@pytest.mark.parametrize(
    "text",
    [
        "7-guitar-orbit",
        "  7-Guitar-ORBIT\n",
        "7 guitar orbit",
        "007--guitar - orbit",
        "-7-guitar-orbit",
    ],
)
def test_parse_normalises(text: str) -> None:
    assert parse_code(text) == Code("7", ("guitar", "orbit"))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("guitar-orbit-fox", "number"),
        ("0-guitar-orbit", "1..999999"),
        ("1000000-guitar-orbit", "1..999999"),
        ("\u0667-guitar-orbit", "number"),
        ("7-guitar", "words"),
        ("7", "words"),
        ("7-a-b-c-d-e-f-g-h-i", "words"),
        ("7-guitar-xyzzy", "unknown code word"),
        ("7-gu1tar-orbit", "letters only"),
        ("7-guitar-\u00f6rbit", "letters only"),
    ],
)
def test_malformed_codes_are_rejected(text: str, reason: str) -> None:
    with pytest.raises(PairingError, match=reason):
        parse_code(text)


@given(st.text(max_size=60))
def test_any_text_parses_or_raises_pairing_error(text: str) -> None:
    try:
        code = parse_code(text)
    except PairingError:
        return
    assert parse_code(str(code)) == code


def test_code_parts_and_password() -> None:
    code = parse_code("42-lemon-tiger")
    assert code.nameplate == "42"
    assert code.secret == "lemon-tiger"
    assert code.password == b"42-lemon-tiger"
    assert parse_code("43-lemon-tiger").password != code.password


def test_generate_rejects_too_few_words() -> None:
    with pytest.raises(ValueError, match="words"):
        generate_code(words=1)
