"""The transfer layer's typed events, over a real handshaken record channel on loopback.

``send_files`` and ``receive_files`` report what they know per message and per file (never per
record): the offer before it is planned, each file's start offset (a resume's offset), each
file's digest once sent or once checked and in place. The app builds its output on these
(``tests/app`` and ``tests/cli`` check that output).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

from delshare.link.records import MAX_PAYLOAD
from delshare.transfer import (
    FileReceived,
    FileSent,
    FileStarted,
    OfferArrived,
    ReceiveEvent,
    SendEvent,
)
from delshare.transfer.digest import hash_file
from delshare.transfer.errors import (
    DestinationExistsError,
    RefusedByPeerError,
    TransferInterruptedError,
)
from delshare.transfer.manifest import BuiltManifest, Manifest, build_manifest, stream_manifest
from delshare.transfer.receiver import ReceiveStats, receive_files
from delshare.transfer.resume import temp_paths
from delshare.transfer.sender import SendStats, send_files

from .conftest import CuttingProxy, channel_pair, random_file

CHUNK = 256 * 1024


async def run(
    built: BuiltManifest,
    out: Path,
    proxy: CuttingProxy | None = None,
) -> tuple[
    SendStats | BaseException,
    ReceiveStats | BaseException,
    list[SendEvent],
    list[ReceiveEvent | str],
]:
    """One transfer; the events each side reported (the receiver's interleaved with "confirm")."""
    sent_events: list[SendEvent] = []
    received_events: list[ReceiveEvent | str] = []

    async def confirmed(manifest: Manifest) -> bool:
        received_events.append("confirm")
        return True

    sender, receiver = await (proxy.channel_pair() if proxy else channel_pair())
    try:
        sent, received = await asyncio.gather(
            send_files(sender, built, chunk=CHUNK, on_event=sent_events.append),
            receive_files(receiver, out, confirm=confirmed, on_event=received_events.append),
            return_exceptions=True,
        )
    finally:
        await sender.close()
        await receiver.close()
    return sent, received, sent_events, received_events


def folder_of(tmp_path: Path) -> Path:
    """A folder with a sub-folder and three files (one of many records, one empty)."""
    top = tmp_path / "src" / "album"
    random_file(top / "big.bin", 5 * MAX_PAYLOAD + 17)
    random_file(top / "inner" / "small.txt", 100)
    random_file(top / "zero", 0)
    return top


async def test_a_plain_transfer_reports_each_message_once(tmp_path: Path) -> None:
    top = folder_of(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    built = build_manifest([top])
    entries = built.manifest.entries
    files = [i for i, e in enumerate(entries) if e.kind == "file"]
    assert len(files) == 3 and len(entries) == 5  # two folders too

    sent, received, sent_events, received_events = await run(built, out)

    assert isinstance(sent, SendStats) and isinstance(received, ReceiveStats)
    digests = {i: hash_file(built.sources[i]) for i in files}
    assert sent_events == [
        event for i in files for event in (FileStarted(i, 0), FileSent(i, digests[i]))
    ]
    assert received_events == [
        OfferArrived(built.manifest),
        "confirm",
        *(
            event
            for i in files
            for event in (
                FileStarted(i, 0),
                FileReceived(i, digests[i], out / entries[i].path),
            )
        ),
    ]
    for i in files:
        assert hash_file(out / entries[i].path) == digests[i]


async def test_the_offer_is_reported_before_it_is_planned(tmp_path: Path) -> None:
    """An offer that cannot be planned (a file is in the way) was still reported first: the app
    shows the offer before it says why it cannot take it."""
    source = random_file(tmp_path / "src" / "a.bin", 1000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin").write_bytes(b"something else")
    built = build_manifest([source])

    sent, received, sent_events, received_events = await run(built, out)

    assert isinstance(sent, RefusedByPeerError), sent
    assert isinstance(received, DestinationExistsError), received
    assert received_events == [OfferArrived(built.manifest)]
    assert sent_events == []


async def test_a_resumed_transfer_reports_the_resume_offset(
    tmp_path: Path, proxy_factory: Callable[[int], CuttingProxy]
) -> None:
    source = random_file(tmp_path / "src" / "blob.bin", 6 * 1024 * 1024 + 123)
    out = tmp_path / "out"
    out.mkdir()
    sent, received, _, first_events = await run(
        build_manifest([source]), out, proxy_factory(3 * 1024 * 1024)
    )
    assert isinstance(received, TransferInterruptedError), received
    assert isinstance(sent, TransferInterruptedError | RefusedByPeerError), sent
    assert FileStarted(0, 0) in first_events
    assert not any(isinstance(e, FileReceived) for e in first_events)
    have = temp_paths(out / "blob.bin")[0].stat().st_size
    assert 0 < have < source.stat().st_size

    built = build_manifest([source])
    sent, received, sent_events, received_events = await run(built, out)

    assert isinstance(received, ReceiveStats), received
    assert received.resumed_at == {"blob.bin": have}
    digest = hash_file(source)
    assert sent_events == [FileStarted(0, have), FileSent(0, digest)]
    assert received_events == [
        OfferArrived(built.manifest),
        "confirm",
        FileStarted(0, have),
        FileReceived(0, digest, out / "blob.bin"),
    ]


async def test_a_file_already_there_reports_nothing(tmp_path: Path) -> None:
    """Files the receiver skips (same content) neither start nor end on either side."""
    same = random_file(tmp_path / "src" / "same.bin", 3000)
    new = random_file(tmp_path / "src" / "new.bin", 3000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "same.bin").write_bytes(same.read_bytes())
    built = build_manifest([same, new])
    index = {e.path: i for i, e in enumerate(built.manifest.entries)}

    sent, _, sent_events, received_events = await run(built, out)

    assert isinstance(sent, SendStats) and sent.skipped == (index["same.bin"],)
    digest = hash_file(new)
    assert sent_events == [FileStarted(index["new.bin"], 0), FileSent(index["new.bin"], digest)]
    assert received_events[2:] == [
        FileStarted(index["new.bin"], 0),
        FileReceived(index["new.bin"], digest, out / "new.bin"),
    ]


async def test_a_stream_reports_its_digest_at_its_end(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    built = stream_manifest(io.BytesIO(data), "piped.bin")
    out = tmp_path / "out"
    out.mkdir()

    sent, received, sent_events, received_events = await run(built, out)

    assert isinstance(sent, SendStats) and isinstance(received, ReceiveStats), (sent, received)
    digest = hash_file(out / "piped.bin")
    assert (out / "piped.bin").read_bytes() == data
    assert sent_events == [FileStarted(0, 0), FileSent(0, digest)]
    assert received_events[2:] == [FileStarted(0, 0), FileReceived(0, digest, out / "piped.bin")]
