"""STUN messages: header, ordered attributes, integrity and fingerprint (RFC 8489 §5, §14).

A ``Message`` keeps its attributes as an ordered list, because integrity and fingerprint depend on
position and duplicates matter. ``decode_message`` keeps the raw bytes so integrity can be checked
afterwards with a key that depends on the message's own USERNAME and REALM.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar, cast, overload

from delshare.errors import MalformedRequestError, StunDecodeError
from delshare.stun.attributes import (
    ATTRIBUTES,
    ERROR_CODE,
    Attribute,
    AttrSpec,
    is_comprehension_required,
)
from delshare.stun.constants import (
    FINGERPRINT_XOR,
    HEADER_LENGTH,
    MAGIC_COOKIE,
    REASONS,
    Attr,
    MessageClass,
    Method,
)

# plain ints for the decoder's per-attribute comparisons (an enum member's lookup costs more)
_MI, _MI256, _FINGERPRINT = (
    int(Attr.MESSAGE_INTEGRITY), int(Attr.MESSAGE_INTEGRITY_SHA256), int(Attr.FINGERPRINT)
)  # fmt: skip
_AFTER_INTEGRITY_ALLOWED = frozenset({_MI256, _FINGERPRINT})
_APPENDED = frozenset({_MI, _MI256, _FINGERPRINT})  # ``encode`` computes these itself
T = TypeVar("T")
Key = AttrSpec[Any] | int
"""An attribute's typed key (its :class:`AttrSpec`), or the bare type code of an attribute the
table does not know (its value is the raw bytes, or whatever a test put there)."""


def new_transaction_id() -> bytes:
    """96 random bits (RFC 8489 §5)."""
    return os.urandom(12)


def encode_type(method: int, cls: int) -> int:
    """Interleave method bits with class bits C0 (bit 4) and C1 (bit 8) (RFC 8489 §5)."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 0b01) << 4)
        | ((cls & 0b10) << 7)
    )


def decode_type(value: int) -> tuple[int, int]:
    """Split a message type into (method, class) (RFC 8489 §5)."""
    method = (value & 0x000F) | ((value & 0x00E0) >> 1) | ((value & 0x3E00) >> 2)
    cls = ((value >> 4) & 0b01) | ((value >> 7) & 0b10)
    return method, cls


