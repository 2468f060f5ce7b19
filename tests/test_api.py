"""The Python API (issue 14 item 4): docs/api.md's example runs as written; results and events."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import delshare
from delshare.api import receive, send

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_package_re_exports_the_api() -> None:
    assert delshare.send is send and delshare.receive is receive


def test_the_example_in_docs_api_md_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", API_DOC.read_text(encoding="utf-8"), re.S)
    example = next(b for b in blocks if "asyncio.run(main())" in b)
    script = tmp_path / "example.py"
    script.write_text(example, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "connected: direct"
    assert re.fullmatch(r"verified: hello\.txt [0-9a-f]{16}", lines[1])
    assert lines[2] == "text: see you at 6"


def test_a_stream_is_sent_as_read_and_arrives_whole(tmp_path: Path) -> None:
    """``send(stream=...)``: one file of unknown size, named after ``paths[0]``, byte for byte."""
    import asyncio
    import io
    import os

    from delshare.app.events import Event, TransferStarted
    from delshare.pairing import serve_rendezvous

    data = os.urandom(3 << 20)
    started: list[TransferStarted] = []

    def note(event: Event) -> None:
        if isinstance(event, TransferStarted):
            started.append(event)

    async def both() -> None:
        server = await serve_rendezvous("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{server.port}"
        try:
            sent, received = await asyncio.gather(
                send(["log.bin"], stream=io.BytesIO(data), code="9-guitar-orbit", rendezvous=url),
                receive("9-guitar-orbit", output=tmp_path, rendezvous=url, events=note),
            )
        finally:
            server.close()
            await server.wait_closed()
        assert sent.files == received.files and received.total == len(data)

    asyncio.run(both())
    assert (tmp_path / "log.bin").read_bytes() == data
    assert [s.streaming for s in started] == [True]
