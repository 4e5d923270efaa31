"""The OpenAPI document is generated from the route table: valid 3.1, complete, exact.
Swagger UI is served from vendored files with no inline script."""

from __future__ import annotations

import re
import secrets
from collections import Counter
from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from beeyard.server.app import SESSION_COOKIE, create_app
from beeyard.server.auth.principal import Access
from beeyard.server.config import Settings
from beeyard.server.http import openapi, routing
from beeyard.server.http.envelope import ok
from beeyard.server.http.routing import Route, route
from beeyard.shared.schema import Field, Schema

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def declared(app: web.Application) -> list[Route]:
    return list(app[routing.ROUTES].values())


async def fetch_document(client: Any) -> dict[str, Any]:
    async with client.get("/api-docs/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        return await resp.json()  # type: ignore[no-any-return]


async def test_document_is_valid_openapi_31(client: Any) -> None:
    doc = await fetch_document(client)  # anonymous: the document is public
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "Beeyard"
    validate(doc)  # raises on any structural error (openapi-spec-validator, 3.1 rules)


async def test_every_registered_route_appears_exactly_once(client: Any) -> None:
    doc = await fetch_document(client)
    routes = declared(client.server.app)
    assert routes, "no routes registered"
    documented = Counter((m, p) for m, p, _ in operations(doc))
    registered = Counter((r.method, openapi.openapi_path(r.path)) for r in routes)
    assert documented == registered
    assert all(n == 1 for n in documented.values())
    ids = Counter(op["operationId"] for _, _, op in operations(doc))
    assert ids == Counter(r.name for r in routes)
    # The pages (/, /swagger-ui/) and static files are not API operations.
    assert not any(p in doc["paths"] for p in ("/", "/swagger-ui/", "/swagger-ui"))


async def test_each_operation_matches_its_declaration(client: Any) -> None:
    doc = await fetch_document(client)
    by_key = {(r.method, openapi.openapi_path(r.path)): r for r in declared(client.server.app)}
    schemes = set(doc["components"]["securitySchemes"])
    for method, path, op in operations(doc):
        r = by_key[(method, path)]
        where = f"{method} {path}"
        assert op["operationId"] == r.name, where
        assert op["summary"], where
        assert (op["summary"], op.get("description")) == openapi.summary_and_description(r)
        assert op["x-beeyard-access"] == r.access.value, where
        assert op["tags"], where
        responses = op["responses"]
        assert str(r.status) in responses, where
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert names == set(re.findall(r"\{(\w+)", r.path)), where
        if names:
            assert "404" in responses, where
        if r.access is Access.PUBLIC:
            assert op["security"] == [], where
            assert "401" not in responses or 401 in r.extra_statuses, where
        else:
            assert {"401", "403"} <= set(responses), where
            assert op["security"], where
            used = {name for alt in op["security"] for name in alt}
            assert used <= schemes, where
            api_key_allowed = any("apiKey" in alt for alt in op["security"])
            people_only = r.access in (Access.ACCOUNT, Access.ADMIN_INTERACTIVE)
            assert api_key_allowed == (not people_only), where
            if r.is_write:
                assert {"session": [], "csrf": []} in op["security"], where
        if r.body is not None:
            assert "requestBody" in op and "422" in responses, where
        else:
            assert "requestBody" not in op, where
        if r.query is not None:
            query = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            assert query == {f.name for f in r.query.fields}, where
            assert "422" in responses, where
        if r.rate_limited:
            assert "429" in responses, where


async def test_document_follows_routes_added_at_build_time(
    settings: Settings, aiohttp_client: Any
) -> None:
    """A route any module registers is in the document, rendered from its declaration."""
    body = Schema("Widget", (
        Field("name", "str", min=1, max=40, doc="what to call it"),
        Field("size", "int", required=False, min=0, max=10),
        Field("secret", "str", required=False, secret=True),
    ))
    query = Schema("WidgetQuery", (
        Field("limit", "int", required=False, min=1, max=100, doc="page size"),
        Field("q", "str"),
    ))

    @route("PUT", r"/api/widgets/{id:\d+}/parts/{part}", Access.MEMBER, "widgets.update",
           body=body, query=query, tags=("widgets",), rate_limited=True, status=201,
           response={"type": "object", "properties": {"id": {"type": "integer"}}},
           extra_statuses=(409,))
    async def update(request: web.Request) -> web.Response:
        """Update a widget.

        Longer text that explains
        the details.
        """
        return ok({})

    @route("POST", "/api/widgets/me", Access.ACCOUNT, "widgets.mine")
    async def mine(request: web.Request) -> web.Response:
        return ok({})

    @route("POST", "/api/widgets/owners", Access.ADMIN_INTERACTIVE, "widgets.owners")
    async def owners(request: web.Request) -> web.Response:
        return ok({})

    @route("DELETE", "/api/widgets/{id}", Access.ADMIN, "widgets.delete")
    async def delete(request: web.Request) -> web.Response:
        """Delete a widget for good: its parts go too, and
        the ``name`` is free again. Nobody can undo it.

        Admins only.
        """
        return ok({})

    app = create_app(settings)
    routing.install(app, [update, mine, owners, delete])
    client = await aiohttp_client(app)
    doc = await fetch_document(client)
    validate(doc)

    op = doc["paths"]["/api/widgets/{id}/parts/{part}"]["put"]
    assert op["operationId"] == "widgets.update"
    assert op["summary"] == "Update a widget."
    assert op["description"] == "Longer text that explains\nthe details."
    assert op["tags"] == ["widgets"]
    assert op["x-beeyard-access"] == "member"
    params = {(p["in"], p["name"]): p for p in op["parameters"]}
    assert params["path", "id"]["schema"] == {"type": "integer", "minimum": 0}
    assert params["path", "part"]["schema"] == {"type": "string"}
    assert params["query", "limit"]["required"] is False
    assert params["query", "limit"]["description"] == "page size"
    assert params["query", "limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert params["query", "q"]["required"] is True
    assert op["requestBody"]["required"] is True
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/Widget"
    widget = doc["components"]["schemas"]["Widget"]
    assert widget["required"] == ["name"]
    assert widget["additionalProperties"] is False  # bodies are read strictly
    assert widget["properties"]["name"] == {
        "type": "string", "description": "what to call it", "minLength": 1, "maxLength": 40,
    }
    assert widget["properties"]["secret"]["format"] == "password"
    responses = op["responses"]
    assert set(responses) == {"201", "401", "403", "404", "408", "409", "413", "415", "422",
                              "429"}
    success = responses["201"]["content"]["application/json"]["schema"]
    assert success["properties"]["data"] == {
        "type": "object", "properties": {"id": {"type": "integer"}},
    }
    assert success["required"] == ["data"]
    assert "X-RateLimit-Remaining" in responses["201"]["headers"]
    assert responses["429"] == {"$ref": "#/components/responses/TooManyRequests"}
    assert "Retry-After" in doc["components"]["responses"]["TooManyRequests"]["headers"]
    assert responses["409"]["description"] == "Conflict"
    assert op["security"] == [{"session": [], "csrf": []}, {"apiKey": []}, {"bearer": []}]

    mine_op = doc["paths"]["/api/widgets/me"]["post"]
    assert mine_op["security"] == [{"session": [], "csrf": []}, {"bearer": []}]
    assert "requestBody" not in mine_op
    assert set(mine_op["responses"]) == {"200", "401", "403"}
    assert mine_op["summary"] == "widgets.mine"  # no docstring: the name stands in

    owners_op = doc["paths"]["/api/widgets/owners"]["post"]
    assert owners_op["x-beeyard-access"] == "admin_interactive"
    assert owners_op["security"] == [{"session": [], "csrf": []}, {"bearer": []}]
    assert set(owners_op["responses"]) == {"200", "401", "403"}

    delete_op = doc["paths"]["/api/widgets/{id}"]["delete"]
    assert delete_op["summary"] == (
        "Delete a widget for good: its parts go too, and the `name` is free again."
    )
    assert delete_op["description"] == "Nobody can undo it.\n\nAdmins only."
    assert delete_op["parameters"][0]["schema"] == {"type": "integer", "minimum": 1}
    assert set(delete_op["responses"]) == {"200", "401", "403", "404", "422"}

    health = doc["paths"]["/api/health"]["get"]
    assert health["security"] == []
    assert health["x-beeyard-access"] == "public"
    assert set(health["responses"]) == {"200"}

    spec = doc["paths"]["/api-docs/openapi.json"]["get"]["responses"]["200"]
    schema = spec["content"]["application/json"]["schema"]
    assert "data" not in schema.get("properties", {})  # the document is not enveloped
    assert openapi.RAW not in schema


def test_security_schemes() -> None:
    doc = openapi.document([], "1.0")
    validate(doc)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["session"] == {**schemes["session"], "type": "apiKey", "in": "cookie",
                                  "name": SESSION_COOKIE}
    assert schemes["csrf"]["in"] == "header"
    assert schemes["csrf"]["name"] == "X-CSRF-Token"
    assert schemes["apiKey"]["name"] == "X-API-Key"
    assert schemes["bearer"]["type"] == "http"
    assert schemes["bearer"]["scheme"] == "bearer"
    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]


def test_validator_rejects_a_broken_document() -> None:
    """The structural check has teeth: a response without a description is refused."""
    doc = openapi.document([], "1.0")
    doc["paths"]["/x"] = {"get": {"operationId": "x", "responses": {"200": {}}}}
    with pytest.raises(OpenAPIValidationError):
        validate(doc)


def test_clashing_schema_names_stay_apart() -> None:
    async def h(request: web.Request) -> web.Response:
        return ok()

    a = Route("POST", "/a", h, Access.ADMIN, "a.create", body=Schema("Thing", (Field("x", "int"),)))
    b = Route("POST", "/b", h, Access.ADMIN, "b.create", body=Schema("Thing", (Field("y", "str"),)))
    doc = openapi.document([a, b], "1.0")
    validate(doc)
    refs = {
        p: doc["paths"][p]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        for p in ("/a", "/b")
    }
    assert refs["/a"] != refs["/b"]
    assert doc["components"]["schemas"]["Thing"]["properties"] == {"x": {"type": "integer"}}


def test_path_parameter_patterns() -> None:
    assert openapi.openapi_path(r"/api/x/{id:\d+}/y/{name:[a-z]{2,3}}") == "/api/x/{id}/y/{name}"
    params = openapi.path_parameters(r"/api/x/{id:\d+}/y/{name:[a-z]{2,3}}")
    assert params[1]["schema"] == {"type": "string", "pattern": "^(?:[a-z]{2,3})$"}


def test_document_of_the_real_app_needs_no_database() -> None:
    """The generator reads declarations only, so it works on an app that never started."""
    app = create_app(Settings(secret_key=secrets.token_bytes(32), database_url="postgresql://x/y"))
    doc = openapi.document(declared(app), "1.0")
    validate(doc)
    assert len(operations(doc)) == len(declared(app))
