"""End-to-end transfers over real loopback sockets: files, trees, conflicts, hostile offers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from delshare.link.records import RecordChannel
from delshare.transfer.errors import (
    DeclinedError,
    DestinationExistsError,
    InsufficientSpaceError,
    ManifestError,
    PeerProtocolError,
    RefusedByPeerError,
    TransferInterruptedError,
    UnsafePathError,
)
from delshare.transfer.manifest import MAX_FILE_SIZE, Entry, Manifest, build_manifest
from delshare.transfer.protocol import (
    Accept,
    Done,
    ErrorMessage,
    FileBegin,
    Offer,
    Reject,
    recv_message,
    send_message,
)
from delshare.transfer.receiver import ReceiveStats, receive_files
from delshare.transfer.resume import temp_paths
from delshare.transfer.sender import SendStats, send_files

from .conftest import channel_pair, random_file, sha256_file, tree_files


async def transfer(
    sources: list[Path], out: Path, **options: Any
) -> tuple[SendStats, ReceiveStats]:
    sender, receiver = await channel_pair()
    built = build_manifest(sources)
    try:
        sent, received = await asyncio.gather(
            send_files(sender, built), receive_files(receiver, out, **options)
        )
    finally:
        await sender.close()
        await receiver.close()
    return sent, received


async def transfer_expecting(
    sources: list[Path], out: Path, error: type[Exception], **options: Any
) -> None:
    sender, receiver = await channel_pair()
    try:
        results = await asyncio.gather(
            send_files(sender, build_manifest(sources)),
            receive_files(receiver, out, **options),
            return_exceptions=True,
        )
    finally:
        await sender.close()
        await receiver.close()
    assert isinstance(results[0], RefusedByPeerError), results
    assert isinstance(results[1], error), results


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


async def test_single_file_arrives_identical(tmp_path: Path, out: Path) -> None:
    source = random_file(tmp_path / "src" / "blob.bin", 3 * 1024 * 1024 + 17)
    os.chmod(source, 0o4640)
    progress: list[tuple[int, int, int]] = []
    sender, receiver = await channel_pair()
    sent, received = await asyncio.gather(
        send_files(sender, build_manifest([source])),
        receive_files(receiver, out, progress_cb=lambda *a: progress.append(a)),
    )
    await sender.close()
    await receiver.close()
    final = out / "blob.bin"
    assert sha256_file(final) == sha256_file(source)
    assert sent.bytes_sent == received.bytes_received == source.stat().st_size
    assert final.stat().st_mtime_ns == source.stat().st_mtime_ns
    assert final.stat().st_mode & 0o7777 == 0o640  # setuid dropped
    assert names(out) == ["blob.bin"]
    assert progress[-1] == (0, source.stat().st_size, source.stat().st_size)


async def test_folder_tree_arrives_identical(tmp_path: Path, out: Path) -> None:
    root = tmp_path / "src" / "Fötø-album"
    random_file(root / "a" / "b" / "c" / "deep.bin", 200_000)
    random_file(root / "日本語" / "ファイル.txt", 5_000)
    random_file(root / "big.bin", 2 * 1024 * 1024 + 1)
    (root / "empty.txt").write_bytes(b"")
    (root / "empty-dir" / "nested-empty").mkdir(parents=True)
    single = random_file(tmp_path / "src" / "solo file.dat", 1234)
    sent, received = await transfer([root, single], out)
    assert tree_files(out / "Fötø-album") == tree_files(root)
    assert sha256_file(out / "solo file.dat") == sha256_file(single)
    assert (out / "Fötø-album" / "empty-dir" / "nested-empty").is_dir()
    assert sent.files_sent == 5
    assert len(received.files) == 5


async def test_transfer_without_whole_file_hash(tmp_path: Path, out: Path) -> None:
    source = random_file(tmp_path / "src" / "fast.bin", 2 * 1024 * 1024 + 5)
    sent, _ = await transfer([source], out, verify=False)
    assert sent.bytes_sent == source.stat().st_size
    assert sha256_file(out / "fast.bin") == sha256_file(source)


async def test_existing_file_is_not_overwritten_without_flag(tmp_path: Path, out: Path) -> None:
    source = random_file(tmp_path / "src" / "report.txt", 1000)
    (out / "report.txt").write_bytes(b"precious")
    await transfer_expecting([source], out, DestinationExistsError)
    assert (out / "report.txt").read_bytes() == b"precious"
    assert names(out) == ["report.txt"]


async def test_overwrite_replaces_existing_file(tmp_path: Path, out: Path) -> None:
    source = random_file(tmp_path / "src" / "report.txt", 1000)
    (out / "report.txt").write_bytes(b"old")
    await transfer([source], out, overwrite=True)
    assert sha256_file(out / "report.txt") == sha256_file(source)


@pytest.mark.parametrize("agree", [True, False])
async def test_existing_files_are_replaced_only_if_the_user_agrees(
    tmp_path: Path, out: Path, agree: bool
) -> None:
    folder = tmp_path / "src" / "docs"
    for name in ("a.txt", "b.txt", "c.txt"):
        random_file(folder / name, 1000)
    (out / "docs").mkdir()
    for name in ("a.txt", "c.txt"):
        (out / "docs" / name).write_bytes(b"mine")
    asked: list[tuple[str, ...]] = []

    async def ask_overwrite(names: tuple[str, ...]) -> bool:
        asked.append(names)
        return agree

    if agree:
        _, received = await transfer([folder], out, ask_overwrite=ask_overwrite)
        assert tree_files(out / "docs") == tree_files(folder)
        assert not any(f.skipped for f in received.files)
    else:
        await transfer_expecting([folder], out, DestinationExistsError, ask_overwrite=ask_overwrite)
        assert (out / "docs" / "a.txt").read_bytes() == b"mine"
        assert names(out / "docs") == ["a.txt", "c.txt"]
    assert asked == [("docs/a.txt", "docs/c.txt")]


async def test_overwrite_question_is_not_asked_with_rename(tmp_path: Path, out: Path) -> None:
    source = random_file(tmp_path / "src" / "photo.jpg", 1000)
    (out / "photo.jpg").write_bytes(b"mine")

    async def ask_overwrite(names: tuple[str, ...]) -> bool:
        raise AssertionError("asked although --rename was given")

    await transfer([source], out, rename=True, ask_overwrite=ask_overwrite)
    assert (out / "photo.jpg").read_bytes() == b"mine"


async def test_rename_keeps_both(tmp_path: Path, out: Path) -> None:
    source = random_file(tmp_path / "src" / "photo.jpg", 1000)
    (out / "photo.jpg").write_bytes(b"mine")
    (out / "photo (1).jpg").write_bytes(b"mine too")
    _, received = await transfer([source], out, rename=True)
    assert (out / "photo.jpg").read_bytes() == b"mine"
    assert (out / "photo (1).jpg").read_bytes() == b"mine too"
    assert sha256_file(out / "photo (2).jpg") == sha256_file(source)
    assert received.files[0].destination == (out / "photo (2).jpg").resolve()


async def test_already_received_file_is_skipped(tmp_path: Path, out: Path) -> None:
    source = random_file(tmp_path / "src" / "same.bin", 100_000)
    await transfer([source], out)
    sent, received = await transfer([source], out)
    assert sent.bytes_sent == 0 and sent.files_skipped == 1
    assert received.files[0].skipped


async def test_offer_bigger_than_free_space_is_rejected(out: Path) -> None:
    """A file of the largest size an offer may name (1 PiB) fits on no disk this runs on."""
    assert shutil.disk_usage(out).free < MAX_FILE_SIZE
    reply, outcome = await offer_raw([Entry("huge.bin", "file", MAX_FILE_SIZE)], out)
    assert isinstance(reply, Reject)
    assert isinstance(outcome, InsufficientSpaceError)
    assert names(out) == []


async def test_declined_offer_writes_nothing(tmp_path: Path, out: Path) -> None:
    source = random_file(tmp_path / "src" / "x.bin", 1000)
    seen: list[Manifest] = []

    async def no(manifest: Manifest) -> bool:
        seen.append(manifest)
        return False

    await transfer_expecting([source], out, DeclinedError, confirm=no)
    assert [e.path for e in seen[0].entries] == ["x.bin"]
    assert names(out) == []


async def offer_raw(
    entries: list[Entry], out: Path, **options: Any
) -> tuple[object, BaseException | object]:
    """Send a hand-made (possibly hostile) offer; return (sender's reply, receiver's outcome)."""
    sender, receiver = await channel_pair()

    async def hostile_sender(channel: RecordChannel) -> object:
        await send_message(channel, Offer(Manifest(tuple(entries))))
        return await recv_message(channel)

    try:
        reply, outcome = await asyncio.gather(
            hostile_sender(sender), receive_files(receiver, out, **options), return_exceptions=True
        )
    finally:
        await sender.close()
        await receiver.close()
    return reply, outcome


@pytest.mark.parametrize(
    "path",
    ["../x", "/etc/x", "a/../../x", "a\\..\\x", "NUL", "dir/aux.txt", "C:x", "x\x1b[2J"],
)
async def test_hostile_manifest_is_rejected_and_nothing_written(
    tmp_path: Path, out: Path, path: str
) -> None:
    entries = [Entry("dir", "dir"), Entry(path, "file", 3)]
    reply, outcome = await offer_raw(entries, out)
    assert isinstance(reply, Reject)
    assert isinstance(outcome, ManifestError)
    assert names(out) == []
    assert not (tmp_path / "x").exists()


async def test_symlink_escape_through_existing_link_is_rejected(tmp_path: Path, out: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (out / "docs").symlink_to(outside)
    reply, outcome = await offer_raw([Entry("docs", "dir"), Entry("docs/evil", "file", 3)], out)
    assert isinstance(reply, Reject)
    assert isinstance(outcome, UnsafePathError)
    assert names(outside) == []


async def test_symlinked_part_file_is_not_followed(tmp_path: Path, out: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    temp_paths(out / "f")[0].symlink_to(victim)
    reply, outcome = await offer_raw([Entry("f", "file", 3)], out)
    assert isinstance(reply, Reject)
    assert isinstance(outcome, DestinationExistsError)  # a .part that is not ours
    reply, outcome = await offer_raw([Entry("f", "file", 3)], out, overwrite=True)
    assert isinstance(reply, Reject)
    assert isinstance(outcome, UnsafePathError)
    assert victim.read_bytes() == b"keep"


def test_transfer_under_uvloop(tmp_path: Path, out: Path) -> None:
    """The channel takes over uvloop transports too (they are not asyncio.Transport subclasses)."""
    uvloop = pytest.importorskip("uvloop")
    source = random_file(tmp_path / "src" / "uv.bin", 5 * 1024 * 1024 + 3)
    sent, received = uvloop.run(transfer([source], out))
    assert sent.bytes_sent == received.bytes_received == 5 * 1024 * 1024 + 3
    assert sha256_file(out / "uv.bin") == sha256_file(source)


async def test_a_receiver_that_stops_reading_fails_the_sender_resumably(tmp_path: Path) -> None:
    """A zero window never trips TCP's timeouts; the data phase's own watchdog does."""
    source = tmp_path / "big.bin"
    with source.open("wb") as f:
        f.truncate(256 << 20)  # more than every buffer on the way can hold
    sender, receiver = await channel_pair()
    try:
        offer = asyncio.ensure_future(recv_message(receiver))
        sending = asyncio.ensure_future(
            send_files(sender, build_manifest([source]), stall_timeout=0.5)
        )
        assert isinstance(await offer, Offer)
        await send_message(receiver, Accept())  # ... and then never reads again
        with pytest.raises(TransferInterruptedError, match=r"no progress for 0\.5 s"):
            await asyncio.wait_for(sending, 30)
    finally:
        sender.abort()
        receiver.abort()


async def test_a_sender_that_stops_sending_fails_the_receiver_and_keeps_the_part(
    tmp_path: Path, out: Path
) -> None:
    source = random_file(tmp_path / "half.bin", 3 << 20)
    sender, receiver = await channel_pair()
    try:
        receiving = asyncio.ensure_future(receive_files(receiver, out, stall_timeout=0.5))
        await send_message(sender, Offer(build_manifest([source]).manifest))
        assert isinstance(await recv_message(sender), Accept)
        await send_message(sender, FileBegin(0, 0))
        await sender.send(source.read_bytes()[: 1 << 20])  # one record, then silence
        with pytest.raises(TransferInterruptedError, match=r"no progress for 0\.5 s"):
            await asyncio.wait_for(receiving, 30)
    finally:
        sender.abort()
        await receiver.close()
    assert (
        temp_paths(out / "half.bin")[0].read_bytes() == source.read_bytes()[: 1 << 20]
    )  # resumable


async def test_a_sender_that_skips_its_offer_is_refused_by_the_state_table(out: Path) -> None:
    """File data before any offer: the receiver's conversation table refuses it by name, the
    receiver rejects, and nothing is written."""
    sender, receiver = await channel_pair()

    async def hostile_sender(channel: RecordChannel) -> object:
        await send_message(channel, FileBegin(0, 0))
        return await recv_message(channel)

    try:
        reply, outcome = await asyncio.gather(
            hostile_sender(sender), receive_files(receiver, out), return_exceptions=True
        )
    finally:
        await sender.close()
        await receiver.close()
    assert isinstance(reply, Reject) and "FileBegin from the sender in state offer" in reply.reason
    assert isinstance(outcome, PeerProtocolError)
    assert names(out) == []


async def test_a_receiver_that_answers_done_too_early_is_refused(tmp_path: Path) -> None:
    """The receiver's done before the sender's: the sender's table refuses it, the sender stops
    with a protocol error and tells the receiver why."""
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(64 << 20))  # still sending when the early done is read
    manifest = build_manifest([source])
    sender, receiver = await channel_pair()

    async def hostile_receiver(channel: RecordChannel) -> object:
        await recv_message(channel)
        await send_message(channel, Accept())
        await send_message(channel, Done())
        for _ in range(1000):  # file-begin and the data in flight, then the sender's error
            with contextlib.suppress(PeerProtocolError):  # a DATA record
                message = await recv_message(channel)
                if isinstance(message, ErrorMessage):
                    return message
        return None

    try:
        outcome, told = await asyncio.gather(
            send_files(sender, manifest), hostile_receiver(receiver), return_exceptions=True
        )
    finally:
        await sender.close()
        await receiver.close()
    assert isinstance(outcome, PeerProtocolError)
    assert "Done from the receiver" in str(outcome)
    assert isinstance(told, ErrorMessage)
