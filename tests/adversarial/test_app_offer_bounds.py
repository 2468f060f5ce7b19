"""Issue 10 item 12 (app parts): a hostile offer is bounded before any work and always refused
with a reason the sender sees.

The hostile sender builds offers with the transfer protocol code itself and sends them over a
real loopback record channel to the real :func:`receive_files`. Old behaviour: 100k+ entries
cost 27 s and 311 MB before the prompt (and were accepted); a bad chunk size closed the link
without a word; an oversized message closed it too; a bad resume chunk list from a hostile
receiver made the sender close without a word.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from pathlib import Path

import pytest

from delshare.link.records import RecordChannel
from delshare.transfer.errors import ManifestError, PeerProtocolError
from delshare.transfer.manifest import (
    MAX_ENTRIES,
    MAX_OFFER_BYTES,
    Entry,
    Manifest,
    build_manifest,
)
from delshare.transfer.protocol import (
    Accept,
    ErrorMessage,
    Message,
    Offer,
    Reject,
    ResumeOffer,
    recv_message,
    send_message,
)
from delshare.transfer.receiver import receive_files
from delshare.transfer.sender import send_files
from tests.adversarial.conftest import scaled
from tests.transfer.conftest import channel_pair


async def _offer(out: Path, offer: Offer) -> tuple[Message, BaseException | object]:
    sender, receiver = await channel_pair()

    async def hostile(channel: RecordChannel) -> Message:
        await send_message(channel, offer)
        return await recv_message(channel, 60)

    try:
        reply, outcome = await asyncio.gather(
            hostile(sender), receive_files(receiver, out), return_exceptions=True
        )
    finally:
        await sender.close()
        await receiver.close()
    assert not isinstance(reply, BaseException), reply
    return reply, outcome


def _many(count: int) -> Manifest:
    folders = [Entry(f"d{n}", "dir") for n in range(count // 1000 + 1)]
    files = [Entry(f"d{n // 1000}/f{n}", "file", 1) for n in range(count - len(folders))]
    return Manifest((*folders, *files))


async def test_an_offer_of_too_many_entries_is_refused_before_any_work(tmp_path: Path) -> None:
    for attempt in range(scaled(1, 3)):
        out = tmp_path / f"out{attempt}"
        os.mkdir(out)
        entries = MAX_ENTRIES + 1 + attempt * 50_000
        began = time.monotonic()
        reply, outcome = await _offer(out, Offer(_many(entries)))
        took = time.monotonic() - began
        assert isinstance(reply, Reject), reply
        assert f"at most {MAX_ENTRIES}" in reply.reason and str(entries) in reply.reason
        assert isinstance(outcome, ManifestError)
        assert os.listdir(out) == []
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
        print(f"{entries} entries refused in {took:.2f} s, test process peak RSS {peak} MiB")


@pytest.mark.parametrize("chunk", [1, 0, (64 << 20) + 1])
async def test_a_bad_chunk_size_is_refused_with_the_reason(tmp_path: Path, chunk: int) -> None:
    manifest = Manifest((Entry("x", "file", 3),))
    reply, outcome = await _offer(tmp_path, Offer(manifest, chunk))
    assert isinstance(reply, Reject), reply
    assert f"bad chunk size {chunk}" in reply.reason
    assert isinstance(outcome, PeerProtocolError)
    assert os.listdir(tmp_path) == []


async def test_an_oversized_offer_message_is_refused_and_the_sender_told(tmp_path: Path) -> None:
    huge = "a" * (1 << 20)  # not a legal name; the size bound comes first
    manifest = Manifest(tuple(Entry(f"{huge}{n}", "file", 1) for n in range(65)))
    reply, outcome = await _offer(tmp_path, Offer(manifest))
    assert isinstance(reply, Reject), reply
    assert f"larger than {MAX_OFFER_BYTES >> 20} MiB" in reply.reason
    assert isinstance(outcome, PeerProtocolError)
    assert os.listdir(tmp_path) == []


async def test_a_bad_resume_chunk_list_from_the_receiver_gets_a_reason(tmp_path: Path) -> None:
    """The receiver claims a 10-byte .part but sends no chunk digests: the sender says why."""
    source = tmp_path / "x.bin"
    source.write_bytes(b"0123456789abcdef")
    sender, receiver = await channel_pair()

    async def hostile(channel: RecordChannel) -> Message:
        assert isinstance(await recv_message(channel, 60), Offer)
        await send_message(channel, Accept((ResumeOffer(0, 10, ()),)))
        return await recv_message(channel, 60)

    try:
        sent, reply = await asyncio.gather(
            send_files(sender, build_manifest([source])), hostile(receiver), return_exceptions=True
        )
    finally:
        await sender.close()
        await receiver.close()
    assert isinstance(sent, PeerProtocolError), sent
    assert isinstance(reply, ErrorMessage), reply
    assert "resume chunk list does not match its offset" in reply.reason