@dataclass
class Message:
    """One STUN message. ``raw`` and the integrity offsets are set by ``decode_message``."""

    method: int
    cls: MessageClass
    transaction_id: bytes = field(default_factory=new_transaction_id)
    attributes: list[Attribute] = field(default_factory=list)
    unknown_required: list[int] = field(default_factory=list)
    raw: bytes = b""
    integrity_offset: int | None = None
    integrity_sha256_offset: int | None = None

    @overload
    def add(self, key: AttrSpec[T], value: T) -> Message: ...

    @overload
    def add(self, key: int, value: object) -> Message: ...

    def add(self, key: Key, value: object) -> Message:
        """Append an attribute; returns self to allow chaining."""
        self.attributes.append(Attribute(_code(key), value))
        return self

    def extend(self, attributes: Iterable[tuple[int, object]]) -> Message:
        """Append attributes made by their keys (``LIFETIME(600)``); returns self."""
        self.attributes += (Attribute(int(kind), value) for kind, value in attributes)
        return self

    @overload
    def get(self, key: AttrSpec[T]) -> T | None: ...

    @overload
    def get(self, key: int) -> object: ...

    def get(self, key: Key) -> object:
        """The first value of the attribute, or None; typed by its key (RFC 8489 §14)."""
        code = key.type if isinstance(key, AttrSpec) else int(key)  # _code, inlined: hot
        for kind, value in self.attributes:
            if kind == code:
                return value
        return None

    @overload
    def get_all(self, key: AttrSpec[T]) -> list[T]: ...

    @overload
    def get_all(self, key: int) -> list[object]: ...

    def get_all(self, key: Key) -> list[Any]:
        """Every value of the attribute, in order."""
        code = _code(key)
        return [value for kind, value in self.attributes if kind == code]

    def has(self, key: Key) -> bool:
        """Whether the attribute is present."""
        code = key.type if isinstance(key, AttrSpec) else int(key)  # _code, inlined: hot
        for kind, _value in self.attributes:  # noqa: SIM110 (any(genexpr) costs ~3x more here)
            if kind == code:
                return True
        return False

    @property
    def error(self) -> tuple[int, str] | None:
        """(code, reason) of an error response."""
        return self.get(ERROR_CODE)

    @property
    def method_name(self) -> str:
        """The method's name, for logs and errors."""
        return _METHOD_NAMES.get(self.method) or f"0x{self.method:03x}"

    def encode(
        self,
        integrity_key: bytes | None = None,
        *,
        sha256: bool = False,
        fingerprint: bool = False,
    ) -> bytes:
        """Serialise, appending MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT (RFC 8489 §14.5-7).

        Any integrity or fingerprint attributes already in the list are skipped.
        """
        body = bytearray()
        for kind, value in self.attributes:
            if kind in _APPENDED:
                continue
            body += _encode_attribute(kind, value, self.transaction_id)
        msg_type = encode_type(self.method, self.cls)
        if integrity_key is not None:
            mac_type, mac_len = (
                (Attr.MESSAGE_INTEGRITY_SHA256, 32) if sha256 else (Attr.MESSAGE_INTEGRITY, 20)
            )
            header = self._header(msg_type, len(body) + 4 + mac_len)
            mac = _mac(integrity_key, bytes(header + body), sha256)
            body += struct.pack("!HH", mac_type, mac_len) + mac
        if fingerprint:
            header = self._header(msg_type, len(body) + 8)
            crc = (binascii.crc32(bytes(header + body)) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            body += struct.pack("!HHI", Attr.FINGERPRINT, 4, crc)
        return bytes(self._header(msg_type, len(body)) + body)

    def _header(self, msg_type: int, length: int) -> bytes:
        return struct.pack("!HHI", msg_type, length, MAGIC_COOKIE) + self.transaction_id

    def verify_integrity(self, key: bytes) -> bool:
        """Check MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY (RFC 8489 §9.2.4)."""
        for offset, sha256 in (
            (self.integrity_sha256_offset, True),
            (self.integrity_offset, False),
        ):
            if offset is not None:
                return _verify_at(self.raw, offset, key, sha256)
        return False

    @property
    def uses_sha256_integrity(self) -> bool:
        """Whether the message carried MESSAGE-INTEGRITY-SHA256."""
        return self.integrity_sha256_offset is not None

    @property
    def has_integrity(self) -> bool:
        """Whether the message carried either integrity attribute."""
        return self.integrity_offset is not None or self.integrity_sha256_offset is not None


_METHOD_NAMES = {int(method): method.name for method in Method}  # one lookup per request
_TLV = struct.Struct("!HH")  # an attribute's type and length (RFC 8489 §14)
# Attribute((kind, value)) made in C, without the named tuple's Python-level __new__
_attribute = cast(Callable[[tuple[int, object]], Attribute], partial(tuple.__new__, Attribute))


def _code(key: Key) -> int:
    return key.type if isinstance(key, AttrSpec) else int(key)


def _mac(key: bytes, data: bytes, sha256: bool) -> bytes:
    return hmac.new(key, data, hashlib.sha256 if sha256 else hashlib.sha1).digest()


def _verify_at(raw: bytes, offset: int, key: bytes, sha256: bool) -> bool:
    mac_len = struct.unpack("!H", raw[offset + 2 : offset + 4])[0]
    length = offset - HEADER_LENGTH + 4 + mac_len
    data = raw[:2] + struct.pack("!H", length) + raw[4:offset]
    expected = _mac(key, data, sha256)[:mac_len]
    return hmac.compare_digest(expected, raw[offset + 4 : offset + 4 + mac_len])


def _encode_attribute(kind: int, value: object, tid: bytes) -> bytes:
    spec = ATTRIBUTES.get(kind)
    if spec is None:
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"unknown attribute 0x{kind:04x} needs a bytes value")
        data = bytes(value)
    else:
        data = spec.encode(value, tid)
    return struct.pack("!HH", kind, len(data)) + data + bytes(-len(data) % 4)


def error_response(
    request: Message, code: int, reason: str | None = None, *extra: tuple[int, object]
) -> Message:
    """An error response to ``request`` with ERROR-CODE (RFC 8489 §6.3.4)."""
    msg = Message(request.method, MessageClass.ERROR, request.transaction_id)
    msg.add(ERROR_CODE, (int(code), reason or REASONS.get(code, "Error")))
    return msg.extend(extra)


