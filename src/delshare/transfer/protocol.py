"""DEL transfer protocol v3: JSON control messages and raw data records over a RecordChannel.

Theory of operation (S = sender, R = receiver)::

    S -> R  offer       {"v":3,"type":"offer","chunk":C,"total":T,"entries":[{path,kind,size,
                          mode,mtime_ns}...], "skipped":[path...], "skipped_count":N}
    R -> S  hash-request {"v":3,"type":"hash-request","indexes":[i...]}     (optional, once)
    S -> R  hashes      {"v":3,"type":"hashes","files":[{"index":i,"blake3":hex}...]}
    R -> S  accept      {"v":3,"type":"accept","files":[{"index":i,"offset":n,"chunks":[hex...]}],
                          "skip":[i...],"verify":true}   or   reject {"v":3,"type":"reject",...}
    for every file i not skipped, in manifest order:
    S -> R  file-begin  {"v":3,"type":"file-begin","index":i,"offset":o}
    S -> R  DATA records: the file's bytes from offset o to its size (up to 1 MiB each)
    S -> R  file-end    {"v":3,"type":"file-end","index":i,"blake3":hex of the whole file|null}
    S -> R  done
    R -> S  done        after every file is verified, synced and renamed into place
    either  error       {"v":3,"type":"error","reason":...} aborts the transfer
    either  wait        {"v":3,"type":"wait"}: "still here, busy" (hashing, asking its user)

Resume: for a file with a ``NAME.part`` left by an earlier run (whose sidecar matches the offered
size and mtime), ``accept`` carries the .part length ``offset`` and the BLAKE3 digest of each
``C``-byte chunk of it (the last may be short). The sender hashes its source the same way and
resumes at the end of the longest matching run of chunks; ``file-begin.offset`` tells the
receiver where to cut the .part.

Left out: ``skipped`` (optional, at most ``MAX_SKIPPED_NAMES`` paths) names what the sender's
folders held but it does not send (symlinks, sockets, devices, FIFOs), ``skipped_count`` how
many there were in all; the receiver only tells its user. Older receivers ignore both fields.

Streams (``delshare send -``): an entry ``{"kind":"file","size":null,"stream":true,...}`` is
a file whose size is known only at its end. The sender sends DATA records as its source gives
bytes (and ``wait`` between them while the source is slow) until the source ends, then
``file-end`` with the BLAKE3 of everything sent; the receiver writes until ``file-end``, checks
the digest and renames into place. A stream is never resumed, skipped or hashed on request, and
the receiver keeps no state file for it. No version bump: a v3 receiver without streams refuses
``"size":null`` as an invalid offer (``reject``), so nothing is misread.

Already there: a destination file of the offered size is never trusted by size and mtime. The
receiver asks for the BLAKE3 digests of those files (``hash-request``), hashes its own copies
meanwhile, and lists in ``skip`` only the files whose content is the same; any other existing
file is a conflict (replace, rename or refuse, as the receiver's user chose).

Waits: every wait for the peer's next message is bounded (:func:`peer_timeout`, 60 s, or
``DELSHARE_PEER_TIMEOUT``): a peer that sends nothing for that long is given up on. A side busy
with local work that can take longer (hashing, its user's answer at a prompt, fsync) sends
``wait`` every few seconds (:func:`keepalive`); ``wait`` is skipped by :func:`recv_message`.
Keepalives do not extend a wait without end either: a side accepts them for one step (one
message awaited) for at most ``BUSY_FACTOR`` times the peer timeout (15 minutes by default,
:func:`busy_limit`), so a peer that says ``wait`` forever is given up on too.
The data phase has its own watchdog (``STALL_TIMEOUT``).

Bounds checked before any work on an offer: ``MAX_MESSAGE`` bytes per message (64 MiB, counted
as fragments arrive; the rest of an oversized message is read and dropped so the peer gets the
refusal) and ``MAX_ENTRIES`` (100,000) entries, counted before any entry is looked at. A refused
offer, malformed or too big, always gets a ``reject`` naming the reason.

Integrity: every record is AEAD-authenticated in order, so bytes cannot be altered, dropped or
reordered in transit; resumed prefixes are checked chunk by chunk. On top, each file-end carries
the whole-file BLAKE3 digest (:mod:`delshare.transfer.digest`) that the receiver recomputes, unless
its accept said ``"verify": false`` (then ``blake3`` is null and neither side hashes the data).
Version 2 replaced version 1's SHA-256 with BLAKE3 (3.5x less CPU per byte); version 3 added
``hash-request``/``hashes`` and ``wait``. Peers of different versions refuse each other's first
message with a clear error.

Control framing: a message is UTF-8 JSON split over CONTROL records; each record's payload starts
with ``+`` (more follows) or ``.`` (last fragment). A message is bounded by ``MAX_MESSAGE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from delshare.fields import Fields
from delshare.link.records import (
    MAX_PAYLOAD,
    LinkClosedError,
    LinkError,
    RecordChannel,
    RecordKind,
)
from delshare.transfer.digest import ALGORITHM, DIGEST_SIZE
from delshare.transfer.errors import ManifestError, PeerProtocolError, PeerTimeoutError
from delshare.transfer.manifest import MAX_ENTRIES, MAX_OFFER_BYTES, Entry, Manifest
from delshare.transfer.timeouts import STALL_TIMEOUT

__all__ = [
    "BUSY_FACTOR",
    "DEFAULT_CHUNK",
    "MAX_MESSAGE",
    "MAX_SKIPPED_NAMES",
    "STALL_TIMEOUT",
    "VERSION",
    "Accept",
    "Done",
    "ErrorMessage",
    "FileBegin",
    "FileEnd",
    "HashRequest",
    "Hashes",
    "Message",
    "MessageAssembler",
    "Offer",
    "Reject",
    "ResumeOffer",
    "Talk",
    "Timeouts",
    "Wait",
    "busy_error",
    "busy_limit",
    "decode_message",
    "encode_message",
    "keepalive",
    "peer_timeout",
    "recv_message",
    "send_last_word",
    "send_message",
]

VERSION = 3
"""Seconds the data phase may go without a byte moving before either side gives up (resumably).

