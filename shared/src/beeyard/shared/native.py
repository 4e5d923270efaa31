"""A compiled decoder for the frames that arrive thousands of times a second.

At 10,000 agents the server decodes 10,000 ``sample`` frames a second. Unpacking
one with msgpack and walking its hundred fields in Python cost ~31 µs; msgspec
decodes and checks the same bytes in C against types generated from the very
same ``Schema`` declarations in ~15 µs, and ``to_builtins`` hands back the plain
dicts everything else expects. That halves the largest cost the server has
per agent (docs/benchmarks.md), which is why msgspec is a server dependency.

A sample's ``metrics`` stay as the decoder's records rather than dicts: turning
them into dicts (``to_builtins``) was another 12 % of the server at 10,000
agents, and the server reads only a dozen of their values per sample (the
summary scalars) while a client watching one server, or an API read, needs
them in full; ``plain()`` converts a record when that happens. Records answer
``record["name"]`` and ``record.get("name")`` like the dicts they stand for, and
are read-only.

Only the hot frame types go this way (``HOT``); anything msgspec refuses, and
every other frame, takes ``wire.decode``'s own path, which gives the precise
error message. So the compiled decoder can only make a valid frame faster: the
declarations stay the single source of truth, and a property test holds the
two paths to the same answers. Without msgspec installed (the agent does not
need it) ``decoder()`` returns None and nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Annotated, Any, Literal, Optional

from beeyard.shared.schema import _HUGE, Field, Schema

HOT = ("sample", "summary", "ping", "pong")  # pings: 2,000 a second each way at 10,000

Decoded = tuple[str, dict[str, Any], int | None]


def decoder(schemas: dict[str, Schema], max_id: int) -> Callable[[bytes], Decoded] | None:
    """A function from bytes to ``(type, body, id)`` for the ``HOT`` frame types, raising
    on anything else; None without msgspec."""
    try:
        import msgspec
    except ImportError:
        return None
    global _RECORD
    _RECORD = _RECORD or _record_base(msgspec)
    frames = []
    names: dict[type, str] = {}
    for name in HOT:
        body = _struct(msgspec, schemas[name])
        frame = msgspec.defstruct(
            f"{name}_frame", [("b", body), ("id", Optional[  # noqa: UP045 - runtime type
                Annotated[int, msgspec.Meta(ge=0, le=max_id)]], None)],
            tag_field="t", tag=name)
        frames.append(frame)
        names[frame] = name
    decode = msgspec.msgpack.Decoder(_union(frames)).decode
    to_builtins = msgspec.to_builtins

    def run(data: bytes) -> Decoded:
        message = decode(data)
        name = names[type(message)]
        b = message.b
        if name == "sample":  # the metrics stay a record (see above)
            return name, {"ts": b.ts, "metrics": b.metrics}, message.id
        body: dict[str, Any] = to_builtins(b)
        return name, body, message.id

    return run


_RECORD: Any = None  # the base class of decoded records, made with msgspec


def _record_base(msgspec: Any) -> type:
    class Record(msgspec.Struct, frozen=True):  # type: ignore[misc,call-arg]
        """A decoded map that reads like the dict it stands for (a read-only Mapping)."""

        def __getitem__(self, name: str) -> Any:
            try:
                return getattr(self, name)
            except AttributeError:
                raise KeyError(name) from None

        def get(self, name: str, default: Any = None) -> Any:
            return getattr(self, name, default)

        def __iter__(self) -> Iterator[str]:
            return iter(self.__struct_fields__)

        def __len__(self) -> int:
            return len(self.__struct_fields__)

        def __contains__(self, name: object) -> bool:
            return name in self.__struct_fields__

        def keys(self) -> KeysView[str]:
            return KeysView(self)

        def items(self) -> ItemsView[str, Any]:
            return ItemsView(self)

        def values(self) -> ValuesView[Any]:
            return ValuesView(self)

    Mapping.register(Record)  # so that code checking for a Mapping takes it as one
    return Record


def is_record(value: object) -> bool:
    return _RECORD is not None and isinstance(value, _RECORD)


def plain(value: Any) -> Any:
    """``value`` with every record in it turned into the dict it stands for."""
    if _RECORD is None:
        return value
    import msgspec

    return msgspec.to_builtins(value)


def _union(types: list[type]) -> Any:
    out: Any = types[0]
    for t in types[1:]:
        out = out | t
    return out


def _struct(msgspec: Any, schema: Schema) -> type:
    """A Struct type checking what ``schema.validate`` checks. Unknown fields are
    ignored, absent optional ones get their defaults, as in the lenient validator."""
    required = [(f.name, _type(msgspec, f)) for f in schema.fields if f.required]
    optional = [(f.name, _type(msgspec, f), f.default) for f in schema.fields if not f.required]
    # gc=False: a record is an immutable tree of scalars and lists, never part of a
    # cycle, so the collector need not track (and walk) the ~30 of them in each sample.
    struct: type = msgspec.defstruct(schema.name, [*required, *optional], bases=(_RECORD,),
                                     frozen=True, gc=False)
    return struct


def _type(msgspec: Any, f: Field) -> Any:
    sizes: dict[str, int] = {}
    if f.min is not None:
        sizes["min_length"] = int(f.min)
    if f.max is not None:
        sizes["max_length"] = int(f.max)
    t: Any
    if f.kind == "float":  # finite bounds always: inf and nan are refused, as in validate
        t = Annotated[float, msgspec.Meta(ge=-_HUGE if f.min is None else f.min,
                                          le=_HUGE if f.max is None else f.max)]
    elif f.kind == "int":
        t = Annotated[int, msgspec.Meta(ge=None if f.min is None else int(f.min),
                                        le=None if f.max is None else int(f.max))]
    elif f.kind == "bool":
        t = bool
    elif f.kind == "str" and f.pattern is None:
        # NUL is not storable in PostgreSQL text: refused, as in validate (msgspec
        # already refuses what is not UTF-8, surrogates included).
        t = Annotated[str, msgspec.Meta(pattern="^[^\x00]*$", **sizes)]
    elif f.kind == "list" and f.items is not None:
        t = Annotated[list[_type(msgspec, f.items)], msgspec.Meta(**sizes)]  # type: ignore[misc]
    elif f.kind == "map" and f.schema is not None and not sizes:  # a Struct has no size
        t = _struct(msgspec, f.schema)
    else:
        raise ValueError(f"{f.name}: no compiled form for a {f.kind} field")
    if f.choices is not None:
        t = Literal[tuple(f.choices)]
    if f.nullable or (not f.required and f.default is None):
        t = Optional[t]  # noqa: UP045 - a runtime type expression
    return t
