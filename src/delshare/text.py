"""The one sanitizer for text that came from a peer or a server, before it reaches a terminal.

A peer's refusal reason, an error text, a file name, a server's reason phrase: any of them can
carry terminal escape sequences (retitle the window, clear the screen, move the cursor to forge a
"transfer complete" line), C0/C1 control characters, or Unicode bidi overrides and isolates that
make ``evil\\u202etxt.exe`` look like ``evilexe.txt``. :func:`printable` makes such text safe by
*escaping* rather than deleting: every character that could move the cursor, change the
terminal's state or reorder what is shown becomes a visible ``\\xNN`` / ``\\uNNNN`` escape, so
what is printed still identifies what was sent (a name shown is the name on disk, escapes
included). :func:`json_line` keeps the raw value for programs (``--json``) but writes the same
characters as JSON ``\\uNNNN`` escapes, so the JSON stream is safe on a terminal too.

Escaped: Unicode categories Cc (C0, DEL, C1, including ESC and the 8-bit CSI), Cf (format:
bidi embeddings/overrides U+202A-202E, isolates U+2066-2069, marks U+200E/U+200F/U+061C,
zero-width space, soft hyphen, BOM ...; except the zero-width (non-)joiners U+200C/U+200D that
emoji and Persian script need), Zl/Zp (U+2028/U+2029 break lines), Cs (lone surrogates from
undecodable file-name bytes).
"""

from __future__ import annotations

import json
import unicodedata
from functools import lru_cache

__all__ = ["is_printable", "json_line", "printable"]

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_ALLOWED_FORMAT = frozenset({"\u200c", "\u200d"})  # ZWNJ, ZWJ: joiners, not reordering


@lru_cache(maxsize=4096)
def _unsafe(char: str) -> bool:
    if char in _ALLOWED_FORMAT:
        return False
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object) -> str:
    """``text`` (``str()`` of it) with every unsafe character written as a visible escape.

    ``printable("a\\x1b]0;t\\x07")`` is ``'a\\\\x1b]0;t\\\\x07'``: the escape sequence is shown,
    not obeyed. Text without unsafe characters comes back unchanged.
    """
    value = text if isinstance(text, str) else str(text)
    if is_printable(value):
        return value
    return "".join(_escape(c) if _unsafe(c) else c for c in value)


def is_printable(text: str) -> bool:
    """Whether :func:`printable` leaves ``text`` unchanged (no unsafe character in it)."""
    if text.isprintable():  # fast path: False for every unsafe category (and a few harmless)
        return True
    return not any(_unsafe(c) for c in text)


def json_line(obj: object) -> str:
    """``obj`` as one line of JSON whose strings keep their raw values, terminal-safe.

    Non-ASCII text stays readable (``ensure_ascii=False``), but unsafe characters (which can only
    occur inside JSON strings) are written as ``\\uNNNN`` escapes: a program decoding the line
    gets the exact original string, a terminal showing it obeys nothing.
    """
    text = json.dumps(obj, ensure_ascii=False)
    if is_printable(text):
        return text
    return "".join(json.dumps(c)[1:-1] if _unsafe(c) else c for c in text)