TCP's own timeouts cannot see this stall: a peer or relay that keeps acknowledging but stops
reading (a zero window) is kept alive by window probes forever."""
PEER_TIMEOUT = 60.0
"""Seconds any wait for the peer's next control message may last without a word from it."""
KEEPALIVE_MAX = 10.0
BUSY_FACTOR = 15
"""A step may be kept alive by ``wait`` keepalives for this many peer timeouts (15 min at 60 s)."""
DEFAULT_CHUNK = 4 << 20
MIN_CHUNK, MAX_CHUNK = 64 << 10, 64 << 20
MAX_MESSAGE = MAX_OFFER_BYTES
MAX_SKIPPED_NAMES = 20
"""Left-out paths named in an offer (the rest are only counted)."""
_DISCARD_LIMIT = 2 * MAX_MESSAGE  # read and dropped of an oversized message before giving up
_MORE, _LAST = b"+", b"."


@dataclass(frozen=True, slots=True)
class Timeouts:
    """``stall``: seconds the data phase may move nothing; ``wait``: seconds any wait for the
    peer's next message may last without a record from it."""

    stall: float = STALL_TIMEOUT
    wait: float = PEER_TIMEOUT


def peer_timeout() -> float:
    """:data:`PEER_TIMEOUT`, or ``DELSHARE_PEER_TIMEOUT`` seconds if set (tests use a few)."""
    try:
        value = float(os.environ.get("DELSHARE_PEER_TIMEOUT", PEER_TIMEOUT))
    except ValueError:
        return PEER_TIMEOUT
    return value if value > 0 else PEER_TIMEOUT


def busy_limit(timeout: float) -> float:
    """Seconds one wait for a peer's message may be stretched by its ``wait`` keepalives."""
    return BUSY_FACTOR * timeout


def busy_error(limit: float, waiting_for: str) -> PeerTimeoutError:
    """The peer kept saying ``wait`` for longer than :func:`busy_limit` allows."""
    return PeerTimeoutError(
        f"the peer said it was busy for over {limit:g} s while waiting for {waiting_for}; "
        "giving up (it may be stuck: try again, or ask the other side what it is doing)"
    )


@dataclass(frozen=True, slots=True)
class Offer:
    """The sender's manifest and its resume chunk size; ``skipped``: the first (at most
    ``MAX_SKIPPED_NAMES``) of the ``skipped_count`` entries its folders held that it leaves out."""

    manifest: Manifest
    chunk: int = DEFAULT_CHUNK
    skipped: tuple[str, ...] = ()
    skipped_count: int = 0


