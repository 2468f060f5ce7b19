"""The content hash of a transfer: BLAKE3 (256-bit output).

Every file's whole-content digest, and the per-chunk digests that prove a resumed prefix, are
BLAKE3. It is a cryptographic hash like SHA-256 but about 3.5x faster here (~6 GB/s against
~1.7 GB/s for SHA-256 with SHA-NI on one core) and it releases the GIL, so hashing is no longer
most of a transfer's CPU. ``b3sum`` (or ``python -m delshare.transfer.digest FILE``) prints the
same hex digest that ``delshare`` reports.
"""

from __future__ import annotations

import sys
from pathlib import Path

from blake3 import blake3

__all__ = ["ALGORITHM", "DIGEST_SIZE", "Hasher", "digest_of", "hash_file", "new_hasher"]

ALGORITHM = "blake3"
DIGEST_SIZE = 32
_READ = 1 << 20

Hasher = blake3
"""An incremental hasher: ``update(data)``, ``copy()``, ``digest()``, ``hexdigest()``."""


def new_hasher() -> Hasher:
    """A fresh incremental hasher (single-threaded: the other core is busy with the stream)."""
    return blake3()


def digest_of(data: bytes | memoryview) -> bytes:
    """The digest of ``data``."""
    return blake3(data).digest()


def hash_file(path: str | Path) -> bytes:
    """The digest of a whole file (blocking; run it in a worker thread)."""
    hasher = new_hasher()
    with open(path, "rb") as f:
        while block := f.read(_READ):
            hasher.update(block)
    return hasher.digest()


def main(argv: list[str]) -> int:
    """``python -m delshare.transfer.digest FILE...``: print ``HEX  FILE`` like ``b3sum``."""
    for name in argv:
        print(f"{hash_file(name).hex()}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
