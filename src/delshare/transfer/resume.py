"""Resume bookkeeping: temporary names, their state files, chunk hashes of a prefix, verifying them.

A file being received is written to a short hidden temporary file next to its final name,
``.delshare-<16 hex>.part``, with a state file ``.delshare-<16 hex>.json`` (:func:`temp_paths`);
the hex is the start of the BLAKE3 hash of the final name, so a re-run finds them again, and the
state file names the final file and the source version (size, mtime, chunk size) it belongs to.
Short names matter: ``NAME.part.json`` does not fit a legal 246-255-byte ``NAME``.

The receiver hashes its ``.part`` prefix in ``chunk``-byte pieces and keeps the running whole-file
BLAKE3 state at every piece boundary, so whatever offset the sender picks it continues hashing
without re-reading. The sender hashes the same pieces of its source and resumes after the longest
matching run (:func:`verify_prefix`).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from delshare.transfer.digest import Hasher, digest_of, new_hasher
from delshare.transfer.errors import PeerProtocolError
from delshare.transfer.manifest import Entry

__all__ = [
    "PartState",
    "hash_part",
    "read_sidecar",
    "sidecar_matches",
    "temp_paths",
    "verify_prefix",
    "write_sidecar",
]

_READ = 1 << 20


def temp_paths(final: Path) -> tuple[Path, Path]:
    """The hidden ``.part`` and state file that stand for ``final`` while it is received
    (names matching :data:`delshare.transfer.manifest.TEMP_NAME`, which offers may not use)."""
    tag = digest_of(os.fsencode(final.name)).hex()[:16]
    return final.with_name(f".delshare-{tag}.part"), final.with_name(f".delshare-{tag}.json")


@dataclass(frozen=True, slots=True)
class PartState:
    """A .part prefix: per-chunk digests and the whole-file hash state at each boundary."""

    length: int
    chunks: tuple[bytes, ...]
    states: dict[int, Hasher]  # offset -> whole-file hasher positioned at that offset

    def hasher_at(self, offset: int) -> Hasher:
        """The running whole-file hash after ``offset`` bytes (a chunk boundary or the end)."""
        state = self.states.get(offset)
        if state is None:
            raise PeerProtocolError(f"resume offset {offset} is not a chunk boundary")
        return state.copy()


def _read_exact(f: IO[bytes], size: int) -> bytes:
    data = f.read(size)
    return data if data is not None else b""


def hash_part(path: Path, chunk: int) -> PartState:
    """Hash an existing .part file chunk by chunk (runs in a worker thread)."""
    whole = new_hasher()
    states: dict[int, Hasher] = {0: whole.copy()}
    chunks: list[bytes] = []
    offset = 0
    with open(path, "rb") as f:
        while True:
            piece = new_hasher()
            done = 0
            while done < chunk and (data := _read_exact(f, min(_READ, chunk - done))):
                piece.update(data)
                whole.update(data)
                done += len(data)
            if not done:
                break
            offset += done
            chunks.append(piece.digest())
            states[offset] = whole.copy()
            if done < chunk:
                break
    return PartState(offset, tuple(chunks), states)


def verify_prefix(
    f: IO[bytes], size: int, offered: int, chunks: tuple[bytes, ...], chunk: int, whole: Hasher
) -> int:
    """Compare the receiver's chunk digests with the source; return the offset to resume at.

    Reads and hashes the matching prefix into ``whole``; leaves ``f`` positioned at the result.
    """
    if len(chunks) != -(-offered // chunk):
        raise PeerProtocolError("resume chunk list does not match its offset")
    matched = 0
    for index, digest in enumerate(chunks):
        length = min(chunk, offered - index * chunk)
        if matched + length > size:
            break
        f.seek(matched)
        data = _read_exact(f, length)
        if len(data) != length or digest_of(data) != digest:
            break
        whole.update(data)
        matched += length
    f.seek(matched)
    return matched


def _sidecar_body(entry: Entry, chunk: int, final: Path) -> dict[str, object]:
    return {
        "v": 2,
        "final": os.fsdecode(final.name),
        "path": entry.path,
        "size": entry.size,
        "mtime_ns": entry.mtime_ns,
        "chunk": chunk,
    }


def write_sidecar(path: Path, entry: Entry, chunk: int, final: Path) -> None:
    """Record which final name and source (size and mtime) a .part belongs to, before writing it."""
    path.write_text(json.dumps(_sidecar_body(entry, chunk, final)), encoding="utf-8")


def read_sidecar(path: Path) -> dict[str, object] | None:
    """The sidecar's JSON object, or None if it is missing or unreadable (not UTF-8, not JSON,
    nested too deeply to parse). It is checked whole, against the body we would write
    (:func:`sidecar_matches`), so no field needs reading one by one."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def sidecar_matches(sidecar: dict[str, object], entry: Entry, chunk: int, final: Path) -> bool:
    """Whether a .part was written for this final name, source version and chunk size."""
    return sidecar == _sidecar_body(entry, chunk, final)


def remove_quietly(*paths: Path) -> None:
    """Delete files, ignoring those already gone."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