@dataclass(frozen=True, slots=True)
class ResumeOffer:
    """A receiver's existing .part for file ``index``: its length and per-chunk BLAKE3 digests."""

    index: int
    offset: int
    chunks: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Accept:
    """The receiver takes the offer; ``resume`` and ``skip`` refer to manifest indexes.

    ``verify`` False waives the whole-file digest (the sender then sends ``"blake3": null``);
    records stay AEAD-authenticated and resumed prefixes stay chunk-verified.
    """

    resume: tuple[ResumeOffer, ...] = ()
    skip: tuple[int, ...] = ()
    verify: bool = True


@dataclass(frozen=True, slots=True)
class Reject:
    """The receiver refuses the offer."""

    reason: str


@dataclass(frozen=True, slots=True)
class FileBegin:
    """File ``index``'s bytes follow, starting at ``offset``."""

    index: int
    offset: int


@dataclass(frozen=True, slots=True)
class FileEnd:
    """File ``index`` is complete; ``digest`` is the whole file's BLAKE3 (``b""`` if waived)."""

    index: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class Done:
    """No more files (from the sender) / everything verified (from the receiver)."""


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """Abort: the peer gives up with ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class HashRequest:
    """The receiver has files of these indexes' sizes: what is the content hash of yours?"""

    indexes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Hashes:
    """The sender's answer: (index, whole-file BLAKE3) for every requested index."""

    files: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Wait:
    """Keepalive: busy with local work, still here."""


Message = (
    Offer
    | Accept
    | Reject
    | FileBegin
    | FileEnd
    | Done
    | ErrorMessage
    | HashRequest
    | Hashes
    | Wait
)


def encode_message(message: Message) -> bytes:
    """Serialize one message to JSON bytes."""
    body: dict[str, Any]
    match message:
        case Offer(manifest, chunk, skipped, skipped_count):
            entries = [e.to_wire() for e in manifest.entries]
            body = {"type": "offer", "chunk": chunk, "total": manifest.total_bytes}
            body["entries"] = entries
            if skipped_count:
                body["skipped"] = list(skipped[:MAX_SKIPPED_NAMES])
                body["skipped_count"] = max(skipped_count, len(skipped))
        case Accept(resume, skip, verify):
            body = {"type": "accept", "files": [_resume_wire(r) for r in resume]}
            body["skip"] = list(skip)
            body["verify"] = verify
        case Reject(reason):
            body = {"type": "reject", "reason": reason}
        case FileBegin(index, offset):
            body = {"type": "file-begin", "index": index, "offset": offset}
        case FileEnd(index, digest):
            body = {"type": "file-end", "index": index, ALGORITHM: digest.hex() or None}
        case Done():
            body = {"type": "done"}
        case ErrorMessage(reason):
            body = {"type": "error", "reason": reason}
        case HashRequest(indexes):
            body = {"type": "hash-request", "indexes": list(indexes)}
        case Hashes(files):
            body = {"type": "hashes", "files": [{"index": i, ALGORITHM: d.hex()} for i, d in files]}
        case Wait():
            body = {"type": "wait"}
    return json.dumps({"v": VERSION, **body}, separators=(",", ":")).encode()


def _resume_wire(r: ResumeOffer) -> dict[str, Any]:
    return {"index": r.index, "offset": r.offset, "chunks": [c.hex() for c in r.chunks]}


def decode_message(data: bytes) -> Message:
    """Parse and validate one message; anything malformed raises PeerProtocolError."""
    fields = Fields.load(data, PeerProtocolError, "control message")
    fields.version({VERSION})
    kind = fields.message_type(_DECODERS)
    message: Message = _DECODERS[kind](fields.named(f"{kind} message"))
    return message


_MAX_INT = 1 << 62  # sizes, offsets and indexes: far beyond any file, still an exact integer
_MAX_REASON = 1000  # characters of a peer's reason kept (the rest is cut, not refused)


def _index(fields: Fields) -> int:
    return fields.integer("index", 0, _MAX_INT)


def _reason(fields: Fields) -> str:
    return fields.text("reason", max_len=MAX_MESSAGE)[:_MAX_REASON]


