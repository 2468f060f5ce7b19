"""Resume after a broken link: verified prefixes, repaired .part bytes, changed sources.

Policy under test: a .part whose sidecar names another source version (size or mtime changed)
is discarded and the file starts over from 0; a .part for the same version resumes after the
longest run of chunks whose SHA-256 matches the source, so corrupted bytes are re-sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from delshare.link.records import RecordChannel
from delshare.transfer.errors import (
    DestinationExistsError,
    IntegrityError,
    RefusedByPeerError,
    SourceChangedError,
    TransferInterruptedError,
)
from delshare.transfer.manifest import build_manifest
from delshare.transfer.protocol import (
    Accept,
    ErrorMessage,
    FileBegin,
    FileEnd,
    Message,
    Offer,
    recv_message,
    send_message,
)
from delshare.transfer.receiver import ReceiveStats, receive_files
from delshare.transfer.resume import temp_paths
from delshare.transfer.sender import SendStats, send_files

from .conftest import CuttingProxy, channel_pair, random_file, sha256_file

CHUNK = 256 * 1024
SIZE = 6 * 1024 * 1024 + 123


async def run(
    sources: list[Path], out: Path, proxy: CuttingProxy | None = None
) -> tuple[SendStats | BaseException, ReceiveStats | BaseException]:
    sender, receiver = await (proxy.channel_pair() if proxy else channel_pair())
    try:
        sent, received = await asyncio.gather(
            send_files(sender, build_manifest(sources), chunk=CHUNK),
            receive_files(receiver, out),
            return_exceptions=True,
        )
    finally:
        await sender.close()
        await receiver.close()
    return sent, received


async def broken_run(sources: list[Path], out: Path, proxy: CuttingProxy) -> None:
    sent, received = await run(sources, out, proxy)
    assert isinstance(received, TransferInterruptedError), received
    assert isinstance(sent, TransferInterruptedError | RefusedByPeerError), sent


def part_size(path: Path) -> int:
    return os.stat(temp_paths(path)[0]).st_size


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def read(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    out.mkdir()
    return random_file(tmp_path / "src" / "blob.bin", SIZE), out


async def test_broken_link_resumes_from_verified_prefix(
    setup: tuple[Path, Path], proxy_factory: Callable[[int], CuttingProxy]
) -> None:
    source, out = setup
    await broken_run([source], out, proxy_factory(3 * 1024 * 1024))
    assert not (out / "blob.bin").exists()
    have = part_size(out / "blob.bin")
    assert 0 < have < SIZE
    sent, received = await run([source], out)
    assert isinstance(sent, SendStats) and isinstance(received, ReceiveStats)
    assert received.resumed_at == {"blob.bin": have}
    remaining = SIZE - have
    assert sent.bytes_sent == remaining < remaining + CHUNK
    assert sha256_file(out / "blob.bin") == sha256_file(source)
    assert sorted(os.listdir(out)) == ["blob.bin"]


async def test_bytes_sent_counts_what_went_over_the_link(
    setup: tuple[Path, Path], proxy_factory: Callable[[int], CuttingProxy]
) -> None:
    """``bytes_sent`` (the CLI's ``moved``) is file bytes written to the link, not the file size."""
    source, out = setup
    await broken_run([source], out, proxy_factory(3 * 1024 * 1024))
    have = part_size(out / "blob.bin")
    counter = proxy_factory(1 << 62)  # forwards everything, counting sender->receiver bytes
    sent, received = await run([source], out, counter)
    assert isinstance(sent, SendStats) and isinstance(received, ReceiveStats)
    assert sent.bytes_sent == SIZE - have == received.bytes_received
    framing = 4096  # handshake, offer, file-begin/end, done; 21 bytes per DATA record
    assert sent.bytes_sent < counter.forwarded < sent.bytes_sent + framing


async def test_flipped_byte_in_part_is_repaired(
    setup: tuple[Path, Path], proxy_factory: Callable[[int], CuttingProxy]
) -> None:
    source, out = setup
    await broken_run([source], out, proxy_factory(3 * 1024 * 1024))
    assert part_size(out / "blob.bin") > 2 * CHUNK
    flip_byte(temp_paths(out / "blob.bin")[0], CHUNK + 10)
    sent, received = await run([source], out)
    assert isinstance(sent, SendStats) and isinstance(received, ReceiveStats)
    assert received.resumed_at == {"blob.bin": CHUNK}
    assert sent.bytes_sent == SIZE - CHUNK
    assert sha256_file(out / "blob.bin") == sha256_file(source)


async def test_changed_source_starts_over(
    setup: tuple[Path, Path], proxy_factory: Callable[[int], CuttingProxy]
) -> None:
    source, out = setup
    await broken_run([source], out, proxy_factory(3 * 1024 * 1024))
    random_file(source, SIZE)  # new content, same size, new mtime
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    sent, received = await run([source], out)
    assert isinstance(sent, SendStats) and isinstance(received, ReceiveStats)
    assert received.resumed_at == {"blob.bin": 0}
    assert sent.bytes_sent == SIZE
    assert sha256_file(out / "blob.bin") == sha256_file(source)


async def test_a_state_file_nested_too_deeply_is_not_ours(
    setup: tuple[Path, Path], proxy_factory: Callable[[int], CuttingProxy]
) -> None:
    """A ``.part`` whose state file is JSON too deeply nested to parse is someone else's: the
    receiver refuses the name as taken (its policy for a foreign ``.part``), not with a
    RecursionError."""
    source, out = setup
    await broken_run([source], out, proxy_factory(3 * 1024 * 1024))
    part, sidecar = temp_paths(out / "blob.bin")
    sidecar.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    sent, received = await run([source], out)
    assert isinstance(received, DestinationExistsError), received
    assert isinstance(sent, RefusedByPeerError), sent
    assert part.exists()  # not ours to delete


async def test_content_change_with_same_mtime_is_caught_by_chunk_hashes(
    setup: tuple[Path, Path], proxy_factory: Callable[[int], CuttingProxy]
) -> None:
    source, out = setup
    await broken_run([source], out, proxy_factory(3 * 1024 * 1024))
    stat = source.stat()
    flip_byte(source, 2 * CHUNK + 5)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    sent, received = await run([source], out)
    assert isinstance(sent, SendStats) and isinstance(received, ReceiveStats)
    assert received.resumed_at == {"blob.bin": 2 * CHUNK}
    assert sha256_file(out / "blob.bin") == sha256_file(source)


async def test_folder_resume_skips_finished_files(
    tmp_path: Path, proxy_factory: Callable[[int], CuttingProxy]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    root = tmp_path / "src" / "album"
    first = random_file(root / "1.bin", 1024 * 1024)
    second = random_file(root / "2.bin", 4 * 1024 * 1024)
    await broken_run([root], out, proxy_factory(3 * 1024 * 1024))
    assert sha256_file(out / "album" / "1.bin") == sha256_file(first)
    sent, received = await run([root], out)
    assert isinstance(sent, SendStats) and isinstance(received, ReceiveStats)
    assert sent.files_skipped == 1 and sent.files_sent == 1
    assert received.resumed_at["album/2.bin"] > 0
    assert sha256_file(out / "album" / "2.bin") == sha256_file(second)


async def test_source_changed_after_manifest_is_refused(setup: tuple[Path, Path]) -> None:
    source, out = setup
    built = build_manifest([source])
    append(source, b"more")
    sender, receiver = await channel_pair()
    sent, received = await asyncio.gather(
        send_files(sender, built), receive_files(receiver, out), return_exceptions=True
    )
    await sender.close()
    await receiver.close()
    assert isinstance(sent, SourceChangedError), sent
    assert isinstance(received, RefusedByPeerError), received
    assert not (out / "blob.bin").exists()


async def lying_sender(channel: RecordChannel, source: Path) -> Message:
    """Sends a file with a wrong whole-file SHA-256 in file-end."""
    built = build_manifest([source])
    await send_message(channel, Offer(built.manifest, CHUNK))
    assert isinstance(await recv_message(channel), Accept)
    await send_message(channel, FileBegin(0, 0))
    data = read(source)
    for start in range(0, len(data), 1 << 20):
        await channel.send(data[start : start + (1 << 20)])
    await send_message(channel, FileEnd(0, hashlib.sha256(b"not it").digest()))
    return await recv_message(channel)


async def null_hash_sender(channel: RecordChannel, source: Path) -> Message:
    """Claims to have waived the whole-file hash although the receiver asked for it."""
    await send_message(channel, Offer(build_manifest([source]).manifest, CHUNK))
    assert isinstance(await recv_message(channel), Accept)
    await send_message(channel, FileBegin(0, 0))
    await channel.send(read(source))
    await send_message(channel, FileEnd(0, b""))
    return await recv_message(channel)


async def test_missing_hash_is_refused_when_verifying(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    source = random_file(tmp_path / "src" / "small.bin", 1000)
    sender, receiver = await channel_pair()
    reply, received = await asyncio.gather(
        null_hash_sender(sender, source), receive_files(receiver, out), return_exceptions=True
    )
    await sender.close()
    await receiver.close()
    assert isinstance(received, IntegrityError), received
    assert isinstance(reply, ErrorMessage)


async def test_hash_mismatch_is_detected_and_part_removed(setup: tuple[Path, Path]) -> None:
    source, out = setup
    sender, receiver = await channel_pair()
    reply, received = await asyncio.gather(
        lying_sender(sender, source), receive_files(receiver, out), return_exceptions=True
    )
    await sender.close()
    await receiver.close()
    assert isinstance(received, IntegrityError), received
    assert isinstance(reply, ErrorMessage)
    assert os.listdir(out) == []
