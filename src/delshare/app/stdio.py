"""Pipes: ``delshare send -`` reads standard input, ``delshare receive CODE -o -`` writes the one
received file to standard output (every message then goes to standard error).

Standard input is spooled to a private temporary file first (named :data:`STDIN_NAME`), so the
transfer itself is an ordinary one: hashed, verified, sent at full speed. Its size is not known
until the input ends, and a re-run reads a new input, so an interrupted pipe cannot be resumed
(the sender says so). On the receiving side the file is received into a private temporary
folder, verified, then copied to standard output: nothing unverified ever reaches the pipe.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["STDIN_NAME", "STDIN_NOTICE", "copy_out", "private_folder", "spool"]

STDIN_NAME = "stdin"
STDIN_NOTICE = (
    "reading standard input: its size is known only at its end, and an interrupted "
    "transfer cannot be resumed (a re-run reads new input)"
)
_BLOCK = 1 << 20


@contextlib.contextmanager
def private_folder(prefix: str) -> Iterator[Path]:
    """A temporary folder only we can read, removed with everything in it afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def spool(source: BinaryIO, folder: Path) -> tuple[Path, int]:
    """Copy ``source`` to ``folder/stdin`` until its end; return the path and byte count."""
    path = folder / STDIN_NAME
    size = 0
    with path.open("wb") as out:
        while block := source.read(_BLOCK):
            out.write(block)
            size += len(block)
    return path, size


def copy_out(folder: Path, target: BinaryIO) -> int:
    """Write the one file received into ``folder`` to ``target``; return its size."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if len(files) != 1:
        raise ValueError(f"expected one received file, found {len(files)}")
    size = 0
    with files[0].open("rb") as f:
        while block := f.read(_BLOCK):
            target.write(block)
            size += len(block)
    target.flush()
    return size
