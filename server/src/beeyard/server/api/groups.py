"""Server groups and tags: list (any signed-in principal), create, rename, delete (admin).

Groups and tags share one shape and one set of rules, so one factory declares
both families: names are 1-64 characters, unique without regard to case (a
clash is a 409), and deleting one never deletes a server.
"""

from __future__ import annotations

from types import ModuleType

from aiohttp import web

from beeyard.server import context
from beeyard.server.auth.principal import Access
from beeyard.server.db import groups as groups_db
from beeyard.server.db import tags as tags_db
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.params import path_id
from beeyard.server.http.routing import Route, route
from beeyard.shared.schema import Field, Schema

_ITEM = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "server_count": {"type": "integer"},
    },
}


def _routes(path: str, what: str, schema_name: str, db: ModuleType, tag: str) -> list[Route]:
    body = Schema(schema_name, (Field("name", "str", min=1, max=64),))
    audit = what.replace(" ", "_")

    def name_of(request: web.Request) -> str:
        name: str = " ".join(context.body(request)["name"].split())
        if not name:
            raise ApiError(422, "name: must not be blank")
        return name

    async def list_all(request: web.Request) -> web.Response:
        return ok(await db.list_all(context.pool(request)))

    async def create(request: web.Request) -> web.Response:
        name = name_of(request)
        try:
            row = await db.create(context.pool(request), name)
        except db.NameTaken:
            raise ApiError(409, f"a {what} named {name!r} already exists") from None
        request[context.AUDIT_TARGET] = f"{audit}:{row['id']}"
        request[context.AUDIT_DETAIL] = {"name": name}
        return ok(row, status=201)

    async def rename(request: web.Request) -> web.Response:
        item_id = path_id(request, what)
        name = name_of(request)
        try:
            row = await db.rename(context.pool(request), item_id, name)
        except db.NameTaken:
            raise ApiError(409, f"a {what} named {name!r} already exists") from None
        if row is None:
            raise ApiError(404, f"{what} {item_id} not found")
        request[context.AUDIT_TARGET] = f"{audit}:{item_id}"
        request[context.AUDIT_DETAIL] = {"name": name}
        return ok(row)

    async def delete(request: web.Request) -> web.Response:
        item_id = path_id(request, what)
        row = await db.delete(context.pool(request), item_id)
        if row is None:
            raise ApiError(404, f"{what} {item_id} not found")
        request[context.AUDIT_TARGET] = f"{audit}:{item_id}"
        request[context.AUDIT_DETAIL] = {"name": row["name"]}
        return ok({"id": item_id, "deleted": True})

    list_all.__doc__ = f"List every server {what} with how many servers it has."
    create.__doc__ = f"Create a server {what}; a name already taken (in any case) is a 409."
    rename.__doc__ = f"Rename a server {what}."
    delete.__doc__ = (f"Delete a server {what}; its servers stay"
                      + (", ungrouped." if what == "group" else ", without the tag."))
    one = f"{path}/{{id}}"
    return [
        route("GET", path, Access.VIEWER, f"{tag}.list", tags=(tag,),
              response={"type": "array", "items": _ITEM})(list_all),
        route("POST", path, Access.ADMIN, f"{tag}.create", body=body, status=201, tags=(tag,),
              response=_ITEM, extra_statuses=(409,))(create),
        route("PUT", one, Access.ADMIN, f"{tag}.update", body=body, tags=(tag,),
              response=_ITEM, extra_statuses=(409,))(rename),
        route("DELETE", one, Access.ADMIN, f"{tag}.delete", tags=(tag,))(delete),
    ]


ROUTES: list[Route] = [
    *_routes("/api/server-groups", "group", "ServerGroup", groups_db, "server-groups"),
    *_routes("/api/server-tags", "tag", "ServerTag", tags_db, "server-tags"),
]
