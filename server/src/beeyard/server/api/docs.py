"""The API describing itself: the OpenAPI document, built from the route table.

Swagger UI, which renders it, is a static page of the web UI (``beeyard.server.web``).
"""

from __future__ import annotations

from aiohttp import web

from beeyard.server import __version__
from beeyard.server.auth.principal import Access
from beeyard.server.http import openapi, routing
from beeyard.server.http.envelope import dumps
from beeyard.server.http.routing import route

_DOCUMENT = {
    openapi.RAW: False,
    "type": "object",
    "description": "An OpenAPI 3.1 document, not wrapped in the envelope.",
    "required": ["openapi", "info", "paths"],
}


@route(
    "GET", "/api-docs/openapi.json", Access.PUBLIC, "docs.openapi", tags=("docs",),
    response=_DOCUMENT,
)
async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this server.

    Generated on each request from the declared routes, so it always matches what this
    server registers. Unlike every other route the document is returned as it is, not
    wrapped in `{"data": ...}`, so that OpenAPI tools can read it directly.
    """
    doc = openapi.document(request.app[routing.ROUTES].values(), __version__)
    return web.json_response(doc, dumps=dumps)


ROUTES = [openapi_json]
