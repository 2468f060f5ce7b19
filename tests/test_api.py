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
