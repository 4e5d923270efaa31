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

    def field_named(self, name: str) -> Field | None:
        """The declaration of field ``name``, or None if this schema has no such field."""
        return self._by_name.get(name)

    def _fast(self, data: object) -> Any:
        """The common case, valid data of exact types, checked by a function generated
        from the declaration (straight-line code, no error locations); anything else
        returns ``_MISS`` and takes the precise path, which gives the same result or
        the error. This is the agent link's hot path: a live sample has about a
        hundred fields, 10,000 of them a second at a large fleet, and a generic
        walk over the fields cost three times as much as this (docs/benchmarks.md)."""
        fast = self._fast_checks
        if fast is None:
            fast = _generate(self)
            object.__setattr__(self, "_fast_checks", fast)
        return fast(data)

    def prepare(self) -> None:
        """Generate the fast paths of this map and the maps inside it now, not at first
        use: a long-running process that checks a frame type once a minute would
        otherwise pay the compile (milliseconds) in its steady state."""
        if self._fast_checks is None:
            object.__setattr__(self, "_fast_checks", _generate(self))
        for f in self.fields:
            for inner in (f.schema, f.items.schema if f.items is not None else None):
                if inner is not None:
                    inner.prepare()

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


def _generate(schema: Schema) -> Callable[[Any], Any]:
    """Python source for ``schema``'s fast path, compiled once: for each field, fetch
    it, default it when absent, and test exact type and bounds inline; nested maps
    call their own generated function. Returns the checked copy or ``_MISS``."""
    env: dict[str, Any] = {"MISS": _MISS, "BAD_TEXT": _UNSTORABLE.search}
    lines = ["def fast(d):", "    if type(d) is not dict:", "        return MISS", "    g = d.get"]
    for i, f in enumerate(schema.fields):
        v = f"v{i}"
        lines.append(f"    {v} = g({f.name!r}, MISS)")
        lines.append(f"    if {v} is MISS:")
        if f.required:
            lines.append("        return MISS")
        else:
            env[f"D{i}"] = f.default
            lines.append(f"        {v} = D{i}")
        if _null_ok(f):
            lines.append(f"    elif {v} is None:")
            lines.append("        pass")
        lines.append("    else:")
        lines.extend("        " + line for line in _field_source(f, v, env, str(i)))
    pairs = ", ".join(f"{f.name!r}: v{i}" for i, f in enumerate(schema.fields))
    lines.append(f"    return {{{pairs}}}")
    exec(compile("\n".join(lines), f"<fast path of {schema.name}>", "exec"), env)  # noqa: S102
    fast: Callable[[Any], Any] = env["fast"]
    return fast


def _null_ok(f: Field) -> bool:
    return f.nullable or (not f.required and f.default is None)


def _field_source(f: Field, v: str, env: dict[str, Any], key: str) -> list[str]:
    """Statements that check ``v`` (not None) for ``f``, rebinding it to the checked
    value, or ``return MISS``."""
    bad = _bad_scalar(f, v, env, key)
    if bad is not None:
        return [f"if {bad}:", "    return MISS"]
    lo, hi = _bounds(f, env, key)
    if f.kind == "map" and f.schema is not None:
        env[f"F{key}"] = f.schema._fast
        return [f"if type({v}) is not dict or not {lo} <= len({v}) <= {hi}:", "    return MISS",
                f"{v} = F{key}({v})", f"if {v} is MISS:", "    return MISS"]
    if f.kind == "list" and f.items is not None:
        head = [f"if type({v}) is not list or not {lo} <= len({v}) <= {hi}:", "    return MISS"]
        item = f.items
        x = f"x{key}"
        bad = _bad_scalar(item, x, env, key + "i")
        if bad is not None:  # scalars are immutable: the list is kept as it is
            if _null_ok(item):
                bad = f"{x} is not None and ({bad})"
            return [*head, f"for {x} in {v}:", f"    if {bad}:", "        return MISS"]
        if item.kind == "map" and item.schema is not None and not _null_ok(item):
            lo, hi = _bounds(item, env, key + "i")
            env[f"F{key}"] = item.schema._fast
            return [*head, f"r{key} = []", f"for {x} in {v}:",
                    f"    if type({x}) is not dict or not {lo} <= len({x}) <= {hi}:",
                    "        return MISS",
                    f"    {x} = F{key}({x})", f"    if {x} is MISS:", "        return MISS",
                    f"    r{key}.append({x})", f"{v} = r{key}"]
    return ["return MISS"]  # rarer shapes: always the precise path


def _bad_scalar(f: Field, v: str, env: dict[str, Any], key: str) -> str | None:
    """An expression true when the scalar ``v`` is not plainly valid for ``f``; None
    when ``f`` is not a scalar kind."""
    lo, hi = _bounds(f, env, key)
    if f.kind == "float":
        bad = f"type({v}) is not float or not {lo} <= {v} <= {hi}"
    elif f.kind == "int":
        bad = f"type({v}) is not int or not {lo} <= {v} <= {hi}"
    elif f.kind == "bool":
        bad = f"type({v}) is not bool"
    elif f.kind == "str":
        bad = (f"type({v}) is not str or not {lo} <= len({v}) <= {hi} "
               f"or ('\\x00' in {v} if {v}.isascii() else BAD_TEXT({v}) is not None)")
        if f.pattern is not None:
            env[f"P{key}"] = re.compile(f.pattern).fullmatch
            bad += f" or P{key}({v}) is None"
    else:
        return None
    if f.choices is not None:
        env[f"C{key}"] = frozenset(f.choices) if f.kind == "str" else f.choices
        bad += f" or {v} not in C{key}"
    return bad


def _bounds(f: Field, env: dict[str, Any], key: str) -> tuple[str, str]:
    """Names of ``f``'s bounds in ``env``; finite even when unbounded, so that inf and
    nan miss the fast path (and get the precise path's message)."""
    env[f"LO{key}"] = -_HUGE if f.min is None else f.min
    env[f"HI{key}"] = _HUGE if f.max is None else f.max
    return f"LO{key}", f"HI{key}"


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
