"""The command line is a thin client of the Python API (issue 14 item 4): ``delshare send`` and
``delshare receive`` reach the app's transfer entry points only through :mod:`delshare.api`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[2] / "src" / "delshare" / "cli"
APP_ENTRY_POINTS = {"run_send", "run_send_to", "run_receive", "run_listen"}


def _imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", ["send.py", "receive.py"])
def test_the_cli_goes_through_the_api(module: str) -> None:
    names = _imported_names(CLI / module)
    assert not names & APP_ENTRY_POINTS, f"cli/{module} calls the app directly"
    assert {"send_with", "receive_with"} & names, f"cli/{module} does not call delshare.api"
