"""Pipes: ``delshare send -`` reads standard input, ``delshare receive CODE -o -`` writes the one
received file to standard output (every message then goes to standard error).

Standard input is sent as it is read: an offer of one file named :data:`STDIN_NAME` whose size
is unknown (a *stream*, see docs/protocol.md), so the code is shown at once and no disk space is
needed on the sending side. The size is known only at the input's end and a re-run reads new
input, so an interrupted stream is neither healed nor resumed (the sender says so). On the
receiving side the file is received into a private temporary folder, verified, then copied to
standard output: nothing unverified ever reaches the pipe.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["STDIN_NAME", "STDIN_NOTICE", "copy_out", "private_folder"]

STDIN_NAME = "stdin"
STDIN_NOTICE = (
    "sending standard input as it is read: its size is known only at its end, and an "
    "interrupted transfer cannot be resumed (a re-run reads new input)"
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
