"""Sans-IO STUN codec (RFC 8489) with the TURN (RFC 8656) and RFC 6062 attributes."""

from delshare.stun.attributes import Address, Attribute, AttrSpec
from delshare.stun.constants import Attr, ErrorCode, MessageClass, Method
from delshare.stun.framing import ChannelData, StreamFramer, decode_channel_data
from delshare.stun.message import (
    Message,
    decode_message,
    error_response,
    is_stun,
    new_transaction_id,
    success_response,
)

__all__ = [
    "Address",
    "Attr",
    "AttrSpec",
    "Attribute",
    "ChannelData",
    "ErrorCode",
    "Message",
    "MessageClass",
    "Method",
    "StreamFramer",
    "decode_channel_data",
    "decode_message",
    "error_response",
    "is_stun",
    "new_transaction_id",
    "success_response",
]
