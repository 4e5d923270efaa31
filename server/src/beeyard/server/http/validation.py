"""Reading request bodies and query strings against their declared schemas.

Bodies are read in bounded chunks, so a client that sends more than the route
allows is refused with 413 without the excess ever being held in memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from beeyard.server.http.envelope import ApiError
from beeyard.server.http.routing import Route
from beeyard.shared.schema import Schema, SchemaError

# Clients that forget the header send octet-stream or text/plain; JSON is what we parse.
_JSON_TYPES = ("application/json", "application/octet-stream", "text/plain")


async def read_limited(request: web.Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body too large: limit is {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(request: web.Request, decl: Route) -> dict[str, Any]:
    assert decl.body is not None
    raw = await read_limited(request, decl.max_body) if request.body_exists else b""
    if raw.strip():
        ctype = request.content_type
        if ctype not in _JSON_TYPES and not ctype.endswith("+json"):
            raise ApiError(415, f"request body must be application/json, got {ctype}")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise ApiError(400, "request body is not usable JSON: nested too deeply") from None
        except ValueError:  # an integer literal longer than Python converts (4300 digits)
            raise ApiError(400, "request body is not usable JSON: a number is too long") from None
    else:
        data = {}
    if not isinstance(data, dict):
        raise ApiError(422, "request body must be a JSON object")
    return validate(decl.body, data)


def validate(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return schema.validate(data)
    except SchemaError as exc:
        raise ApiError(422, str(exc)) from None


def parse_query(schema: Schema, query: Mapping[str, str]) -> dict[str, Any]:
    """Convert query strings to the declared kinds before validating them."""
    converted: dict[str, Any] = {}
    for f in schema.fields:
        if f.name not in query:
            continue
        raw = query[f.name]
        try:
            if f.kind == "int":
                converted[f.name] = int(raw)
            elif f.kind == "float":
                converted[f.name] = float(raw)
            elif f.kind == "bool":
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                converted[f.name] = raw.lower() in ("true", "1")
            else:
                converted[f.name] = raw
        except ValueError:
            raise ApiError(422, f"query parameter {f.name}: must be {_article(f.kind)}") from None
    return validate(schema, converted)


def _article(kind: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false"}.get(kind, kind)
