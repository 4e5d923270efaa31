"""The web UI and Swagger UI: static files served by the same process.

The UI is native ES modules with no build step; third-party browser code lives in
``static/vendor/`` at the versions pinned in ``vendor.json`` (refreshed from the npm
registry by ``scripts/vendor-web.py``). Pages load nothing from another origin and
run no inline script, so the UI's ``Content-Security-Policy: default-src 'self'``
holds. Everything here is public: the pages are the same for everyone and talk
only to the REST API, which checks every call.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from beeyard.server.http import routing

STATIC = Path(__file__).parent / "static"
VENDOR_LOCK = Path(__file__).parent / "vendor.json"

# path -> the file it serves (or, for a redirect, where it sends the browser)
PAGES = {
    "/": "index.html",
    "/swagger-ui/": "swagger-ui.html",
}
REDIRECTS = {"/swagger-ui": "/swagger-ui/"}


def _page(filename: str) -> routing.Handler:
    path = STATIC / filename

    async def page(request: web.Request) -> web.StreamResponse:
        # The shell is tiny; revalidate it so a new release's modules are picked up.
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return page


def _redirect(location: str) -> routing.Handler:
    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently(location)

    return redirect


def install(app: web.Application) -> None:
    """Serve the UI at ``/``, its assets under ``/static/`` and Swagger UI at ``/swagger-ui/``.

    The routes are declared public static content, so the start-up completeness
    check accepts them and the OpenAPI document (which describes the API) omits them.
    """
    static: set[AbstractRoute] = app.setdefault(routing.STATIC, set())
    handlers = {path: _page(name) for path, name in PAGES.items()}
    handlers.update({path: _redirect(to) for path, to in REDIRECTS.items()})
    for path, handler in handlers.items():
        resource = app.router.add_resource(path)
        resource.add_route("GET", handler)
        resource.add_route("HEAD", handler)
        static.update(resource)
    routing.add_static(app, "/static", STATIC)
