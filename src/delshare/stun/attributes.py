"""The STUN/TURN attribute table: one typed encode/decode pair per attribute type.

RFC 8489 §14 (STUN attributes), RFC 8656 §18 (TURN attributes), RFC 6062 §6.2 (CONNECTION-ID).
XOR-address attributes take the transaction ID through ``transaction_id`` (RFC 8489 §14.2).

Each row is an :class:`AttrSpec` ``[T]`` named after its attribute (``LIFETIME``,
``XOR_PEER_ADDRESS``, ...) and is also the typed key to read and write it:
``message.get(LIFETIME)`` is an ``int | None``, ``message.add(REALM, "example.org")`` takes a
``str``, and ``LIFETIME(600)`` is one :class:`Attribute` for a request's attribute list. The
decoder gives every known attribute its row's type, so readers never check types at run time.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from delshare.address import Address as Address
from delshare.errors import StunDecodeError
from delshare.stun.constants import FAMILY_IPV4, FAMILY_IPV6, MAGIC_COOKIE, Attr

T = TypeVar("T")
Decoder = Callable[[bytes, bytes], T]  # (value bytes, transaction ID) -> value
Encoder = Callable[[T, bytes], bytes]  # (value, transaction ID) -> value bytes
Codec = tuple[Decoder[T], Encoder[T]]

_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)


class Attribute(NamedTuple):
    """One attribute of a message: its type code and decoded value (made by an AttrSpec)."""

    type: int
    value: object


@dataclass(frozen=True)
class AttrSpec(Generic[T]):
    """One row of the attribute table: type code, name, its codec; the typed key of ``T``."""

    type: int
    name: str
    decode: Decoder[T]
    encode: Encoder[T]

    def __call__(self, value: T) -> Attribute:
        """This attribute with ``value``, for a message's attribute list."""
        return Attribute(self.type, value)


def _xor(data: bytes, mask: bytes) -> bytes:
    """``data`` XOR ``mask`` over the shorter of the two (one big-int XOR, not a byte loop)."""
    n = min(len(data), len(mask))
    return (int.from_bytes(data[:n], "big") ^ int.from_bytes(mask[:n], "big")).to_bytes(n, "big")


def decode_address(data: bytes, _tid: bytes = b"") -> Address:
    """MAPPED-ADDRESS layout (RFC 8489 §14.1)."""
    if len(data) < 4:
        raise StunDecodeError("address attribute too short")
    family, port = data[1], struct.unpack("!H", data[2:4])[0]
    if (family == FAMILY_IPV4 and len(data) == 8) or (family == FAMILY_IPV6 and len(data) == 20):
        return _ip_text(data[4:]), port
    raise StunDecodeError(f"bad address family {family} or length {len(data)}")


def encode_address(value: Address, _tid: bytes = b"") -> bytes:
    """MAPPED-ADDRESS layout (RFC 8489 §14.1)."""
    host, port = value
    family, packed = _ip_packed(host)
    return struct.pack("!BBH", 0, family, port) + packed


# A server's answers name the same few addresses again and again (each client's, each relay's):
# parsing them with ``ipaddress`` was ~3% of the relay's CPU per allocation. Both caches are
# bounded and hold pure functions of their argument (a bad literal raises and is not cached).
@functools.lru_cache(maxsize=4096)
def _ip_packed(host: str) -> tuple[int, bytes]:
    """The STUN address family and the packed bytes of an IP literal (ValueError if not one)."""
    ip = ipaddress.ip_address(host)
    return (FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6), ip.packed


@functools.lru_cache(maxsize=4096)
def _ip_text(packed: bytes) -> str:
    """The canonical text of a 4- or 16-byte address."""
    if len(packed) == 4:
        return str(ipaddress.IPv4Address(packed))
    return str(ipaddress.IPv6Address(packed))


