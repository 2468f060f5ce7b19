"""Stream framing of STUN messages and ChannelData over TCP/TLS (RFC 8656 §12.5, RFC 8489 §6.2.2).

The first two bits of a frame tell its kind: ``00`` a STUN message (20 + length bytes), ``01``
ChannelData (4 + length bytes, padded to a multiple of 4 on streams). ``StreamFramer.feed``
accepts any split of the byte stream and returns whole frames.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from delshare.errors import StunDecodeError
from delshare.stun.constants import CHANNEL_MAX, CHANNEL_MIN, HEADER_LENGTH

MAX_FRAME = 4 + 65535 + 3  # 16-bit length fields bound every frame, hence the buffer


@dataclass(frozen=True)
class ChannelData:
    """A ChannelData frame (RFC 8656 §12.4)."""

    channel: int
    data: bytes

    def encode(self, *, pad: bool = True) -> bytes:
        """Serialise; pad to 4 bytes on stream transports (RFC 8656 §12.5)."""
        head = struct.pack("!HH", self.channel, len(self.data))
        return head + self.data + (bytes(-len(self.data) % 4) if pad else b"")


def decode_channel_data(data: bytes) -> ChannelData:
    """Parse one ChannelData datagram (RFC 8656 §12.4); trailing padding is allowed."""
    if len(data) < 4:
        raise StunDecodeError("ChannelData shorter than its header")
    channel, length = struct.unpack("!HH", data[:4])
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunDecodeError(f"channel number 0x{channel:04x} out of range")
    if len(data) < 4 + length:
        raise StunDecodeError("ChannelData truncated")
    return ChannelData(channel, bytes(data[4 : 4 + length]))


def frame_length(head: bytes) -> int:
    """Total length of the frame starting with these 4 bytes, padding included."""
    first = head[0] >> 6
    length = int.from_bytes(head[2:4], "big")
    if first == 0b00:
        if length % 4:
            raise StunDecodeError("STUN length not a multiple of 4")
        return HEADER_LENGTH + length
    if first == 0b01:
        return 4 + length + (-length % 4)
    raise StunDecodeError("stream carries neither STUN nor ChannelData")


class StreamFramer:
    """Reassemble frames from a byte stream; holds at most one partial frame."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete frame (STUN or ChannelData, raw)."""
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= 4:
            size = frame_length(bytes(self._buffer[:4]))
            if len(self._buffer) < size:
                break
            frames.append(bytes(self._buffer[:size]))
            del self._buffer[:size]
        return frames

    def take_remaining(self) -> bytes:
        """Bytes received after the last whole frame (e.g. relay data after ConnectionBind)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of their frame."""
        return len(self._buffer)
