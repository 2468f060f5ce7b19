"""Start-up cost: ``send``/``receive`` load only what a direct transfer with a code needs.

Imports are most of a tiny transfer's time (benchmark case 6), so the TURN client, the STUN
codec, the rendezvous server and the ticket flow load only when their options are used, and
``rich`` only when a terminal shows progress bars.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NOT_AT_START = (
    "delshare.aio.client",
    "delshare.stun",
    "delshare.turn.uri",
    "delshare.pairing.server",
    "delshare.pairing.mailbox",
    "websockets.asyncio.server",
    "delshare.app.manual",
    "delshare.link.ticket",
    "delshare.pairing.lan",
    "rich",  # only a terminal's progress bars need it
)


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("module", ["delshare.cli.send", "delshare.cli.receive"])
def test_command_module_leaves_optional_parts_unloaded(module: str) -> None:
    loaded = loaded_after_import(module)
    assert "delshare.pairing.client" in loaded  # the check itself sees real imports
    assert sorted(loaded.intersection(NOT_AT_START)) == []


def test_server_side_names_still_import_from_the_package() -> None:
    from delshare.pairing import MailboxTable, RendezvousServer, serve_rendezvous

    assert MailboxTable.__module__ == "delshare.pairing.mailbox"
    assert RendezvousServer.__module__ == "delshare.pairing.server"
    assert serve_rendezvous.__module__ == "delshare.pairing.server"
    with pytest.raises(AttributeError):
        _ = __import__("delshare.pairing").pairing.no_such_name
