"""One home for reading the JSON a peer sent: each field checked for type, range and size.

Every JSON wire format (docs/protocol.md) is read through a :class:`Fields` view of one decoded
object. A read names the field and what it must be; anything else raises the error the caller
chose for its layer (``PairingError``, ``CandidateError``, ``LinkProtocolError``...), carrying
one clear message and never a guess. Unknown fields are ignored, so a field may be added to a
format without a new version as long as an older reader may safely skip it (docs/protocol.md,
"Versioning"). ``bool`` is never taken for an integer, though Python's ``json`` would allow it.

Versions: a JSON format says its version in the field ``"v"`` (:data:`VERSION_FIELD`), and a
reader asks :meth:`Fields.version` which versions it speaks. Sans-IO: no sockets, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

__all__ = ["VERSION_FIELD", "ErrorFactory", "Fields"]

T = TypeVar("T")
ErrorFactory = Callable[[str], Exception]
"""Makes the caller's error from a message, e.g. ``PairingError``."""
VERSION_FIELD = "v"


class _Missing:
    pass


_MISSING: Any = _Missing()


class Fields:
    """Typed reads of one JSON object from a peer; ``what`` names it in error messages."""

    def __init__(self, obj: object, error: ErrorFactory, what: str = "message") -> None:
        if not isinstance(obj, dict):
            raise error(f"{what} is not a JSON object")
        self._obj: dict[str, object] = obj
        self._error = error
        self._what = what

    def _get(self, name: str, default: object) -> object:
        if name in self._obj:
            return self._obj[name]
        if default is _MISSING:
            raise self._fail(name, "is missing")
        return default

    def _fail(self, name: str, problem: str) -> Exception:
        return self._error(f"{self._what}: {name!r} {problem}")

    def text(self, name: str, *, max_len: int, default: str = _MISSING) -> str:
        """A string of at most ``max_len`` characters."""
        value = self._get(name, default)
        if not isinstance(value, str) or len(value) > max_len:
            raise self._fail(name, f"must be a string of at most {max_len} characters")
        return value

    def integer(self, name: str, low: int, high: int, *, default: int = _MISSING) -> int:
        """An integer in ``[low, high]`` (never a bool)."""
        value = self._get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self._fail(name, f"must be an integer from {low} to {high}")
        return value

    def flag(self, name: str, *, default: bool = _MISSING) -> bool:
        """``true`` or ``false``."""
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self._fail(name, "must be true or false")
        return value

    def one_of(self, name: str, choices: Sequence[T], *, default: T = _MISSING) -> T:
        """One of ``choices`` (compared by equality; the choice itself is returned)."""
        value = self._get(name, default)
        for choice in choices:
            if value == choice and type(value) is type(choice):
                return choice
        raise self._fail(name, f"must be one of {', '.join(map(repr, choices))}")

    def items(self, name: str, *, max_len: int, default: list[object] = _MISSING) -> list[object]:
        """A list of at most ``max_len`` items, each still to be checked by the caller."""
        value = self._get(name, default)
        if not isinstance(value, list) or len(value) > max_len:
            raise self._fail(name, f"must be a list of at most {max_len} items")
        return value

    def nested(self, name: str) -> Fields:
        """A JSON object inside this one, read the same way."""
        return Fields(self._get(name, _MISSING), self._error, f"{self._what}.{name}")

    def version(self, supported: Collection[int], *, default: int = _MISSING) -> int:
        """The format's version (field ``"v"``); one this reader speaks."""
        value = self.integer(VERSION_FIELD, 0, 1 << 16, default=default)
        if value not in supported:
            speaks = ", ".join(str(v) for v in sorted(supported))
            raise self._error(f"unsupported protocol version {value} (this side speaks {speaks})")
        return value
