"""Issue 10 item 11: every legal name (up to 255 bytes) can be received, and resumed.

Old behaviour: the temporary ``NAME.part`` / ``NAME.part.json`` went past the 255-byte limit, so a
246-255-byte name failed with ``[Errno 36] File name too long``. The real sender and receiver run
over loopback sockets; a proxy cuts the first run half way, the second run resumes.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from delshare.transfer.errors import RefusedByPeerError, TransferInterruptedError
from delshare.transfer.manifest import build_manifest
from delshare.transfer.receiver import ReceiveStats, receive_files
from delshare.transfer.resume import temp_paths
from delshare.transfer.sender import SendStats, send_files
from tests.adversarial.conftest import scaled
from tests.transfer.conftest import CuttingProxy, channel_pair, random_file, sha256_file

CHUNK = 256 << 10
SIZE = (6 << 20) + 77
NAMES = [
    "n" * 251 + ".bin",  # 255 bytes
    "é" * 126 + "xyz",  # 255 bytes of UTF-8
    "d" * 246,  # the shortest length that failed
]


async def _run(
    source: Path, out: Path, proxy: CuttingProxy | None
) -> tuple[SendStats | BaseException, ReceiveStats | BaseException]:
    sender, receiver = await (proxy.channel_pair() if proxy else channel_pair())
    try:
        sent, received = await asyncio.gather(
            send_files(sender, build_manifest([source]), chunk=CHUNK),
            receive_files(receiver, out),
            return_exceptions=True,
        )
    finally:
        await sender.close()
        await receiver.close()
    return sent, received


@pytest.mark.parametrize("name", NAMES, ids=["255-ascii", "255-utf8", "246"])
async def test_a_255_byte_name_is_received_and_resumed_after_a_break(
    tmp_path: Path, name: str
) -> None:
    assert len(name.encode()) in (246, 255)
    source = random_file(tmp_path / "src" / name, SIZE)
    for attempt in range(scaled(1, 3)):
        out = tmp_path / f"out{attempt}"
        out.mkdir()
        proxy = CuttingProxy(3 << 20)
        try:
            sent, received = await _run(source, out, proxy)
        finally:
            await proxy.close()
        assert isinstance(received, TransferInterruptedError), received
        assert isinstance(sent, TransferInterruptedError | RefusedByPeerError), sent
        part, state = temp_paths(out / name)
        have = part.stat().st_size
        assert 0 < have < SIZE and state.exists()
        assert all(len(n.encode()) <= 32 for n in os.listdir(out))  # short hidden names
        sent, received = await _run(source, out, None)
        assert isinstance(sent, SendStats) and isinstance(received, ReceiveStats), (sent, received)
        assert received.resumed_at == {name: have}
        assert sent.bytes_sent == SIZE - have
        assert sha256_file(out / name) == sha256_file(source)
        assert os.listdir(out) == [name]
