"""The OpenAPI 3.1 document, generated from the route table on every request.

Nothing here is written by hand per endpoint: paths, parameters, bodies,
responses and security all come from the ``Route`` declarations that also
drive registration, validation and the permission check, so whatever any
module registers is documented, and the document cannot promise what the
server does not do.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from beeyard.server.auth.middleware import CSRF_HEADER, SESSION_COOKIE
from beeyard.server.auth.principal import Access
from beeyard.server.http.routing import Route
from beeyard.shared.schema import Schema

OPENAPI_VERSION = "3.1.0"

# Put ``{RAW: False}`` in a route's ``response`` schema when the handler answers with the
# bare document rather than the ``{"data": ...}`` envelope (the OpenAPI document itself).
RAW = "x-beeyard-envelope"

API_KEY_HEADER = "X-API-Key"

# Security scheme names (components.securitySchemes).
SESSION = "session"
CSRF = "csrf"
API_KEY = "apiKey"
BEARER = "bearer"

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}")
_INTEGER_PATTERNS = {r"\d+", r"[0-9]+"}
_ID_NAMES = {"id"}
_SENTENCE = re.compile(r"(.+?[.!?])\s+(?=[A-Z`(])")

_DESCRIPTION = """\
The REST API of a Beeyard control plane. Every success is `{"data": ...}` (lists may add
paging keys beside `data`); every failure is `{"error": "message"}` with the HTTP status.

**Authentication.** A browser signs in with `POST /api/auth/login` and then carries the
`beeyard_session` cookie; its writes must also send the `X-CSRF-Token` header (the token is
returned by the login and by `GET /api/auth/me`). Scripts use an API key in `X-API-Key` (or
`Authorization: Bearer beeyard_...`); a read-scope key can only call GET. Mobile clients use
the short-lived access token from `POST /api/mobile/auth/login` as `Authorization: Bearer`.

