"""The documents the code points at exist, and docs/protocol.md names the formats as coded.

``docs/protocol.md`` describes every wire format; these checks take the markers and message
types from the code (constants, and messages encoded by the real encoders) and look for them on
the page, so a format that changes without its page fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from delshare.app.connect import LINK_KEY_PURPOSE
from delshare.link import crypto, signalling, ticket
from delshare.pairing import envelope, lan, pake, wire
from delshare.transfer import protocol
from delshare.transfer.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL_DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
CITED = re.compile(r"[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b")


def python_files() -> list[Path]:
    """Our Python files (not those in hidden folders such as ``bench/.venv-wormhole``)."""
    return sorted(
        p
        for top in ("src", "tests", "bench")
        for p in (ROOT / top).rglob("*.py")
        if not any(part.startswith(".") for part in p.relative_to(ROOT / top).parts)
    )


def test_every_document_a_source_file_cites_exists() -> None:
    missing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in python_files()
        for name in CITED.findall(path.read_text(encoding="utf-8"))
        if not (ROOT / name).is_file() and not (ROOT / "docs" / name).is_file()
    }
    assert not missing


def compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


@pytest.mark.parametrize(
    "marker",
    [
        crypto.MAGIC.decode(),
        LINK_KEY_PURPOSE.decode(),
        pake.APPID.decode(),
        ticket.PREFIX,
        f"{lan.GROUP}:{lan.PORT}",
        compact({"del": lan.VERSION}).strip("{}"),
        compact({"v": signalling.VERSION}).strip("{}"),
        compact({"v": protocol.VERSION}).strip("{}"),
        f"{wire.MAX_FRAME // 1024} KiB",
    ],
)
def test_protocol_page_names_the_version_markers(marker: str) -> None:
    assert marker in PROTOCOL_DOC


def test_protocol_page_numbers_record_kinds_and_mailbox_phases() -> None:
    for kind in crypto.RecordKind:
        assert f"`{kind.value}` {kind.name}" in PROTOCOL_DOC
    for phase in envelope.Phase:
        assert f"| `{phase.name}` | `0x{phase.value:02x}` |" in PROTOCOL_DOC


RENDEZVOUS_MESSAGES = [
    wire.OpenMessage("7"),
    wire.AddMessage("b"),
    wire.RelayMessage("b"),
    wire.ErrorMessage("r"),
    wire.CloseMessage("r"),
]
TRANSFER_MESSAGES = [
    protocol.Offer(Manifest(())),
    protocol.Accept(),
    protocol.Reject("r"),
    protocol.FileBegin(0, 0),
    protocol.FileEnd(0, b""),
    protocol.Done(),
    protocol.ErrorMessage("r"),
    protocol.HashRequest((0,)),
    protocol.Hashes(((0, bytes(32)),)),
    protocol.Wait(),
]


@pytest.mark.parametrize("message", RENDEZVOUS_MESSAGES, ids=lambda m: type(m).__name__)
def test_protocol_page_lists_every_rendezvous_message(
    message: wire.ClientMessage | wire.ServerMessage,
) -> None:
    fields = json.loads(wire.encode(message))
    assert compact({"type": fields["type"]}).strip("}") in PROTOCOL_DOC


@pytest.mark.parametrize("message", TRANSFER_MESSAGES, ids=lambda m: type(m).__name__)
def test_protocol_page_lists_every_transfer_message(message: protocol.Message) -> None:
    fields = json.loads(protocol.encode_message(message))
    head = compact({"v": fields["v"], "type": fields["type"]}).strip("}")
    assert head in PROTOCOL_DOC
    for name in fields:
        assert f'"{name}"' in PROTOCOL_DOC


SIGNALS = [
    signalling.CandidatesOffered("any", ()),
    signalling.ReflexiveFound(()),
    signalling.RelayReady(),
    signalling.AttemptsExhausted(),
    signalling.SetupFailed("r"),
]


@pytest.mark.parametrize("signal", SIGNALS, ids=lambda m: type(m).__name__)
def test_protocol_page_lists_every_link_signal(signal: signalling.Signal) -> None:
    fields = signalling.encode(signal)
    assert compact({"t": fields["t"], "v": fields["v"]}).strip("}") in PROTOCOL_DOC
    for name in fields:
        assert f'"{name}"' in PROTOCOL_DOC


def readme_layout() -> dict[str, str]:
    """README.md's "Layout" block: each entry (two spaces in) and its description (with the
    continuation lines indented deeper)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    entries: dict[str, str] = {}
    name = ""
    for line in layout.splitlines():
        if re.match(r"  \S", line):
            name, _, text = line.strip().partition(" ")
            entries[name] = text
        elif line.startswith("   ") and name:
            entries[name] += " " + line.strip()
    return entries


def test_readme_layout_names_every_part_of_the_package() -> None:
    listed = set(readme_layout())
    package = ROOT / "src" / "delshare"
    parts = {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    parts |= {p.name for p in package.glob("*.py") if not p.name.startswith("_")}
    assert parts == listed


def test_readme_layout_names_only_modules_that_exist() -> None:
    """A module named in a package's description (snake_case: ``receive_plan``) is one of its
    files, so a split or rename that leaves the layout behind fails here."""
    package = ROOT / "src" / "delshare"
    for name, text in readme_layout().items():
        if not name.endswith("/") or not (package / name).is_dir():
            continue
        for module in re.findall(r"\b[a-z]+(?:_[a-z]+)+\b", text):
            assert (package / name / f"{module}.py").is_file(), f"README layout: {name}{module}"
