"""One home for reading the JSON a peer sent: each field checked for type, range and size.

Every JSON wire format (docs/protocol.md) is read through a :class:`Fields` view of one decoded
object. A read names the field and what it must be; anything else raises the error the caller
chose for its layer (``PairingError``, ``CandidateError``, ``LinkProtocolError``...), carrying
one clear message and never a guess. Unknown fields are ignored, so a field may be added to a
format without a new version as long as an older reader may safely skip it (docs/protocol.md,
"Versioning"). ``bool`` is never taken for an integer, though Python's ``json`` would allow it.

Versions: a JSON format says its version in the field ``"v"`` (:data:`VERSION_FIELD`), and a
reader asks :meth:`Fields.version` which versions it speaks; a format with several messages names
each in ``"type"`` (:meth:`Fields.message_type`). :meth:`Fields.load` decodes the bytes first:
not JSON, not UTF-8 or nested too deeply to parse is the caller's error too, never a crash.
Sans-IO: no sockets, no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeGuard, TypeVar

__all__ = ["VERSION_FIELD", "ErrorFactory", "Fields"]

T = TypeVar("T")
ErrorFactory = Callable[[str], Exception]
"""Makes the caller's error from a message, e.g. ``PairingError``."""
VERSION_FIELD = "v"


class _Missing:
    pass


_MISSING: Any = _Missing()
_HEX = re.compile(r"[0-9a-fA-F]*")


class Fields:
    """Typed reads of one JSON object from a peer; ``what`` names it in error messages."""

    def __init__(self, obj: object, error: ErrorFactory, what: str = "message") -> None:
        if not isinstance(obj, dict):
            raise error(f"{what} is not a JSON object")
        self._obj: dict[str, object] = obj
        self._error = error
        self._what = what

    @classmethod
    def load(cls, data: str | bytes, error: ErrorFactory, what: str = "message") -> Fields:
        """Decode one JSON object a peer sent (bytes as UTF-8, as ``json`` detects them)."""
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):  # bad UTF-8 is a ValueError; deep nesting recurses
            raise error(f"{what} is not JSON") from None
        return cls(obj, error, what)

    def named(self, what: str) -> Fields:
        """The same object, named ``what`` in error messages (e.g. once its type is known)."""
        return Fields(self._obj, self._error, what)

    def _get(self, name: str, default: object) -> object:
        value = self._obj.get(name, default)
        if value is _MISSING:
            raise self._fail(name, "is missing")
        return value

    def _fail(self, name: str, problem: str) -> Exception:
        return self._error(f"{self._what}: {name!r} {problem}")

    def text(
        self,
        name: str,
        *,
        max_len: int,
        default: str = _MISSING,
        matching: re.Pattern[str] | None = None,
    ) -> str:
        """A string of at most ``max_len`` characters; with ``matching``, one it fully matches."""
        value = self._get(name, default)
        if not isinstance(value, str) or len(value) > max_len:
            raise self._fail(name, f"must be a string of at most {max_len} characters")
        if matching is not None and value is not default and not matching.fullmatch(value):
            raise self._fail(name, f"must match {matching.pattern}")
        return value

    def message_type(self, known: Collection[str], name: str = "type") -> str:
        """The message's type: a string in ``known``, else "unknown message type 'x'"."""
        kind = self.text(name, max_len=64)
        if kind not in known:
            raise self._error(f"unknown message type {kind!r}")
        return kind

    def has(self, name: str) -> bool:
        """Is the field present (even as ``null``)?"""
        return name in self._obj

    def null(self, name: str) -> bool:
        """Is the field absent or ``null``?"""
        return self._obj.get(name) is None

    def shown(self, name: str, max_len: int = 20) -> str:
        """The field's value as text, cut to ``max_len``, for an error message that quotes it."""
        value = self._obj.get(name)
        text = str(value) if isinstance(value, int | float | str | None) else type(value).__name__
        return text[:max_len]

    def hex(self, name: str, size: int) -> bytes:
        """``size`` bytes written as ``2 * size`` hex digits."""
        value = _hex_bytes(self._get(name, _MISSING), size)
        if value is None:
            raise self._fail(name, f"must be {2 * size} hex digits")
        return value

    def integer(self, name: str, low: int, high: int, *, default: int = _MISSING) -> int:
        """An integer in ``[low, high]`` (never a bool)."""
        value = self._get(name, default)
        if type(value) is not int or not low <= value <= high:  # JSON ints: exactly int, no bool
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

    def texts(
        self,
        name: str,
        *,
        max_items: int,
        max_len: int,
        min_len: int = 0,
        default: list[str] = _MISSING,
    ) -> list[str]:
        """A list of at most ``max_items`` strings of ``min_len`` to ``max_len`` characters."""
        value = self._get(name, default)
        if not (
            isinstance(value, list)
            and len(value) <= max_items
            and all(isinstance(v, str) and min_len <= len(v) <= max_len for v in value)
        ):
            raise self._fail(
                name,
                f"must be a list of at most {max_items} strings of {min_len} to {max_len} "
                "characters",
            )
        return list(value)

    def integers(
        self, name: str, low: int, high: int, *, max_items: int, default: list[int] = _MISSING
    ) -> list[int]:
        """A list of at most ``max_items`` integers in ``[low, high]`` (never bools)."""
        value = self._get(name, default)
        if not (
            isinstance(value, list)
            and len(value) <= max_items
            and all(_is_int(v) and low <= v <= high for v in value)
        ):
            raise self._fail(
                name, f"must be a list of at most {max_items} integers from {low} to {high}"
            )
        return list(value)

    def hexes(
        self, name: str, size: int, *, max_items: int, default: list[bytes] = _MISSING
    ) -> list[bytes]:
        """A list of at most ``max_items`` values of ``size`` bytes, each as hex digits."""
        value = self._get(name, default)
        if value is default:
            return list(default)
        found = [_hex_bytes(v, size) for v in value] if isinstance(value, list) else [None]
        if len(found) > max_items or any(v is None for v in found):
            raise self._fail(
                name, f"must be a list of at most {max_items} strings of {2 * size} hex digits"
            )
        return [v for v in found if v is not None]

    def objects(
        self, name: str, *, max_items: int, default: list[Fields] = _MISSING
    ) -> list[Fields]:
        """A list of at most ``max_items`` JSON objects, each read the same way."""
        value = self._get(name, default)
        if value is default:
            return list(default)
        if not isinstance(value, list) or len(value) > max_items:
            raise self._fail(name, f"must be a list of at most {max_items} JSON objects")
        return [
            Fields(item, self._error, f"{self._what}.{name}[{i}]") for i, item in enumerate(value)
        ]

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


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _hex_bytes(value: object, size: int) -> bytes | None:
    """``size`` bytes from exactly ``2 * size`` hex digits, else None."""
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        return None
    return bytes.fromhex(value)