**Access levels** (`x-beeyard-access` on every operation): `public` (anyone), `account`
(a signed-in person acting on their own account: API keys are refused), `viewer` (any
signed-in principal), `member` (role member or admin), `admin` (role admin),
`admin_interactive` (role admin, signed in as a person: API keys are refused, so no key can
create users or change anyone's password, role or 2FA).
"""

_ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    # status: (components.responses name, description)
    401: ("Unauthorized", "Not authenticated: no credential, or an invalid or expired one."),
    403: (
        "Forbidden",
        "Authenticated but not allowed: the role or API-key scope is insufficient, an API key "
        "called an account or user-administration route, or a cookie-authenticated write "
        "lacked the CSRF token.",
    ),
    404: ("NotFound", "No such resource."),
    408: ("RequestTimeout", "The request body did not arrive within the deadline."),
    413: ("PayloadTooLarge", "The request body exceeds this route's limit."),
    415: ("UnsupportedMediaType", "A request body must be sent as application/json."),
    422: (
        "ValidationError",
        "The body or query string does not match the declared schema; a field or query "
        "parameter that is not declared, or one given twice, counts as a mismatch.",
    ),
    429: ("TooManyRequests", "Rate limited; retry after the number of seconds in Retry-After."),
}

_RATE_HEADERS = {
    "X-RateLimit-Limit": {
        "description": "Failures allowed per window.",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {
        "description": "Failures left in the current window.",
        "schema": {"type": "integer"},
    },
}


def openapi_path(path: str) -> str:
    """aiohttp's ``/api/x/{id:\\d+}`` → OpenAPI's ``/api/x/{id}``."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def path_parameters(path: str) -> list[dict[str, Any]]:
    params = []
    for m in _PARAM.finditer(path):
        name, pattern = m.group(1), m.group(2)
        schema: dict[str, Any]
        if pattern in _INTEGER_PATTERNS:
            schema = {"type": "integer", "minimum": 0}
        elif name in _ID_NAMES and not pattern:
            # Beeyard's convention: ``{id}`` is a row id, parsed by ``http.params.path_id``.
            schema = {"type": "integer", "minimum": 1}
        elif pattern:
            schema = {"type": "string", "pattern": f"^(?:{pattern})$"}
        else:
            schema = {"type": "string"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def summary_and_description(route: Route) -> tuple[str, str | None]:
    """The summary and description of an operation, from the handler's docstring.

    The summary is the first sentence of the first paragraph (a docstring's first line
    may end mid-sentence); the description is what follows. A summary given
    explicitly in the declaration wins, and the whole docstring becomes the description.
    RST's ``code`` becomes Markdown's `code`.
    """
    doc = (inspect.getdoc(route.handler) or "").replace("``", "`")
    first_line = doc.splitlines()[0].strip() if doc else ""
    if route.summary and route.summary.strip().replace("``", "`") != first_line:
        return route.summary, doc or None
    if not doc:
        return route.summary or route.name, None
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", doc) if p.strip()]
    lead = " ".join(paragraphs[0].split())
    m = _SENTENCE.match(lead)
    summary = m.group(1) if m else lead
    rest = [lead[len(summary):].strip(), *paragraphs[1:]]
    return summary, "\n\n".join(p for p in rest if p) or None


def _security(route: Route) -> list[dict[str, list[str]]]:
    if route.access is Access.PUBLIC:
        return []
    session: dict[str, list[str]] = {SESSION: []}
    if route.is_write:
        session[CSRF] = []  # both: the cookie and the header
    alternatives: list[dict[str, list[str]]] = [session, {BEARER: []}]
    if not route.access.people_only:
        alternatives.insert(1, {API_KEY: []})
    return alternatives


def _envelope(data_schema: dict[str, Any] | None) -> dict[str, Any]:
    if data_schema is not None and data_schema.get(RAW) is False:
        return {k: v for k, v in data_schema.items() if k != RAW}
    return {
        "type": "object",
        "properties": {"data": data_schema if data_schema is not None else {}},
        "required": ["data"],
    }


def _error_ref(status: int) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{_ERROR_RESPONSES[status][0]}"}


class _Builder:
    def __init__(self) -> None:
        self.schemas: dict[str, dict[str, Any]] = {}
        self.tags: set[str] = set()

    def schema_ref(self, schema: Schema, owner: Route) -> dict[str, str]:
        """Put a body schema in components.schemas once; a clashing name gets the route's."""
        rendered = schema.json_schema(strict=True)  # bodies are validated strictly
        name = re.sub(r"[^A-Za-z0-9._-]", "_", schema.name) or owner.name
        if name in self.schemas and self.schemas[name] != rendered:
            name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{owner.name}.{name}")
        self.schemas[name] = rendered
        return {"$ref": f"#/components/schemas/{name}"}

    def operation(self, route: Route) -> dict[str, Any]:
        tags = list(route.tags) or [_default_tag(route.path)]
        self.tags.update(tags)
        summary, description = summary_and_description(route)
        op: dict[str, Any] = {"operationId": route.name, "summary": summary, "tags": tags}
        if description:
            op["description"] = description
        params = path_parameters(route.path)
        if route.query is not None:
            params += [
                _query_parameter(f.name, f.required, f.json_schema()) for f in route.query.fields
            ]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": any(f.required for f in route.body.fields),
                "content": {"application/json": {"schema": self.schema_ref(route.body, route)}},
            }
        op["responses"] = self.responses(route)
        op["security"] = _security(route)
        op["x-beeyard-access"] = route.access.value
        return op

    def responses(self, route: Route) -> dict[str, Any]:
        out: dict[str, Any] = {}
        success: dict[str, Any] = {"description": _phrase(route.status)}
        if route.status != 204:
            success["content"] = {"application/json": {"schema": _envelope(route.response)}}
        if route.rate_limited:
            success["headers"] = dict(_RATE_HEADERS)
        out[str(route.status)] = success
        errors: set[int] = set()
        if route.access is not Access.PUBLIC:
            errors |= {401, 403}
        params = path_parameters(route.path)
        if params:
            errors.add(404)
        if any(p["schema"]["type"] == "integer" for p in params):
            errors.add(422)  # not a number
        if route.body is not None:
            errors |= {408, 413, 415, 422}
        if route.query is not None:
            errors.add(422)
        if route.rate_limited:
            errors.add(429)
        for status in sorted(errors | set(route.extra_statuses)):
            if str(status) in out:
                continue
            if status in _ERROR_RESPONSES:
                out[str(status)] = _error_ref(status)
            else:
                out[str(status)] = {
                    "description": _phrase(status),
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
        return out


def _query_parameter(name: str, required: bool, schema: dict[str, Any]) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": required}
    description = schema.pop("description", None)
    if description:
        param["description"] = description
    param["schema"] = schema
    return param


def _default_tag(path: str) -> str:
    parts = [p for p in path.split("/") if p and not p.startswith("{")]
    if parts and parts[0] == "api" and len(parts) > 1:
        return parts[1]
    return parts[0] if parts else "default"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _components(schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    error_schema = {"$ref": "#/components/schemas/Error"}
    responses: dict[str, Any] = {}
    for status, (name, description) in _ERROR_RESPONSES.items():
        response: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": error_schema}},
        }
        if status == 429:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds until the next attempt may succeed.",
                    "schema": {"type": "integer"},
                },
                **_RATE_HEADERS,
            }
        responses[name] = response
    return {
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {"type": "string", "description": "What went wrong, for people."},
                },
                "required": ["error"],
                "description": "The failure envelope. Some errors add machine-readable keys "
                "beside `error`, e.g. `totp_required: true` from a sign-in.",
            },
            **dict(sorted(schemas.items())),
        },
        "responses": responses,
        "securitySchemes": {
            SESSION: {
                "type": "apiKey",
                "in": "cookie",
                "name": SESSION_COOKIE,
                "description": "Browser session from POST /api/auth/login. Writes also need "
                f"the {CSRF_HEADER} header.",
            },
            CSRF: {
                "type": "apiKey",
                "in": "header",
                "name": CSRF_HEADER,
                "description": "The session's CSRF token (from the login response or GET "
                "/api/auth/me); required with the session cookie on every write.",
            },
            API_KEY: {
                "type": "apiKey",
                "in": "header",
                "name": API_KEY_HEADER,
                "description": "An API key (`beeyard_...`). A read-scope key may only call "
                "GET; no key may call account routes or change users "
                "(x-beeyard-access account or admin_interactive).",
            },
            BEARER: {
                "type": "http",
                "scheme": "bearer",
                "description": "A mobile access token (`bya_...`) from POST "
                "/api/mobile/auth/login, or an API key (refused, like X-API-Key, where "
                "x-beeyard-access is account or admin_interactive).",
            },
        },
    }


def document(routes: Iterable[Route], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes`` (typically ``app[routing.ROUTES].values()``)."""
    builder = _Builder()
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(routes, key=lambda r: (openapi_path(r.path), r.method)):
        item = paths.setdefault(openapi_path(route.path), {})
        method = route.method.lower()
        if method in item:  # pragma: no cover - aiohttp refuses a duplicate route first
            raise ValueError(f"{route.method} {route.path} is declared twice")
        item[method] = builder.operation(route)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Beeyard",
            "version": version,
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": t} for t in sorted(builder.tags)],
        "paths": paths,
        "components": _components(builder.schemas),
    }