def success_response(request: Message, *attrs: tuple[int, object]) -> Message:
    """A success response to ``request`` (RFC 8489 §6.3.1)."""
    return Message(request.method, MessageClass.SUCCESS, request.transaction_id).extend(attrs)


def is_stun(data: bytes) -> bool:
    """Cheap test: two zero bits and the magic cookie (RFC 8489 §5)."""
    return len(data) >= HEADER_LENGTH and data[0] < 0x40 and data[4:8] == b"\x21\x12\xa4\x42"


def decode_message(data: bytes) -> Message:
    """Parse one whole STUN message; raise ``StunDecodeError`` on anything malformed.

    Attributes after MESSAGE-INTEGRITY are ignored except MESSAGE-INTEGRITY-SHA256 and
    FINGERPRINT; after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT (RFC 8489 §14.5, §14.6).
    A wrong FINGERPRINT is a decode error (RFC 8489 §7.3: discarded silently). Any other fault
    after a valid header (an attribute TLV that overruns, a value of the wrong length or family,
    a USERNAME over 513 bytes) raises ``MalformedRequestError``, which carries the header so a
    server can answer a request with 400 (RFC 8489 §6.3.1).
    """
    data = bytes(data)
    if len(data) < HEADER_LENGTH:
        raise StunDecodeError("shorter than a STUN header")
    msg_type, length, cookie = struct.unpack("!HHI", data[:8])
    if msg_type & 0xC000 or cookie != MAGIC_COOKIE:
        raise StunDecodeError("not a STUN message (bad leading bits or magic cookie)")
    if length % 4 or len(data) != HEADER_LENGTH + length:
        raise StunDecodeError(f"bad STUN length {length} for {len(data)} bytes")
    method, cls = decode_type(msg_type)
    msg = Message(method, MessageClass(cls), data[8:20], raw=data)
    _decode_attributes(msg, data)
    return msg


def _malformed(msg: Message, reason: str, kind: int | None) -> MalformedRequestError:
    return MalformedRequestError(reason, msg.method, int(msg.cls), msg.transaction_id, kind)


def _decode_attributes(msg: Message, data: bytes) -> None:
    size = len(data)
    unpack = _TLV.unpack_from
    pos, seen_mi, seen_mi256 = HEADER_LENGTH, False, False
    while pos < size:
        if pos + 4 > size:
            raise _malformed(msg, "truncated attribute header", None)
        kind, alen = unpack(data, pos)
        end = pos + 4 + alen
        if end > size:
            raise _malformed(msg, f"attribute 0x{kind:04x} overruns the message", kind)
        value = data[pos + 4 : end]
        if kind == _FINGERPRINT:
            _check_fingerprint(data, pos, value)
            msg.attributes.append(_attribute((kind, int.from_bytes(value, "big"))))
            if end + (-alen % 4) != size:
                raise StunDecodeError("FINGERPRINT is not the last attribute")
        elif seen_mi256 or (seen_mi and kind not in _AFTER_INTEGRITY_ALLOWED):
            pass  # RFC 8489 §14.5-6: ignored
        else:
            _decode_one(msg, kind, value, pos)
            if kind == _MI:
                seen_mi = True
            elif kind == _MI256:
                seen_mi256 = True
        pos = end + (-alen % 4)


def _decode_one(msg: Message, kind: int, value: bytes, pos: int) -> None:
    spec = ATTRIBUTES.get(kind)
    if spec is None:
        if is_comprehension_required(kind):
            msg.unknown_required.append(kind)
        msg.attributes.append(_attribute((kind, value)))
        return
    try:
        decoded = spec.decode(value, msg.transaction_id)
    except StunDecodeError as exc:
        raise _malformed(msg, f"malformed {spec.name}: {exc}", kind) from exc
    msg.attributes.append(_attribute((kind, decoded)))
    if kind == _MI:
        msg.integrity_offset = pos
    elif kind == _MI256:
        msg.integrity_sha256_offset = pos


def _check_fingerprint(data: bytes, pos: int, value: bytes) -> None:
    if len(value) != 4:
        raise StunDecodeError("FINGERPRINT must be 4 bytes")
    header = data[:2] + struct.pack("!H", pos - HEADER_LENGTH + 8) + data[4:pos]
    expected = (binascii.crc32(header) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
    if expected != int.from_bytes(value, "big"):
        raise StunDecodeError("FINGERPRINT mismatch")
