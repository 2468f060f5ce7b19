"""Manifest building, path safety and display names."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delshare.transfer.errors import ManifestError, UnsafePathError
from delshare.transfer.manifest import (
    Destinations,
    Entry,
    Manifest,
    build_manifest,
    check_rel_path,
    display_name,
    safe_destination,
)

HOSTILE = [
    "",
    "/etc/passwd",
    "../x",
    "a/../../x",
    "a/./b",
    "a//b",
    "a/",
    "..",
    "a\\..\\b",
    "C:evil",
    "c:/windows/x",
    "CON",
    "nul.txt",
    "dir/com1",
    "LPT9.log",
    "a\x00b",
    "a\nb",
    "a\x1b[31mred",
    "evil\u202etxt.exe",
    "dir\u2066/x",
    "a\u200fb",
    "a\u061cb",
    "a\u2028b",
    "a\x9bb",
    "trailing.",
    "trailing ",
    "x" * 256,
]


def _one_offer(out: Path, rel: str) -> Path:
    return Destinations(out)(rel)


RESOLVERS = pytest.mark.parametrize(
    "resolve", [safe_destination, _one_offer], ids=["safe_destination", "Destinations"]
)
Resolve = Callable[[Path, str], Path]


@RESOLVERS
@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused(tmp_path: Path, name: str, resolve: Resolve) -> None:
    with pytest.raises(UnsafePathError):
        resolve(tmp_path, name)


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "a/b/c.txt",
        "ünïcødé/名前.txt",
        "console/x",
        "COM10",
        "..a",
        "a..b",
        "👨\u200d👩\u200d👧.jpg",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
    ],
)
@RESOLVERS
def test_ordinary_names_are_accepted(tmp_path: Path, name: str, resolve: Resolve) -> None:
    assert resolve(tmp_path, name) == tmp_path.resolve().joinpath(*name.split("/"))


@RESOLVERS
def test_path_through_existing_symlink_is_refused(tmp_path: Path, resolve: Resolve) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    (out / "real" / "deep").mkdir(parents=True)
    outside.mkdir()
    (out / "link").symlink_to(outside)
    (out / "real" / "deep" / "link").symlink_to(outside)
    for rel in ("link/x", "link", "real/deep/link/x/y", "real/deep/link"):
        with pytest.raises(UnsafePathError):
            resolve(out, rel)


def test_one_offers_destinations_remember_checked_folders(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    dest = Destinations(tmp_path)
    assert dest("a/b/c") == tmp_path.resolve() / "a" / "b" / "c"
    assert dest.folder_exists("a/b") and not dest.folder_exists("a/new")
    (tmp_path / "x").symlink_to(tmp_path / "a")
    with pytest.raises(UnsafePathError):  # first seen now: checked now
        dest("x/b/c")


@RESOLVERS
def test_path_through_a_file_is_refused(tmp_path: Path, resolve: Resolve) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UnsafePathError):
        resolve(tmp_path, "f/x")


@RESOLVERS
def test_output_dir_may_itself_be_a_symlink(tmp_path: Path, resolve: Resolve) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert resolve(tmp_path / "alias", "x") == (tmp_path / "real" / "x").resolve()


component = st.one_of(
    st.sampled_from(["..", ".", "", "CON", "nul", "a", "b.txt", "\\", "C:", "x/y"]),
    st.text(min_size=0, max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(component, min_size=1, max_size=6), lead=st.sampled_from(["", "/", "./"]))
def test_safe_destination_never_leaves_output_dir(
    tmp_path_factory: pytest.TempPathFactory, parts: list[str], lead: str
) -> None:
    out = tmp_path_factory.getbasetemp() / "hypo-out"
    out.mkdir(exist_ok=True)
    if not (out / "escape").is_symlink():
        (out / "escape").symlink_to("/")
    rel = lead + "/".join(parts)
    try:
        result = safe_destination(out, rel)
    except UnsafePathError:
        with pytest.raises(UnsafePathError):
            Destinations(out)(rel)
        return
    assert Destinations(out)(rel) == result
    root = os.path.realpath(out)
    assert os.path.commonpath([root, os.path.realpath(result)]) == root
    assert result != Path(root)


def test_display_name_escapes_sequences_and_controls_visibly() -> None:
    shown = display_name("\x1b[2J\x1b]0;title\x07evil\x1b[31m.txt")
    assert shown == "\\x1b[2J\\x1b]0;title\\x07evil\\x1b[31m.txt"
    assert display_name("a\nb\rc\x07") == "a\\x0ab\\x0dc\\x07"
    assert display_name("x\u202egnp.exe") == "x\\u202egnp.exe"
    assert display_name("fine name.txt") == "fine name.txt"
    assert display_name("bad\udcff.txt") == "bad\\udcff.txt"


def test_build_manifest_walks_sorted_and_skips_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"aa")
    (root / "b" / "deep" / "z").write_bytes(b"")
    (root / "empty").mkdir()
    (root / "link").symlink_to("/etc")
    (root / "b" / "filelink").symlink_to(root / "a.txt")
    built = build_manifest([root])
    paths = [e.path for e in built.manifest.entries]
    assert paths == ["tree", "tree/a.txt", "tree/b", "tree/b/deep", "tree/b/deep/z", "tree/empty"]
    assert sorted(built.skipped) == ["tree/b/filelink", "tree/link"]
    assert built.manifest.total_bytes == 2
    assert built.sources[1] == root / "a.txt"


def test_build_manifest_refuses_duplicate_top_level_names(tmp_path: Path) -> None:
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.txt").write_text(folder)
    with pytest.raises(ManifestError):
        build_manifest([tmp_path / "one" / "same.txt", tmp_path / "two" / "same.txt"])


def test_manifest_validation_catches_structure_problems() -> None:
    orphan = Manifest((Entry("a/b", "file"),))
    with pytest.raises(ManifestError):
        orphan.validate()
    duplicate = Manifest((Entry("a", "file"), Entry("a", "file")))
    with pytest.raises(ManifestError):
        duplicate.validate()
    for reserved in (".delshare-0123456789abcdef.part", "d/.delshare-0123456789abcdef.json"):
        clash = Manifest((Entry("d", "dir"), Entry(reserved, "file")))
        with pytest.raises(ManifestError, match="reserved for partial files"):
            clash.validate()
    Manifest((Entry("a", "file"), Entry("a.part", "file"))).validate()
    Manifest((Entry("a", "dir"), Entry("a/b", "file"))).validate()


def test_entry_from_wire_masks_special_mode_bits() -> None:
    entry = Entry.from_wire({"path": "x", "kind": "file", "size": 1, "mode": 0o4755, "mtime_ns": 5})
    assert entry.mode == 0o755
    with pytest.raises(ManifestError):
        Entry.from_wire({"path": "x", "kind": "file", "size": -1})
    with pytest.raises(UnsafePathError):
        Entry.from_wire({"path": "../x", "kind": "file"})


def test_check_rel_path_returns_components() -> None:
    assert check_rel_path("a/b/c") == ("a", "b", "c")


def test_a_stream_entry_has_no_size_on_the_wire_and_round_trips() -> None:
    entry = Entry("stdin", "file", 0, 0o644, 1, stream=True)
    wire = entry.to_wire()
    assert wire["size"] is None and wire["stream"] is True
    assert Entry.from_wire(wire) == entry
    assert "stream" not in Entry("a", "file", 3).to_wire()  # an ordinary entry is unchanged


@pytest.mark.parametrize(
    "wire",
    [
        {"path": "a", "kind": "file", "size": None},  # no size, not a stream
        {"path": "a", "kind": "file", "size": 5, "stream": True},  # a stream with a size
        {"path": "a", "kind": "dir", "size": None, "stream": True},
        {"path": "a", "kind": "file", "size": None, "stream": 1},
    ],
)
def test_a_bad_stream_entry_is_refused(wire: dict[str, object]) -> None:
    with pytest.raises(ManifestError):
        Entry.from_wire(wire)


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        ([], "manifest entry is not a JSON object"),
        ({"kind": "file"}, "manifest entry: 'path' is missing"),
        ({"path": 3, "kind": "file"}, "manifest entry: 'path' must be a string"),
        ({"path": "a\u202eb", "kind": "fifo"}, r"manifest entry a\\u202eb: 'kind' must be one of"),
        ({"path": "a"}, "manifest entry a: 'kind' is missing"),
        ({"path": "a", "kind": "file", "size": True}, "manifest entry a: 'size' must be an int"),
        ({"path": "a", "kind": "file", "size": 1 << 51}, "'size' must be an integer from 0 to"),
        ({"path": "a", "kind": "file", "mode": 0o10000}, "'mode' must be an integer from 0 to"),
        ({"path": "a", "kind": "file", "mtime_ns": 1.5}, "'mtime_ns' must be an integer"),
        ({"path": "a", "kind": "file", "stream": True}, "bad stream entry a"),  # size: null
        ({"path": "a", "kind": "file", "stream": "yes"}, "'stream' must be true or false"),
        ({"path": "d", "kind": "dir", "size": 1}, "bad size for d"),
    ],
)
def test_a_malformed_entry_names_the_field_and_the_path(wire: object, error: str) -> None:
    """Through delshare.fields; the path is shown escaped (delshare.text), as in every message."""
    with pytest.raises(ManifestError, match=error):
        Entry.from_wire(wire)
