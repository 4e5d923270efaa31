"""The agent link's frames: msgpack maps, each type declared once, checked on both sides.

A frame on the wire is ``{"t": type, "id": correlation id or absent, "b": body}``.
``decode`` is the only door from bytes to a frame: it refuses an oversize
message, bad msgpack, an unknown type or a body that breaks its schema with a
``WireError`` that says which, and it never raises anything else, so a peer
cannot crash the other side with any sequence of bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from beeyard.shared.schema import Field, Schema, SchemaError

PROTOCOL_VERSION = "1.0"
MAX_FRAME = 4 * 1024 * 1024  # bytes on the wire; file chunks stay well below this
_MAX_ID = 2**63 - 1


class WireError(ValueError):
    """A frame could not be decoded or encoded; the message names the problem."""


@dataclass(frozen=True)
class Frame:
    type: str
    body: dict[str, Any]
    id: int | None = None


_REGISTRY: dict[str, Schema] = {}


def declare(schema: Schema) -> Schema:
    """Register a frame type under its schema's name; a name is declared once."""
    if schema.name in _REGISTRY:
        raise ValueError(f"frame type {schema.name!r} declared twice")
    _REGISTRY[schema.name] = schema
    return schema


def frame_types() -> dict[str, Schema]:
    return dict(_REGISTRY)


def encode(frame_type: str, body: dict[str, Any], id: int | None = None) -> bytes:
    """Validate ``body`` against its declaration and pack it. Our own bugs fail here,
    on the sending side, rather than as a confusing refusal on the other."""
    schema = _REGISTRY.get(frame_type)
    if schema is None:
        raise WireError(f"unknown frame type {frame_type!r}")
    try:
        checked = schema.validate(body, prefix=f"{frame_type}.")
    except SchemaError as exc:
        raise WireError(str(exc)) from None
    message: dict[str, Any] = {"t": frame_type, "b": _compact(checked, schema)}
    if id is not None:
        message["id"] = id
    data: bytes = msgpack.packb(message, use_bin_type=True)
    if len(data) > MAX_FRAME:
        raise WireError(f"{frame_type} frame of {len(data)} bytes exceeds {MAX_FRAME}")
    return data


def _compact(value: Any, schema: Schema) -> Any:
    """Drop absent optional fields (None) so that defaults are not sent on the wire.

    Only declared fields are dropped: inside a map the schema leaves open (an
    operation's ``args`` or ``result``) a None is a value, and arrives as one."""
    out = {}
    for name, item in value.items():
        if item is None:
            continue
        field = schema.field_named(name)
        if field is not None:
            item = _compact_field(item, field)
        out[name] = item
    return out


def _compact_field(value: Any, field: Field) -> Any:
    if field.schema is not None and isinstance(value, dict):
        return _compact(value, field.schema)
    if field.items is not None and field.items.schema is not None and isinstance(value, list):
        return [_compact(v, field.items.schema) if isinstance(v, dict) else v for v in value]
    return value


_native: Any = None  # native.decoder() once the frame types are declared (frames.py)


def prepare(*frame_types: str) -> None:
    """Build the schema checks of these frame types now (see ``Schema.prepare``)."""
    for frame_type in frame_types:
        _REGISTRY[frame_type].prepare()


def compile_hot_frames() -> None:
    """Build the compiled decoder of the hot frame types, where msgspec is installed;
    once per process (every app the server or a test creates asks)."""
    global _native
    if _native is not None:
        return
    from beeyard.shared import frames, native

    assert frames.SAMPLE is _REGISTRY["sample"]  # every type is declared by now
    _native = native.decoder(_REGISTRY, _MAX_ID)


def parse_version(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise WireError(f"protocol version {version!r} is not MAJOR.MINOR") from None


def compatible(version: str) -> str | None:
    """None if a peer speaking ``version`` can talk to us, else the reason it cannot."""
    try:
        theirs = parse_version(version)
    except WireError as exc:
        return str(exc)
    ours = parse_version(PROTOCOL_VERSION)
    if theirs[0] != ours[0]:
        return (
            f"protocol {version} is incompatible with this server's {PROTOCOL_VERSION}: "
            "upgrade the older side"
        )
    return None


def decode(data: bytes | bytearray | memoryview) -> Frame:
    """Bytes to a checked frame, or ``WireError``. Never any other exception."""
    try:
        size = len(data)
        if size > MAX_FRAME:
            raise WireError(f"frame of {size} bytes exceeds {MAX_FRAME}")
        if _native is not None:
            try:
                frame_type, checked, frame_id = _native(data)
            except Exception:  # noqa: S110 - not a plainly valid hot frame: the path below
                pass
            else:
                return Frame(frame_type, checked, frame_id)
        try:
            message = msgpack.unpackb(
                bytes(data),
                raw=False,
                strict_map_key=True,
                use_list=True,
            )
        except Exception as exc:  # msgpack raises a zoo: ExtraData, FormatError, ValueError...
            raise WireError(f"not a msgpack message: {type(exc).__name__}") from None
        if not isinstance(message, dict):
            raise WireError("frame must be a map")
        frame_type = message.get("t")
        if not isinstance(frame_type, str):
            raise WireError("frame has no type")
        schema = _REGISTRY.get(frame_type)
        if schema is None:
            raise WireError(f"unknown frame type {frame_type[:64]!r}")
        frame_id = message.get("id")
        if frame_id is not None and (
            isinstance(frame_id, bool) or not isinstance(frame_id, int)
            or not 0 <= frame_id <= _MAX_ID
        ):
            raise WireError("frame id must be a non-negative integer")
        try:
            body = schema.validate(message.get("b", {}), prefix=f"{frame_type}.")
        except SchemaError as exc:
            raise WireError(str(exc)) from None
        return Frame(frame_type, body, frame_id)
    except WireError:
        raise
    except Exception as exc:  # a bug of ours must still not escape as anything else
        raise WireError(f"undecodable frame: {type(exc).__name__}") from None


# Every frame type is declared in frames.py; importing it here means that whoever
# can decode has every declaration loaded. (At the end: frames needs ``declare``.)
from beeyard.shared import frames as _frames  # noqa: E402, F401
