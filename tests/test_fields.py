"""delshare.fields: every read checks type, range and size, and fails with the caller's error
naming the field; bool is never an integer; unknown fields are ignored."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delshare.errors import PairingError
from delshare.fields import Fields


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
