"""Let the app see the transfer's ``file-begin``/``file-end`` messages on a record channel.

The transfer layer verifies every file against the BLAKE3 digest its sender declares in ``file-end``
(:mod:`delshare.transfer.protocol`); the app prints that hash once the whole transfer is
confirmed. Watching the CONTROL records on their way avoids hashing every file a second time.
``file-begin`` tells where a resumed file continues, for the ``resuming at N of M`` line.
The channel's ``write``, ``recv_record`` and ``recv_into`` are wrapped on this one instance, so
everything else about the channel stays exactly as the link layer made it.
"""

from __future__ import annotations

from collections.abc import Callable

from delshare.errors import DelshareError
from delshare.link.records import Record, RecordChannel, RecordKind
from delshare.transfer.protocol import FileBegin, FileEnd, MessageAssembler, Offer

__all__ = ["observe_file_ends"]

FileEndHook = Callable[[int, bytes], None]
FileBeginHook = Callable[[int, int], None]
OfferHook = Callable[[Offer], None]


def _no_begin(index: int, offset: int) -> None:
    pass


def _no_offer(offer: Offer) -> None:
    pass


def _watcher(
    on_end: FileEndHook, on_begin: FileBeginHook, on_offer: OfferHook = _no_offer
) -> Callable[[bytes | memoryview], None]:
    assembler = MessageAssembler()

    def watch(payload: bytes | memoryview) -> None:
        try:
            message = assembler.feed(bytes(payload))
        except DelshareError:
            return  # the transfer layer reports malformed messages itself
        if isinstance(message, FileEnd):
            on_end(message.index, message.digest)
        elif isinstance(message, FileBegin):
            on_begin(message.index, message.offset)
        elif isinstance(message, Offer):
            on_offer(message)

    return watch


def observe_file_ends(
    channel: RecordChannel,
    hook: FileEndHook,
    on_begin: FileBeginHook = _no_begin,
    on_offer: OfferHook = _no_offer,
) -> RecordChannel:
    """Call ``hook(index, digest)`` for every file-end sent or received on ``channel``,
    ``on_begin(index, offset)`` for every file-begin and ``on_offer(offer)`` for an offer
    received (before the transfer layer plans it: the app shows the offer first)."""
    watch_sent = _watcher(hook, on_begin)
    watch_received = _watcher(hook, on_begin, on_offer)
    write, recv_record = channel.write, channel.recv_record

    def observed_write(data: bytes | memoryview, kind: RecordKind = RecordKind.DATA) -> None:
        if kind is RecordKind.CONTROL:
            watch_sent(data)
        write(data, kind)

    async def observed_recv_record() -> Record:
        record = await recv_record()
        if record.kind is RecordKind.CONTROL:
            watch_received(record.payload)
        return record

    channel.write = observed_write  # type: ignore[method-assign]
    channel.recv_record = observed_recv_record  # type: ignore[method-assign]
    recv_into = getattr(channel, "recv_into", None)
    if recv_into is not None:

        async def observed_recv_into(buffer: memoryview) -> tuple[RecordKind, int]:
            kind, length = await recv_into(buffer)
            if kind is RecordKind.CONTROL:
                watch_received(buffer[:length])
            return kind, length

        channel.recv_into = observed_recv_into  # type: ignore[attr-defined,method-assign,unused-ignore]
    return channel
