"""Preallocation keeps a .part's size honest; direct or buffered, every byte lands in order."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from delshare.transfer.diskio import (
    ALIGN,
    WRITEBACK_WINDOW,
    PartWriter,
    aligned_buffer,
    open_direct,
    preallocate,
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fallocate(2) is Linux only")
def test_preallocate_reserves_blocks_without_growing_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.part"
    path.write_bytes(b"abc")
    fd = os.open(path, os.O_WRONLY)
    try:
        if not preallocate(fd, 3, 8 << 20):
            pytest.skip("this file system has no fallocate")
        st = os.fstat(fd)
    finally:
        os.close(fd)
    assert st.st_size == 3  # resume reads received bytes from the size
    assert st.st_blocks * 512 >= 8 << 20
    assert path.read_bytes() == b"abc"


def test_preallocate_ignores_an_empty_range(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "y", os.O_WRONLY | os.O_CREAT)
    try:
        assert preallocate(fd, 0, 0) is False
    finally:
        os.close(fd)


def test_part_writer_appends_across_writeback_windows(tmp_path: Path) -> None:
    path = tmp_path / "z.part"
    path.write_bytes(b"head")
    data = os.urandom(WRITEBACK_WINDOW // 3 + 12345)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.lseek(fd, 4, os.SEEK_SET)
        preallocate(fd, 4, 4 * len(data))
        writer = PartWriter(fd, 4)
        for _ in range(4):  # crosses one writeback window
            writer.write(memoryview(data))
        assert writer.position == 4 + 4 * len(data)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"head" + data * 4


def _aligned_buffer(data: bytes) -> memoryview:
    buf = aligned_buffer(len(data))
    buf[:] = data
    return buf


def _direct_fd_or_skip(fd: int) -> int:
    direct = open_direct(fd)
    if direct is None:
        pytest.skip("no O_DIRECT on this file system")
    return direct


def test_direct_writes_then_a_buffered_tail_give_the_exact_bytes(tmp_path: Path) -> None:
    path = tmp_path / "d.part"
    blocks, tail = os.urandom(64 * ALIGN), os.urandom(1000)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        writer = PartWriter(fd, 0, _direct_fd_or_skip(fd))
        unit = _aligned_buffer(blocks + tail)
        writer.write(unit[: len(blocks)])  # aligned: goes direct
        writer.write(unit[len(blocks) :])  # a short tail: buffered
        writer.close()
        writer.close()  # idempotent
        assert os.fstat(fd).st_size == writer.position == len(blocks) + len(tail)
    finally:
        os.close(fd)
    assert path.read_bytes() == blocks + tail


def test_an_unaligned_resume_offset_falls_back_to_buffered_writes(tmp_path: Path) -> None:
    path = tmp_path / "r.part"
    head, body = b"x" * 777, os.urandom(8 * ALIGN)
    path.write_bytes(head)
    fd = os.open(path, os.O_WRONLY)
    try:
        writer = PartWriter(fd, len(head), _direct_fd_or_skip(fd))
        writer.write(_aligned_buffer(body))
        writer.write(memoryview(bytearray(body)))  # an ordinary (unaligned) buffer too
        writer.close()
    finally:
        os.close(fd)
    assert path.read_bytes() == head + body + body


def test_one_write_of_blocks_and_a_tail_splits_direct_and_buffered(tmp_path: Path) -> None:
    path = tmp_path / "s.part"
    data = os.urandom(16 * ALIGN + 123)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        writer = PartWriter(fd, 0, _direct_fd_or_skip(fd))
        writer.write(_aligned_buffer(data))
        writer.close()
    finally:
        os.close(fd)
    assert path.read_bytes() == data
