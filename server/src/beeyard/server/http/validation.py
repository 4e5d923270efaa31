"""Reading request bodies and query strings against their declared schemas.

Bodies are read in bounded chunks, so a client that sends more than the route
allows is refused with 413 without the excess ever being held in memory, and
within a deadline, so a client that sends it slowly cannot hold that memory
(and the connection) for as long as it likes.

A body must say it is JSON. Browsers let any page send a cross-site ``text/plain``
form without asking the target first; a JSON content type they do not, so taking
``text/plain`` as JSON would let another site sign a visitor in as the attacker
(login CSRF) or call any public write.

Input is read strictly: a field or query parameter the route does not declare
is an error, not silently dropped, so a typo (``expires_in_day``) cannot turn a
request into a looser one than the client asked for. (Wire frames between agent
and server stay lenient, so that a newer peer can add fields.)
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web
from multidict import MultiMapping

from beeyard.server.http.envelope import ApiError
from beeyard.server.http.params import ascii_int
from beeyard.server.http.routing import Route
from beeyard.shared.schema import Schema, SchemaError

# Seconds a client has to deliver a body once we start reading it. Generous for any
# body we accept (64 KiB by default) over the slowest link; read at each request.
BODY_DEADLINE = 15.0

# ASCII only, like integers (params.py): float() also takes "１", "1_0", "nan" and "inf".
_NUMBER = re.compile(r"-?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][-+]?[0-9]{1,4})?")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")


async def read_limited(request: web.Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_DEADLINE):
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"request body too large: limit is {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "request body not received in time") from None
    return b"".join(chunks)


def _check_json_type(request: web.Request) -> None:
    if hdrs.CONTENT_TYPE not in request.headers:
        raise ApiError(415, "request body must be application/json; no Content-Type was given")
    ctype = request.content_type
    if ctype != "application/json" and not ("/" in ctype and ctype.endswith("+json")):
        raise ApiError(415, f"request body must be application/json, got {ctype[:100]}")


async def read_body(request: web.Request, decl: Route) -> dict[str, Any]:
    assert decl.body is not None
    raw = await read_limited(request, decl.max_body) if request.body_exists else b""
    if raw.strip():
        _check_json_type(request)
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
    """``data`` checked against ``schema``, strictly; a mismatch is a 422 naming it."""
    try:
        return schema.validate(data, strict=True)
    except SchemaError as exc:
        raise ApiError(422, str(exc)) from None


def parse_query(schema: Schema, query: MultiMapping[str]) -> dict[str, Any]:
    """Convert query strings to the declared kinds before validating them.

    Each parameter is declared and given once: a second value would otherwise be
    ignored, and which of two a proxy or a framework picks is not something a
    client should have to guess.
    """
    declared = {f.name for f in schema.fields}
    for name in dict.fromkeys(query):
        if name not in declared:
            raise ApiError(422, f"unknown query parameter {_shown(name)}")
        if len(query.getall(name)) > 1:
            raise ApiError(422, f"query parameter {_shown(name)} given more than once")
    converted: dict[str, Any] = {}
    for f in schema.fields:
        if f.name not in query:
            continue
        raw = query[f.name]
        value: Any = raw
        if f.kind == "int":
            value = ascii_int(raw)
        elif f.kind == "float":
            value = float(raw) if _NUMBER.fullmatch(raw) else None
        elif f.kind == "bool":
            value = {"true": True, "1": True, "false": False, "0": False}.get(raw.lower())
        if value is None:
            raise ApiError(422, f"query parameter {f.name}: must be {_article(f.kind)}")
        converted[f.name] = value
    return validate(schema, converted)


def _shown(name: str) -> str:
    return name if _PLAIN_NAME.fullmatch(name) else repr(name[:40])


def _article(kind: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false"}.get(kind, kind)
