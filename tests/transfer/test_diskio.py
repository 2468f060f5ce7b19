"""Preallocation keeps a .part's size honest; the part writer writes every byte in order."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from delshare.transfer.diskio import WRITEBACK_WINDOW, PartWriter, preallocate


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
