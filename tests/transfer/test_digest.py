"""The transfer's content hash is BLAKE3: known vectors, files, the ``b3sum``-style printer."""

from __future__ import annotations

from pathlib import Path

import pytest

from delshare.transfer.digest import DIGEST_SIZE, digest_of, hash_file, main, new_hasher

# The BLAKE3 reference test vectors (BLAKE3 repository, test_vectors.json): input byte i is i % 251.
EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
ONE_KIB = "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"


def _vector_input(length: int) -> bytes:
    return bytes(i % 251 for i in range(length))


def test_known_vectors() -> None:
    assert digest_of(b"").hex() == EMPTY
    assert digest_of(_vector_input(1024)).hex() == ONE_KIB
    assert len(digest_of(b"x")) == DIGEST_SIZE


def test_incremental_and_copy_match_one_shot() -> None:
    data = _vector_input(3 << 20)
    hasher = new_hasher()
    hasher.update(data[:1000])
    fork = hasher.copy()
    hasher.update(data[1000:])
    fork.update(memoryview(data)[1000:])
    assert hasher.digest() == fork.digest() == digest_of(data)


def test_hash_file_and_printer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "v.bin"
    path.write_bytes(_vector_input(1024))
    assert hash_file(path).hex() == ONE_KIB
    assert main([str(path)]) == 0
    assert capsys.readouterr().out == f"{ONE_KIB}  {path}\n"