def _decode_offer(fields: Fields) -> Offer:
    entries_wire = fields.items("entries", max_len=_MAX_INT, default=[])
    if len(entries_wire) > MAX_ENTRIES:  # counted before any entry is examined
        raise ManifestError(
            f"offer of {len(entries_wire)} files and folders: at most {MAX_ENTRIES} in one "
            "transfer (send fewer at once)"
        )
    chunk = _chunk(fields)
    manifest = Manifest(tuple(Entry.from_wire(e) for e in entries_wire))
    manifest.validate()
    if fields.integer("total", 0, _MAX_INT) != manifest.total_bytes:
        raise ManifestError("offer total does not match its entries")
    skipped: tuple[str, ...] = ()
    count = 0
    if not (fields.null("skipped") and fields.null("skipped_count")):  # absent: older senders
        names = fields.texts(
            "skipped", max_items=MAX_SKIPPED_NAMES, min_len=1, max_len=4096, default=[]
        )
        skipped = tuple(names)
        count = fields.integer("skipped_count", len(skipped), _MAX_INT)
    return Offer(manifest, chunk, skipped, count)


def _chunk(fields: Fields) -> int:
    """The resume granularity; out of range, the documented "bad chunk size N" reason."""
    try:
        return fields.integer("chunk", MIN_CHUNK, MAX_CHUNK)
    except PeerProtocolError:
        raise PeerProtocolError(
            f"bad chunk size {fields.shown('chunk')} (must be {MIN_CHUNK} to {MAX_CHUNK} bytes)"
        ) from None


def _decode_resume(fields: Fields) -> ResumeOffer:
    chunks = fields.hexes("chunks", DIGEST_SIZE, max_items=MAX_ENTRIES, default=[])
    return ResumeOffer(_index(fields), fields.integer("offset", 0, _MAX_INT), tuple(chunks))


def _decode_accept(fields: Fields) -> Accept:
    resume = [_decode_resume(f) for f in fields.objects("files", max_items=MAX_ENTRIES, default=[])]
    skip = fields.integers("skip", 0, _MAX_INT, max_items=MAX_ENTRIES, default=[])
    return Accept(tuple(resume), tuple(skip), fields.flag("verify", default=True))


def _decode_hashes(fields: Fields) -> Hashes:
    files = fields.objects("files", max_items=MAX_ENTRIES, default=[])
    return Hashes(tuple((_index(f), f.hex(ALGORITHM, DIGEST_SIZE)) for f in files))


def _decode_file_end(fields: Fields) -> FileEnd:
    digest = b"" if fields.null(ALGORITHM) else fields.hex(ALGORITHM, DIGEST_SIZE)
    return FileEnd(_index(fields), digest)


_DECODERS: dict[str, Callable[[Fields], Message]] = {
    "offer": _decode_offer,
    "accept": _decode_accept,
    "reject": lambda f: Reject(_reason(f)),
    "file-begin": lambda f: FileBegin(_index(f), f.integer("offset", 0, _MAX_INT)),
    "file-end": _decode_file_end,
    "done": lambda f: Done(),
    "error": lambda f: ErrorMessage(_reason(f)),
    "hash-request": lambda f: HashRequest(
        tuple(f.integers("indexes", 0, _MAX_INT, max_items=MAX_ENTRIES, default=[]))
    ),
    "hashes": _decode_hashes,
    "wait": lambda f: Wait(),
}


class MessageTooLargeError(PeerProtocolError):
    """A control message grew past ``MAX_MESSAGE`` bytes."""


class MessageAssembler:
    """Joins CONTROL record fragments into whole messages (sans-IO)."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._max = max_message

    def feed(self, payload: bytes) -> Message | None:
        """Add one CONTROL payload; return the message once its last fragment arrived."""
        flag, fragment = payload[:1], payload[1:]
        if flag not in (_MORE, _LAST):
            raise PeerProtocolError("bad control fragment flag")
        self._size += len(fragment)
        if self._size > self._max:
            self._parts, self._size = [], 0
            raise MessageTooLargeError(
                f"message larger than {self._max >> 20} MiB (too many files in one offer?)"
            )
        self._parts.append(fragment)
        if flag == _MORE:
            return None
        data = b"".join(self._parts)
        self._parts, self._size = [], 0
        return decode_message(data)


def fragment_message(message: Message, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """Split an encoded message into CONTROL payloads (flag byte + fragment)."""
    data = encode_message(message)
    step = max_payload - 1
    pieces = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
    return [(_LAST if i == len(pieces) - 1 else _MORE) + p for i, p in enumerate(pieces)]


def write_message(channel: RecordChannel, message: Message) -> None:
    """Queue one control message's fragments back to back (no other record can come between)."""
    for payload in fragment_message(message):
        channel.write(payload, RecordKind.CONTROL)


