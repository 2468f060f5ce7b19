"""Human-typable pairing codes such as ``7-guitar-orbit``.

A code is a *nameplate* (a decimal number, 1..999 unless the rendezvous is busy) followed by
secret words from the shipped wordlist. The nameplate picks the rendezvous mailbox and is the
only part ever sent to the server in clear; the whole code is the PAKE password, so the server
never learns the words. With a rendezvous server the number is allocated by the server (the
sender asks for a fresh one); it draws ``nameplate_candidates`` and takes the first free one, so
short numbers are used first and longer ones only when most short ones are taken.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from random import Random

from delshare.errors import PairingError

MAX_NAMEPLATE = 999_999  # what a typed code may carry
SHORT_NAMEPLATE = 999  # what a locally generated code uses
CANDIDATES_PER_RANGE = 32
MIN_WORDS = 2
MAX_WORDS = 8
DEFAULT_WORDS = 2
_SEPARATORS = re.compile(r"[\s-]+")
_WORD = re.compile(r"[a-z]+")

_SYSTEM_RANDOM = secrets.SystemRandom()


@cache
def wordlist() -> tuple[str, ...]:
    """The shipped wordlist (lowercase ascii, distinct), loaded once."""
    text = files("delshare.pairing").joinpath("wordlist.txt").read_text("ascii")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@cache
def _wordset() -> frozenset[str]:
    return frozenset(wordlist())


@dataclass(frozen=True)
class Code:
    """A parsed pairing code: the clear nameplate and the secret words."""

    nameplate: str
    words: tuple[str, ...]

    @property
    def secret(self) -> str:
        """The secret part, e.g. ``guitar-orbit``."""
        return "-".join(self.words)

    @property
    def password(self) -> bytes:
        """The PAKE password: the whole normalised code (binds the nameplate too)."""
        return str(self).encode("ascii")

    def __str__(self) -> str:
        return f"{self.nameplate}-{self.secret}"


def generate_code(rng: Random = _SYSTEM_RANDOM, words: int = DEFAULT_WORDS) -> str:
    """Return a fresh code like ``7-guitar-orbit`` (pass ``rng`` only in tests)."""
    if not MIN_WORDS <= words <= MAX_WORDS:
        raise ValueError(f"words must be in {MIN_WORDS}..{MAX_WORDS}")
    nameplate = rng.randint(1, SHORT_NAMEPLATE)
    return "-".join([str(nameplate), *generate_words(rng, words)])


def generate_words(rng: Random = _SYSTEM_RANDOM, words: int = DEFAULT_WORDS) -> tuple[str, ...]:
    """Fresh secret words for a code whose number the rendezvous server allocated."""
    if not MIN_WORDS <= words <= MAX_WORDS:
        raise ValueError(f"words must be in {MIN_WORDS}..{MAX_WORDS}")
    return tuple(rng.choice(wordlist()) for _ in range(words))


def nameplate_candidates(rng: Random = _SYSTEM_RANDOM) -> list[str]:
    """Random numbers for the server to try in order: 1..999 first, then 4, then 6 digits."""
    ranges = ((1, SHORT_NAMEPLATE), (1000, 9999), (10_000, MAX_NAMEPLATE))
    return [
        str(rng.randint(low, high)) for low, high in ranges for _ in range(CANDIDATES_PER_RANGE)
    ]


def parse_code(text: str) -> Code:
    """Parse and normalise a typed code (case, spaces, repeated dashes); raise PairingError."""
    parts = [p for p in _SEPARATORS.split(text.strip().lower()) if p]
    if not parts:
        raise PairingError("empty code: expected something like 7-guitar-orbit")
    nameplate = _parse_nameplate(parts[0])
    words = tuple(parts[1:])
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        raise PairingError(
            f"code needs {MIN_WORDS} to {MAX_WORDS} words after the number, got {len(words)}"
        )
    for word in words:
        _check_word(word)
    return Code(nameplate, words)


def _parse_nameplate(part: str) -> str:
    if not part.isascii() or not part.isdecimal():
        raise PairingError(f"code must start with a number, got {part!r}")
    number = int(part)
    if not 1 <= number <= MAX_NAMEPLATE:
        raise PairingError(f"code number must be 1..{MAX_NAMEPLATE}, got {part}")
    return str(number)


def _check_word(word: str) -> None:
    if not _WORD.fullmatch(word):
        raise PairingError(f"code words are letters only, got {word!r}")
    if word not in _wordset():
        raise PairingError(f"unknown code word {word!r} (typo?)")
