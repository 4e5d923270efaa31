"""The schema vocabulary that guards both the wire and the REST API."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beeyard.shared.schema import _MISS, Field, Schema, SchemaError

USER = Schema(
    "user",
    (
        Field("username", "str", min=1, max=64, pattern=r"[a-z0-9._-]+"),
        Field("age", "int", required=False, min=0, max=200),
        Field("ratio", "float", required=False, min=0, max=1),
        Field("role", "str", required=False, choices=("admin", "viewer"), default="viewer"),
        Field("tags", "list", required=False, max=3, items=Field("tag", "str", max=8)),
        Field("blob", "bin", required=False, max=4),
        Field("flag", "bool", required=False),
        Field("nested", "map", required=False, nullable=True,
              schema=Schema("inner", (Field("x", "int"),))),
    ),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_validate_raises_only_schema_error(data: Any) -> None:
    try:
        out = USER.validate(data)
    except SchemaError as exc:
        assert str(exc)
    else:
        assert set(out) == {f.name for f in USER.fields}


@given(st.dictionaries(st.sampled_from([f.name for f in USER.fields]), json_values, max_size=8))
def test_validate_field_level_inputs_raise_only_schema_error(data: dict[str, Any]) -> None:
    data.setdefault("username", "ok")
    try:
        USER.validate(data)
    except SchemaError as exc:
        assert str(exc).split(":")[0].split(".")[0].split("[")[0] in data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "username: is required"),
        ({"username": ""}, "username: must have at least 1 characters"),
        ({"username": "UPPER"}, "username: has an invalid format"),
        ({"username": "a", "age": "3"}, "age: must be an integer"),
        ({"username": "a", "age": True}, "age: must be an integer"),
        ({"username": "a", "age": 201}, "age: must be at most 200"),
        ({"username": "a", "ratio": float("nan")}, "ratio: must be a finite number"),
        ({"username": "a", "role": "root"}, "role: must be one of admin, viewer"),
        ({"username": "a", "tags": ["x"] * 4}, "tags: must have at most 3 items"),
        ({"username": "a", "tags": ["toolongtag"]}, "tags[0]: must have at most 8 characters"),
        ({"username": "a", "blob": b"12345"}, "blob: must have at most 4 bytes"),
        ({"username": "a", "nested": {"x": "1"}}, "nested.x: must be an integer"),
        ({"username": None}, "username: must not be null"),
        ([1, 2], "user: must be an object"),
    ],
)
def test_errors_name_the_field_and_rule(data: Any, message: str) -> None:
    with pytest.raises(SchemaError) as caught:
        USER.validate(data)
    assert str(caught.value) == message


def test_optional_null_is_absent() -> None:
    assert USER.validate({"username": "a", "flag": None})["flag"] is None


def test_defaults_unknown_fields_and_conversion() -> None:
    out = USER.validate({"username": "a", "ratio": 1, "unknown": 5, "nested": None})
    assert out["role"] == "viewer"
    assert out["ratio"] == 1.0 and isinstance(out["ratio"], float)
    assert "unknown" not in out
    assert out["nested"] is None


@given(json_values)
def test_strict_validate_raises_only_schema_error(data: Any) -> None:
    try:
        out = USER.validate(data, strict=True)
    except SchemaError as exc:
        assert str(exc)
    else:
        assert set(out) == {f.name for f in USER.fields}
        assert set(data) <= set(out)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"username": "a", "agee": 3}, "unknown field agee"),
        ({"username": "a", "role ": "admin"}, "unknown field 'role '"),
        ({"username": "a", "b": 1, "a": 2}, "unknown fields b, a"),
        ({"username": "a", **{f"k{i}": i for i in range(8)}},
         "unknown fields k0, k1, k2, k3, k4 and 3 more"),
        ({"username": "a", "": 1}, "unknown field ''"),
        ({"username": "a", 7: 1}, "unknown field 7"),
        ({"username": "a", "nested": {"x": 1, "y": 2}}, "nested: unknown field y"),
        ({"agee": 3}, "unknown field agee"),  # before the missing field: the likelier typo
    ],
)
def test_strict_mode_names_unknown_fields(data: dict[Any, Any], message: str) -> None:
    with pytest.raises(SchemaError) as caught:
        USER.validate(data, strict=True)
    assert str(caught.value) == message


def test_lenient_is_the_default_for_the_wire() -> None:
    """A newer peer may add fields: without ``strict`` they are dropped, nested ones too."""
    out = USER.validate({"username": "a", "agee": 3, "nested": {"x": 1, "y": 2}})
    assert "agee" not in out and out["nested"] == {"x": 1}
    assert USER.validate({"username": "a"}, strict=True)["role"] == "viewer"


def test_json_schema_mirrors_the_declaration() -> None:
    js = USER.json_schema()
    assert js["required"] == ["username"]
    props = js["properties"]
    assert props["username"] == {"type": "string", "minLength": 1, "maxLength": 64,
                                 "pattern": "^(?:[a-z0-9._-]+)$"}
    assert props["role"]["enum"] == ["admin", "viewer"]
    assert props["tags"]["items"]["maxLength"] == 8
    assert props["nested"]["type"] == ["object", "null"]
    assert props["nested"]["properties"]["x"]["type"] == "integer"


FAST_CASES = Schema("fast", (
    Field("n", "int", min=-5, max=5, choices=(-1, 0, 1)),
    Field("f", "float", required=False, min=0, max=1),
    Field("s", "str", required=False, max=4, choices=("a", "bb")),
    Field("p", "str", required=False, pattern=r"[a-z]+"),
    Field("b", "bool", required=False),
    Field("l", "list", required=False, max=3, items=Field("x", "float", max=10)),
    Field("m", "map", required=False, nullable=True,
          schema=Schema("inner", (Field("x", "int"), Field("y", "str", required=False)))),
    Field("free", "map", required=False),
    Field("blob", "bin", required=False, max=2),
    Field("rows", "list", required=False, max=3, items=Field("row", "map", max=2, schema=Schema(
        "row", (Field("k", "str"), Field("v", "float", required=False, nullable=True))))),
    Field("maybe", "list", required=False, items=Field("x", "int", nullable=True, min=0)),
))


def _assert_paths_agree(data: dict[str, Any]) -> None:
    fast = FAST_CASES._fast(data)
    try:
        precise = FAST_CASES._precise(data, "", False)
    except SchemaError:
        assert fast is _MISS
    else:
        assert fast is _MISS or fast == precise


@given(st.dictionaries(st.sampled_from([f.name for f in FAST_CASES.fields] + ["extra"]),
                       json_values, max_size=10))
def test_fast_path_agrees_with_the_precise_path(data: dict[str, Any]) -> None:
    """The compiled fast path either declines or returns exactly what the precise
    checks return; it can never accept what they refuse."""
    _assert_paths_agree(data)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, 2, 1.5, -0.5])
def test_fast_path_declines_edge_numbers(value: Any) -> None:
    assert FAST_CASES._fast({"n": 0, "f": value}) is _MISS


def test_fast_path_takes_the_common_case() -> None:
    data = {"n": 1, "f": 0.5, "s": "bb", "l": [1.0, 2.0], "m": {"x": 3},
            "rows": [{"k": "a", "v": 1.5}, {"k": "b", "v": None}], "maybe": [1, None, 2]}
    out = FAST_CASES._fast(data)
    assert out is not _MISS
    assert out == FAST_CASES._precise(data, "", False)


_rows = st.lists(st.fixed_dictionaries(
    {"k": st.text(max_size=3)}, optional={"v": st.none() | st.floats() | st.integers(),
                                          "z": json_values}), max_size=4)


@given(st.fixed_dictionaries({"n": st.sampled_from([0, 1, 2])}, optional={
    "rows": _rows, "maybe": st.lists(st.none() | st.integers(min_value=-2), max_size=4),
    "l": st.lists(st.floats() | st.integers(), max_size=4)}))
def test_fast_path_agrees_on_lists_of_maps_and_nullable_items(data: dict[str, Any]) -> None:
    """Nearly valid nested data, where the generated list and map code does the work."""
    _assert_paths_agree(data)