class Talk(Protocol):
    """What sending and receiving feed: the conversation's state table
    (:class:`delshare.transfer.states.Conversation`)."""

    def sent(self, message: Message) -> None: ...

    def received(self, message: Message) -> None: ...

    @property
    def ended(self) -> bool: ...


async def send_message(
    channel: RecordChannel,
    message: Message,
    timeout: float | None = None,
    *,
    talk: Talk | None = None,
) -> None:
    """Send one control message; PeerTimeoutError if the peer reads none of what waits to be
    sent for ``timeout`` seconds (default :func:`peer_timeout`): a big offer to a receiver that
    stopped reading would otherwise wait for buffer room forever. ``talk`` checks first that
    the message may be sent now."""
    if talk is not None:
        talk.sent(message)
    write_message(channel, message)
    await _drain(channel, peer_timeout() if timeout is None else timeout)


async def send_last_word(
    channel: RecordChannel, message: ErrorMessage | Reject, talk: Talk
) -> None:
    """Refuse or abort with ``message``, unless the conversation has ended already (the peer
    aborted or finished first: nothing left to refuse); a link already closed is no matter."""
    if talk.ended:
        return
    with contextlib.suppress(LinkClosedError):
        await send_message(channel, message, talk=talk)


async def _drain(channel: RecordChannel, timeout: float) -> None:
    while True:
        queued = channel.write_buffer_size()
        try:
            async with asyncio.timeout(timeout):
                await channel.drain()
            return
        except TimeoutError:
            if channel.write_buffer_size() >= queued:  # not a byte taken meanwhile
                raise PeerTimeoutError(
                    f"the peer read nothing for {timeout:g} s of a message to it"
                ) from None


async def recv_message(
    channel: RecordChannel,
    timeout: float | None = None,
    waiting_for: str = "its next message",
    *,
    keep_waits: bool = False,
    talk: Talk | None = None,
) -> Message:
    """Receive one control message; a DATA record here is a protocol error.

    ``wait`` keepalives are skipped (returned if ``keep_waits``); any other message is fed to
    ``talk``, which refuses one that may not come now. With ``timeout``, a peer that
    sends no record for that many seconds raises PeerTimeoutError naming ``waiting_for``, and so
    does one that keeps skipped ``wait`` messages coming for over :func:`busy_limit`. An
    oversized message is read to its end (bounded) and dropped before MessageTooLargeError, so
    the peer is reading again when it is refused.
    """
    assembler = MessageAssembler()
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        record = await _recv_record(channel, timeout, waiting_for)
        if record.kind is not RecordKind.CONTROL:
            raise PeerProtocolError("unexpected data record")
        try:
            message = assembler.feed(record.payload)
        except MessageTooLargeError:
            if record.payload[:1] == _MORE:
                await _discard_rest(channel, timeout, waiting_for)
            raise
        if message is None:
            continue
        if isinstance(message, Wait) and not keep_waits:
            if timeout is not None and loop.time() - started > busy_limit(timeout):
                raise busy_error(busy_limit(timeout), waiting_for)
            continue
        if talk is not None and not isinstance(message, Wait):
            talk.received(message)
        return message


async def _recv_record(channel: RecordChannel, timeout: float | None, waiting_for: str) -> Any:
    if timeout is None:
        return await channel.recv_record()
    try:
        async with asyncio.timeout(timeout):
            return await channel.recv_record()
    except TimeoutError:
        raise PeerTimeoutError(
            f"no word from the peer for {timeout:g} s while waiting for {waiting_for}"
        ) from None


async def _discard_rest(channel: RecordChannel, timeout: float | None, waiting_for: str) -> None:
    dropped = 0
    while dropped < _DISCARD_LIMIT:
        record = await _recv_record(channel, timeout, waiting_for)
        dropped += len(record.payload)
        if record.kind is not RecordKind.CONTROL or record.payload[:1] != _MORE:
            return


def keepalive_interval(timeout: float) -> float:
    """How often a busy side says ``wait``: well within the peer's (default) timeout."""
    return min(KEEPALIVE_MAX, timeout / 4)


@contextlib.asynccontextmanager
async def keepalive(channel: RecordChannel, interval: float) -> AsyncIterator[None]:
    """Send ``wait`` every ``interval`` seconds while the body runs (local work, a prompt)."""

    async def tick() -> None:
        with contextlib.suppress(LinkError):
            while True:
                await asyncio.sleep(interval)
                write_message(channel, Wait())  # whole, between two other messages

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
