"""delshare.fields: every read checks type, range and size, and fails with the caller's error
naming the field; bool is never an integer; unknown fields are ignored."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delshare.errors import PairingError
from delshare.fields import Fields

HEX32 = "ab" * 32


def fields(obj: object) -> Fields:
    return Fields(obj, PairingError, "offer")


def test_a_non_object_is_refused_with_the_callers_error() -> None:
    objs: list[object] = [[], "x", 3, None, True]
    for obj in objs:
        with pytest.raises(PairingError, match="offer is not a JSON object"):
            fields(obj)


def test_each_read_returns_the_checked_value() -> None:
    view = fields({"name": "a", "n": 7, "ok": False, "mode": "relay", "list": [1], "extra": 0})
    assert view.text("name", max_len=1) == "a"
    assert view.integer("n", 1, 7) == 7
    assert view.flag("ok") is False
    assert view.one_of("mode", ("any", "relay")) == "relay"
    assert view.items("list", max_len=1) == [1]


def test_defaults_only_for_missing_fields() -> None:
    view = fields({"n": None})
    assert view.integer("m", 0, 1, default=0) == 0
    assert view.text("s", max_len=3, default="?") == "?"
    with pytest.raises(PairingError, match="'n' must be an integer"):
        view.integer("n", 0, 1, default=0)
    with pytest.raises(PairingError, match="'m' is missing"):
        view.integer("m", 0, 1)


@pytest.mark.parametrize(
    ("obj", "read"),
    [
        ({"n": True}, lambda f: f.integer("n", 0, 5)),
        ({"n": 6}, lambda f: f.integer("n", 0, 5)),
        ({"n": 1.0}, lambda f: f.integer("n", 0, 5)),
        ({"s": "abcd"}, lambda f: f.text("s", max_len=3)),
        ({"s": 1}, lambda f: f.text("s", max_len=3)),
        ({"b": 1}, lambda f: f.flag("b")),
        ({"m": 1}, lambda f: f.one_of("m", (True, "x"))),
        ({"m": "y"}, lambda f: f.one_of("m", ("x",))),
        ({"l": [1, 2]}, lambda f: f.items("l", max_len=1)),
        ({"l": {}}, lambda f: f.items("l", max_len=1)),
        ({"o": []}, lambda f: f.nested("o")),
    ],
)
def test_wrong_types_sizes_and_ranges_are_refused(obj: dict[str, object], read: object) -> None:
    with pytest.raises(PairingError, match="offer"):
        read(fields(obj))  # type: ignore[operator]


def test_list_reads_check_every_item() -> None:
    view = fields({"t": ["a", "bc"], "i": [0, 3], "h": [HEX32], "o": [{"k": 1}], "x": "7"})
    assert view.texts("t", max_items=2, max_len=2, min_len=1) == ["a", "bc"]
    assert view.integers("i", 0, 3, max_items=2) == [0, 3]
    assert view.hexes("h", 32, max_items=1) == [bytes.fromhex(HEX32)]
    assert [o.integer("k", 1, 1) for o in view.objects("o", max_items=1)] == [1]
    assert view.texts("missing", max_items=1, max_len=1, default=[]) == []
    assert view.text("x", max_len=1, matching=re.compile("[0-9]")) == "7"


@pytest.mark.parametrize(
    ("obj", "read", "error"),
    [
        ({"t": ["a", ""]}, lambda f: f.texts("t", max_items=2, max_len=2, min_len=1), "'t' must"),
        ({"t": ["a", "b"]}, lambda f: f.texts("t", max_items=1, max_len=2), "at most 1 strings"),
        ({"i": [True]}, lambda f: f.integers("i", 0, 3, max_items=1), "integers from 0 to 3"),
        ({"i": [4]}, lambda f: f.integers("i", 0, 3, max_items=1), "integers from 0 to 3"),
        ({"h": ["ab" * 31]}, lambda f: f.hexes("h", 32, max_items=1), "strings of 64 hex"),
        ({"h": "ab"}, lambda f: f.hexes("h", 1, max_items=1), "'h' must be a list"),
        ({"h": "zz"}, lambda f: f.hex("h", 1), "'h' must be 2 hex digits"),
        ({"h": "a b "}, lambda f: f.hex("h", 2), "'h' must be 4 hex digits"),
        ({"o": [{}, 1]}, lambda f: f.objects("o", max_items=2), r"offer\.o\[1\] is not"),
        ({"o": [{}, {}]}, lambda f: f.objects("o", max_items=1), "at most 1 JSON objects"),
        ({"x": "7a"}, lambda f: f.text("x", max_len=2, matching=re.compile("[0-9]+")), "match"),
        ({"type": "nope"}, lambda f: f.message_type({"yes"}), "unknown message type 'nope'"),
        ({"type": 1}, lambda f: f.message_type({"yes"}), "'type' must be a string"),
    ],
)
def test_list_and_pattern_reads_refuse_with_the_field_named(
    obj: dict[str, object], read: object, error: str
) -> None:
    with pytest.raises(PairingError, match=error):
        read(fields(obj))  # type: ignore[operator]


def test_null_is_absent_or_null() -> None:
    view = fields({"a": None, "b": 0})
    assert view.null("a") and view.null("c") and not view.null("b")


def test_shown_quotes_a_value_briefly() -> None:
    view = fields({"n": 123456789, "l": [1] * 1000})
    assert view.shown("n", 4) == "1234"
    assert view.shown("l") == "list"


@pytest.mark.parametrize(
    "data", [b"nope", b"\xff\xfe\xfd", b"[" * 100_000, "{" * 10_000], ids=lambda d: repr(d)[:12]
)
def test_load_turns_any_undecodable_input_into_the_callers_error(data: str | bytes) -> None:
    with pytest.raises(PairingError, match="offer is not JSON"):
        Fields.load(data, PairingError, "offer")


def test_load_reads_one_object_under_a_new_name() -> None:
    view = Fields.load(b'{"type":"x","n":1}', PairingError, "offer").named("x offer")
    with pytest.raises(PairingError, match="x offer: 'n' must be"):
        view.integer("n", 2, 3)


def test_nested_objects_name_their_path() -> None:
    with pytest.raises(PairingError, match=r"offer\.path: 'kind' is missing"):
        fields({"path": {}}).nested("path").text("kind", max_len=5)


def test_versions_are_read_from_v() -> None:
    assert fields({"v": 2}).version({1, 2}) == 2
    assert fields({}).version({1, 2}, default=1) == 1
    with pytest.raises(
        PairingError, match=r"unsupported protocol version 3 \(this side speaks 1, 2\)"
    ):
        fields({"v": 3}).version({1, 2})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(obj=st.dictionaries(st.sampled_from(["n", "s", "l", "o"]), json_values))
def test_any_json_gives_a_value_or_the_callers_error(obj: dict[str, object]) -> None:
    json.dumps(obj)
    view = fields(obj)
    for read in (
        lambda: view.integer("n", 0, 10),
        lambda: view.text("s", max_len=5),
        lambda: view.items("l", max_len=3),
        lambda: view.nested("o").flag("b"),
    ):
        with contextlib.suppress(PairingError):
            read()
