"""Declarative field schemas: one declaration validates data and describes it.

The same small vocabulary checks msgpack frames on the wire and JSON bodies on
the REST API, and renders itself as JSON Schema for the OpenAPI document, so a
field is declared exactly once and the docs cannot drift from the checks.

``Schema.validate`` never raises anything but ``SchemaError``: it is what
stands between untrusted bytes and the rest of the program.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["str", "int", "float", "bool", "bin", "list", "map", "any"]

_JSON_TYPES: dict[str, str] = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "bin": "string",
    "list": "array",
    "map": "object",
}


# Valid in JSON ("\u0000", "\ud800") but not storable in PostgreSQL text nor encodable
# as UTF-8: refused here so they surface as a 422, not as a database error.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


class SchemaError(ValueError):
    """Data does not match its schema; the message names the field and the rule."""


@dataclass(frozen=True)
class Field:
    """One field: its kind, whether it must be present, and its bounds.

    ``min``/``max`` bound the value of numbers and the length of strings,
    bytes, lists and maps. ``items`` describes list elements; ``schema``
    describes a nested map with named fields.
    """

    name: str
    kind: Kind
    required: bool = True
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None
    items: Field | None = None
    schema: Schema | None = None
    doc: str = ""
    default: Any = None
    secret: bool = False  # rendered as format "password" in the docs

    def check(self, value: Any, where: str, *, strict: bool = False) -> Any:
        """Return ``value`` (converted where lossless) or raise ``SchemaError``.

        ``strict`` refuses undeclared keys in nested maps (see ``Schema.validate``).
        """
        if value is None:
            if self.nullable or (not self.required and self.default is None):
                return None  # an optional field sent as null is the same as absent
            raise SchemaError(f"{where}: must not be null")
        kind = self.kind
        if kind == "str":
            if not isinstance(value, str):
                raise SchemaError(f"{where}: must be a string")
            if _UNSTORABLE.search(value):
                raise SchemaError(f"{where}: must not contain NUL or unpaired surrogate characters")
            self._check_size(len(value), where, "characters")
            if self.pattern is not None and not re.fullmatch(self.pattern, value):
                raise SchemaError(f"{where}: has an invalid format")
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise SchemaError(f"{where}: must be an integer")
            self._check_range(value, where)
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SchemaError(f"{where}: must be a number")
            value = float(value)
            if not math.isfinite(value):
                raise SchemaError(f"{where}: must be a finite number")
            self._check_range(value, where)
        elif kind == "bool":
            if not isinstance(value, bool):
                raise SchemaError(f"{where}: must be true or false")
        elif kind == "bin":
            if not isinstance(value, bytes | bytearray):
                raise SchemaError(f"{where}: must be binary")
            value = bytes(value)
            self._check_size(len(value), where, "bytes")
        elif kind == "list":
            if not isinstance(value, list | tuple):
                raise SchemaError(f"{where}: must be a list")
            self._check_size(len(value), where, "items")
            if self.items is not None:
                value = [self.items.check(v, f"{where}[{i}]", strict=strict)
                         for i, v in enumerate(value)]
            else:
                value = list(value)
        elif kind == "map":
            if not isinstance(value, Mapping):
                raise SchemaError(f"{where}: must be an object")
            self._check_size(len(value), where, "entries")
            if self.schema is not None:
                value = self.schema.validate(value, prefix=f"{where}.", strict=strict)
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise SchemaError(f"{where}: must be one of {allowed}")
        return value

    def _check_size(self, size: int, where: str, unit: str) -> None:
        if self.min is not None and size < self.min:
            raise SchemaError(f"{where}: must have at least {int(self.min)} {unit}")
        if self.max is not None and size > self.max:
            raise SchemaError(f"{where}: must have at most {int(self.max)} {unit}")

    def _check_range(self, value: float, where: str) -> None:
        if self.min is not None and value < self.min:
            raise SchemaError(f"{where}: must be at least {_num(self.min)}")
        if self.max is not None and value > self.max:
            raise SchemaError(f"{where}: must be at most {_num(self.max)}")

    def json_schema(self, *, strict: bool = False) -> dict[str, Any]:
        """Describe this field as JSON Schema (draft 2020-12, as OpenAPI 3.1 uses);
        ``strict`` describes nested maps as validated strictly (no other keys)."""
        out: dict[str, Any] = {}
        if self.kind != "any":
            out["type"] = _JSON_TYPES[self.kind]
        if self.nullable and "type" in out:
            out["type"] = [out["type"], "null"]
        if self.doc:
            out["description"] = self.doc
        if self.kind == "bin":
            out["contentEncoding"] = "base64"
        if self.secret:
            out["format"] = "password"
        bounds = {
            "str": ("minLength", "maxLength"),
            "bin": ("minLength", "maxLength"),
            "list": ("minItems", "maxItems"),
            "map": ("minProperties", "maxProperties"),
            "int": ("minimum", "maximum"),
            "float": ("minimum", "maximum"),
        }.get(self.kind)
        if bounds is not None:
            if self.min is not None:
                out[bounds[0]] = _num(self.min)
            if self.max is not None:
                out[bounds[1]] = _num(self.max)
        if self.pattern is not None:
            out["pattern"] = f"^(?:{self.pattern})$"
        if self.choices is not None:
            out["enum"] = list(self.choices)
        if self.items is not None:
            out["items"] = self.items.json_schema(strict=strict)
        if self.schema is not None:
            nested = self.schema.json_schema(strict=strict)
            nested.pop("type")  # keep ours, which may say nullable
            out.update(nested)
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True)
class Schema:
    """A named map of fields.

    Unknown keys are dropped by default, so that a newer peer can add fields to a
    wire frame without breaking an older one. ``validate(..., strict=True)``
    refuses them instead, for input a person or a script wrote against the
    documented API (REST bodies and query strings), where an unknown key is a
    typo, and dropping it would quietly do something other than what was asked.
    """

    name: str
    fields: tuple[Field, ...]
    doc: str = ""
    _by_name: dict[str, Field] = field(init=False, repr=False, compare=False, hash=False)
    _fast_checks: Any = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name: f for f in self.fields})
        object.__setattr__(self, "_fast_checks", None)

    def _fast(self, data: object) -> Any:
        """The common case, valid data of exact types, checked without building the
        error locations; anything else returns ``_MISS`` and takes the precise path,
        which gives the same result or the error. This is the agent link's hot path:
        a live sample has about a hundred fields, thousands of times a second."""
        if type(data) is not dict:
            return _MISS
        checks = self._fast_checks
        if checks is None:
            checks = tuple((f.name, f.required, f.default, _compile(f)) for f in self.fields)
            object.__setattr__(self, "_fast_checks", checks)
        out: dict[str, Any] = {}
        for name, required, default, check in checks:
            value = data.get(name, _MISS)
            if value is _MISS:
                if required:
                    return _MISS
                out[name] = default
                continue
            value = check(value)
            if value is _MISS:
                return _MISS
            out[name] = value
        return out

    def validate(self, data: object, prefix: str = "", *, strict: bool = False) -> dict[str, Any]:
        """Return a new dict holding only declared fields, checked and defaulted.

        With ``strict``, an undeclared key (here or in a nested map) is an error that
        names it, reported before anything else: a misspelt field is likelier than a
        missing one.
        """
        if not strict:
            fast = self._fast(data)
            if fast is not _MISS:
                return fast  # type: ignore[no-any-return]
        return self._precise(data, prefix, strict)

    def _precise(self, data: object, prefix: str, strict: bool) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise SchemaError(f"{prefix.rstrip('.') or self.name}: must be an object")
        if strict:
            unknown = [k for k in data if k not in self._by_name]
            if unknown:
                raise SchemaError(_unknown(prefix, unknown))
        out: dict[str, Any] = {}
        for f in self.fields:
            where = f"{prefix}{f.name}"
            if f.name in data:
                out[f.name] = f.check(data[f.name], where, strict=strict)
            elif f.required:
                raise SchemaError(f"{where}: is required")
            else:
                out[f.name] = f.default
        return out

    def json_schema(self, *, strict: bool = False) -> dict[str, Any]:
        """JSON Schema of the map; ``strict`` adds ``additionalProperties: false``, as
        ``validate(..., strict=True)`` enforces."""
        out: dict[str, Any] = {
            "type": "object",
            "properties": {f.name: f.json_schema(strict=strict) for f in self.fields},
        }
        if strict:
            out["additionalProperties"] = False
        required = [f.name for f in self.fields if f.required]
        if required:
            out["required"] = required
        if self.doc:
            out["description"] = self.doc
        return out


_MISS: Any = object()  # "not the easy case": take the precise path
_HUGE = 1.7976931348623157e308  # finite bounds, so that inf and nan miss the fast path


def _compile(f: Field) -> Callable[[Any], Any]:
    """A check of one field for exact types within bounds, returning the value
    (unchanged, as the precise path would) or ``_MISS``."""
    lo = -_HUGE if f.min is None else f.min
    hi = _HUGE if f.max is None else f.max
    null_ok = f.nullable or (not f.required and f.default is None)
    choices = f.choices
    if f.kind == "float":
        def check(v: Any) -> Any:
            return v if type(v) is float and lo <= v <= hi else _MISS
    elif f.kind == "int":
        def check(v: Any) -> Any:
            return v if type(v) is int and lo <= v <= hi else _MISS
    elif f.kind == "str" and f.pattern is None:
        def check(v: Any) -> Any:
            if type(v) is not str or not lo <= len(v) <= hi or _UNSTORABLE.search(v):
                return _MISS
            return v if choices is None or v in choices else _MISS
    elif f.kind == "bool":
        def check(v: Any) -> Any:
            return v if type(v) is bool else _MISS
    elif f.kind == "map" and f.schema is not None:
        nested = f.schema

        def check(v: Any) -> Any:
            return nested._fast(v) if type(v) is dict and lo <= len(v) <= hi else _MISS
    elif f.kind == "list" and f.items is not None:
        item = _compile(f.items)

        def check(v: Any) -> Any:
            if type(v) is not list or not lo <= len(v) <= hi:
                return _MISS
            out = [item(x) for x in v]
            return _MISS if _MISS in out else out
    else:  # rarer kinds: always the precise path
        def check(v: Any) -> Any:
            return _MISS

    if choices is not None and f.kind != "str":
        unchecked = check

        def check(v: Any) -> Any:
            v = unchecked(v)
            return v if v is _MISS or v in choices else _MISS

    if not null_ok:
        return check
    inner = check

    def nullable(v: Any) -> Any:
        return None if v is None else inner(v)

    return nullable


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+")
_UNKNOWN_SHOWN = 5


def _unknown(prefix: str, keys: list[Any]) -> str:
    """``unknown field x`` / ``nested: unknown fields a, 'b ' and 3 more``: a key that
    is not a plain name is quoted, so that a stray blank or an empty key is visible."""
    shown = [k if isinstance(k, str) and _PLAIN_KEY.fullmatch(k) else repr(k)[:60]
             for k in keys[:_UNKNOWN_SHOWN]]
    text = ", ".join(shown)
    if len(keys) > _UNKNOWN_SHOWN:
        text += f" and {len(keys) - _UNKNOWN_SHOWN} more"
    where = f"{prefix.rstrip('.')}: " if prefix else ""
    return f"{where}unknown field{'s' if len(keys) > 1 else ''} {text}"


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value