def decode_xor_address(data: bytes, tid: bytes) -> Address:
    """XOR-MAPPED-ADDRESS layout (RFC 8489 §14.2)."""
    if len(data) < 4:
        raise StunDecodeError("address attribute too short")
    port = struct.unpack("!H", data[2:4])[0] ^ (MAGIC_COOKIE >> 16)
    mask = _COOKIE_BYTES + tid
    return decode_address(data[:2] + struct.pack("!H", port) + _xor(data[4:], mask))[0], port


def encode_xor_address(value: Address, tid: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS layout (RFC 8489 §14.2)."""
    plain = encode_address(value)
    port = struct.unpack("!H", plain[2:4])[0] ^ (MAGIC_COOKIE >> 16)
    return plain[:2] + struct.pack("!H", port) + _xor(plain[4:], _COOKIE_BYTES + tid)


def _utf8(limit: int) -> Codec[str]:
    def dec(data: bytes, _tid: bytes) -> str:
        if len(data) > limit:
            raise StunDecodeError(f"text attribute longer than {limit} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StunDecodeError("text attribute is not UTF-8") from exc

    def enc(value: str, _tid: bytes) -> bytes:
        return value.encode("utf-8")

    return dec, enc


def _uint(fmt: str, pad: int = 0) -> Codec[int]:
    size = struct.calcsize(fmt)

    def dec(data: bytes, _tid: bytes) -> int:
        if len(data) != size + pad:
            raise StunDecodeError(f"integer attribute of length {len(data)}")
        return int(struct.unpack(fmt, data[:size])[0])

    def enc(value: int, _tid: bytes) -> bytes:
        return struct.pack(fmt, value) + bytes(pad)

    return dec, enc


def _raw(min_len: int = 0, max_len: int = 65535) -> Codec[bytes]:
    def dec(data: bytes, _tid: bytes) -> bytes:
        if not min_len <= len(data) <= max_len:
            raise StunDecodeError(f"attribute of length {len(data)}")
        return bytes(data)

    def enc(value: bytes, _tid: bytes) -> bytes:
        return bytes(value)

    return dec, enc


def _decode_flag(_data: bytes, _tid: bytes) -> bool:
    return True


def _encode_flag(_value: bool, _tid: bytes) -> bytes:
    return b""


def decode_error_code(data: bytes, _tid: bytes) -> tuple[int, str]:
    """ERROR-CODE (RFC 8489 §14.8): class * 100 + number, then a UTF-8 reason."""
    if len(data) < 4:
        raise StunDecodeError("ERROR-CODE too short")
    code = (data[2] & 0x07) * 100 + data[3]
    return code, data[4:].decode("utf-8", errors="replace")


def encode_error_code(value: tuple[int, str], _tid: bytes) -> bytes:
    """ERROR-CODE (RFC 8489 §14.8)."""
    code, reason = value
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8")


def decode_unknown(data: bytes, _tid: bytes) -> tuple[int, ...]:
    """UNKNOWN-ATTRIBUTES (RFC 8489 §14.9): a list of 16-bit types."""
    if len(data) % 2:
        raise StunDecodeError("UNKNOWN-ATTRIBUTES of odd length")
    return struct.unpack(f"!{len(data) // 2}H", data)


def encode_unknown(value: tuple[int, ...], _tid: bytes) -> bytes:
    """UNKNOWN-ATTRIBUTES (RFC 8489 §14.9)."""
    return struct.pack(f"!{len(value)}H", *value)


def _one_algorithm(data: bytes) -> tuple[tuple[int, bytes], int]:
    if len(data) < 4:
        raise StunDecodeError("password algorithm too short")
    alg, plen = struct.unpack("!HH", data[:4])
    end = 4 + plen + (-plen % 4)
    if len(data) < 4 + plen:
        raise StunDecodeError("password algorithm parameters truncated")
    return (alg, bytes(data[4 : 4 + plen])), end


def _encode_one_algorithm(value: tuple[int, bytes]) -> bytes:
    alg, params = value
    return struct.pack("!HH", alg, len(params)) + params + bytes(-len(params) % 4)


def decode_password_algorithm(data: bytes, _tid: bytes) -> tuple[int, bytes]:
    """PASSWORD-ALGORITHM (RFC 8489 §14.12)."""
    return _one_algorithm(data)[0]


def encode_password_algorithm(value: tuple[int, bytes], _tid: bytes) -> bytes:
    """PASSWORD-ALGORITHM (RFC 8489 §14.12)."""
    return _encode_one_algorithm(value)


def decode_password_algorithms(data: bytes, _tid: bytes) -> tuple[tuple[int, bytes], ...]:
    """PASSWORD-ALGORITHMS (RFC 8489 §14.11): a list of algorithm entries."""
    out, pos = [], 0
    while pos < len(data):
        entry, used = _one_algorithm(data[pos:])
        out.append(entry)
        pos += used
    return tuple(out)


def encode_password_algorithms(value: tuple[tuple[int, bytes], ...], _tid: bytes) -> bytes:
    """PASSWORD-ALGORITHMS (RFC 8489 §14.11)."""
    return b"".join(_encode_one_algorithm(v) for v in value)


def decode_address_error(data: bytes, _tid: bytes) -> tuple[int, int, str]:
    """ADDRESS-ERROR-CODE (RFC 8656 §18.12): family, code, reason."""
    if len(data) < 4:
        raise StunDecodeError("ADDRESS-ERROR-CODE too short")
    return data[0], (data[2] & 0x07) * 100 + data[3], data[4:].decode("utf-8", errors="replace")


def encode_address_error(value: tuple[int, int, str], _tid: bytes) -> bytes:
    """ADDRESS-ERROR-CODE (RFC 8656 §18.12)."""
    family, code, reason = value
    return struct.pack("!BBBB", family, 0, code // 100, code % 100) + reason.encode("utf-8")


def decode_channel_number(data: bytes, _tid: bytes) -> int:
    """CHANNEL-NUMBER (RFC 8656 §18.1): 16 bits then 16 RFFU bits."""
    if len(data) != 4:
        raise StunDecodeError("CHANNEL-NUMBER must be 4 bytes")
    return int(struct.unpack("!H", data[:2])[0])


def encode_channel_number(value: int, _tid: bytes) -> bytes:
    """CHANNEL-NUMBER (RFC 8656 §18.1)."""
    return struct.pack("!HH", value, 0)


def decode_even_port(data: bytes, _tid: bytes) -> bool:
    """EVEN-PORT (RFC 8656 §18.8): the R bit."""
    if len(data) != 1:
        raise StunDecodeError("EVEN-PORT must be 1 byte")
    return bool(data[0] & 0x80)


def encode_even_port(value: bool, _tid: bytes) -> bytes:
    """EVEN-PORT (RFC 8656 §18.8)."""
    return b"\x80" if value else b"\x00"


def _spec(attr: Attr, codec: Codec[T]) -> AttrSpec[T]:
    return AttrSpec(int(attr), attr.name, codec[0], codec[1])


_ADDRESS: Codec[Address] = (decode_address, encode_address)
_XOR_ADDRESS: Codec[Address] = (decode_xor_address, encode_xor_address)
_TEXT_763 = _utf8(763)

MAPPED_ADDRESS = _spec(Attr.MAPPED_ADDRESS, _ADDRESS)
USERNAME = _spec(Attr.USERNAME, _utf8(513))
MESSAGE_INTEGRITY = _spec(Attr.MESSAGE_INTEGRITY, _raw(20, 20))
ERROR_CODE = _spec(Attr.ERROR_CODE, (decode_error_code, encode_error_code))
UNKNOWN_ATTRIBUTES = _spec(Attr.UNKNOWN_ATTRIBUTES, (decode_unknown, encode_unknown))
CHANNEL_NUMBER = _spec(Attr.CHANNEL_NUMBER, (decode_channel_number, encode_channel_number))
LIFETIME = _spec(Attr.LIFETIME, _uint("!I"))
XOR_PEER_ADDRESS = _spec(Attr.XOR_PEER_ADDRESS, _XOR_ADDRESS)
DATA = _spec(Attr.DATA, _raw())
REALM = _spec(Attr.REALM, _TEXT_763)
NONCE = _spec(Attr.NONCE, _TEXT_763)
XOR_RELAYED_ADDRESS = _spec(Attr.XOR_RELAYED_ADDRESS, _XOR_ADDRESS)
REQUESTED_ADDRESS_FAMILY = _spec(Attr.REQUESTED_ADDRESS_FAMILY, _uint("!B", 3))
EVEN_PORT = _spec(Attr.EVEN_PORT, (decode_even_port, encode_even_port))
REQUESTED_TRANSPORT = _spec(Attr.REQUESTED_TRANSPORT, _uint("!B", 3))
DONT_FRAGMENT = _spec(Attr.DONT_FRAGMENT, (_decode_flag, _encode_flag))
MESSAGE_INTEGRITY_SHA256 = _spec(Attr.MESSAGE_INTEGRITY_SHA256, _raw(16, 32))
PASSWORD_ALGORITHM = _spec(
    Attr.PASSWORD_ALGORITHM, (decode_password_algorithm, encode_password_algorithm)
)
USERHASH = _spec(Attr.USERHASH, _raw(32, 32))
XOR_MAPPED_ADDRESS = _spec(Attr.XOR_MAPPED_ADDRESS, _XOR_ADDRESS)
RESERVATION_TOKEN = _spec(Attr.RESERVATION_TOKEN, _raw(8, 8))
CONNECTION_ID = _spec(Attr.CONNECTION_ID, _uint("!I"))
ADDITIONAL_ADDRESS_FAMILY = _spec(Attr.ADDITIONAL_ADDRESS_FAMILY, _uint("!B", 3))
ADDRESS_ERROR_CODE = _spec(Attr.ADDRESS_ERROR_CODE, (decode_address_error, encode_address_error))
PASSWORD_ALGORITHMS = _spec(
    Attr.PASSWORD_ALGORITHMS, (decode_password_algorithms, encode_password_algorithms)
)
ALTERNATE_DOMAIN = _spec(Attr.ALTERNATE_DOMAIN, _TEXT_763)
ICMP = _spec(Attr.ICMP, _raw(8, 8))
SOFTWARE = _spec(Attr.SOFTWARE, _TEXT_763)
ALTERNATE_SERVER = _spec(Attr.ALTERNATE_SERVER, _ADDRESS)
FINGERPRINT = _spec(Attr.FINGERPRINT, _uint("!I"))

ATTRIBUTES: dict[int, AttrSpec[Any]] = {
    spec.type: spec
    for spec in (
        MAPPED_ADDRESS,
        USERNAME,
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        UNKNOWN_ATTRIBUTES,
        CHANNEL_NUMBER,
        LIFETIME,
        XOR_PEER_ADDRESS,
        DATA,
        REALM,
        NONCE,
        XOR_RELAYED_ADDRESS,
        REQUESTED_ADDRESS_FAMILY,
        EVEN_PORT,
        REQUESTED_TRANSPORT,
        DONT_FRAGMENT,
        MESSAGE_INTEGRITY_SHA256,
        PASSWORD_ALGORITHM,
        USERHASH,
        XOR_MAPPED_ADDRESS,
        RESERVATION_TOKEN,
        CONNECTION_ID,
        ADDITIONAL_ADDRESS_FAMILY,
        ADDRESS_ERROR_CODE,
        PASSWORD_ALGORITHMS,
        ALTERNATE_DOMAIN,
        ICMP,
        SOFTWARE,
        ALTERNATE_SERVER,
        FINGERPRINT,
    )
}
"""Every known attribute by type code (the decoder's table)."""


def is_comprehension_required(attr_type: int) -> bool:
    """Types 0x0000-0x7FFF must be understood (RFC 8489 §14)."""
    return attr_type < 0x8000
