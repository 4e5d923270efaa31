"""Files on a host, through its agent: ``/api/files/...``.

Browse and edit (``list``, ``stat``, ``read``, ``write``, ``delete``, ``mkdir``,
``move``: JSON bodies, one agent call each) and transfers of any size:

- download: ``POST /api/files/{server_id}/download {"path"}`` checks the path and
  creates a transfer (201, its id and ``download_url``); ``GET
  /api/files/download/{transfer_id}`` streams the bytes as they come from the
  agent, with ``Content-Length`` and ``Content-Disposition``. A transfer is
  fetched once.
- upload: one request, what ``curl -T FILE URL`` sends: ``POST`` (or ``PUT``, as
  ``curl -T`` does) ``/api/files/{server_id}/upload?path=...[&sha256=...]`` with the
  file as the raw body and a ``Content-Length``. The transfer is created when the
  request arrives (so it is listed with its progress while the body streams) and
  the answer, once the agent has verified and renamed the file, is the finished
  transfer. Without ``sha256`` the server computes it over the bytes it relays
  and the agent checks that instead.

Neither direction holds a file in memory: bytes move through the call's credit
window (a few MiB at most per transfer), as fast as the slower side takes them.

The agent decides: the server refuses early what its record of the agent's
capabilities lacks, and the agent refuses again, with its reason, whatever is
outside its roots, denied by its patterns or over its size caps (403, 404, 413).
Every call is audited with the path in its detail.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import urllib.parse
from typing import Any

from aiohttp import web

from beeyard.server import context
from beeyard.server.api import remote
from beeyard.server.auth.principal import Access
from beeyard.server.http.envelope import ApiError, ok
from beeyard.server.http.params import path_id
from beeyard.server.http.routing import Route, route
from beeyard.server.hub.calls import Call, RemoteError
from beeyard.server.services import transfers as transfers_service
from beeyard.server.services.transfers import Full, Transfer
from beeyard.shared.frames import CHUNK
from beeyard.shared.operations.files import EDIT_MAX, LIST_MAX, PATH_MAX, SHA256, SIZE_MAX
from beeyard.shared.schema import Field, Schema

TAGS = ("files",)
FINISH_WITHIN = 300.0  # seconds the agent has to verify, fsync and rename a whole upload
START_WITHIN = 30.0  # seconds the agent has to open a file and send its first bytes
UPLOAD_MAX_BODY = SIZE_MAX  # the agent's max_write_bytes is the real cap; it answers 413
WRITE_MAX_BODY = 4 * 1024 * 1024  # EDIT_MAX as base64 in JSON, with room
DOWNLOAD_WINDOW = 32 * CHUNK  # 8 MiB in flight per download: the most we ever buffer for one


def _path(name: str = "path", doc: str = "a path inside one of the agent's roots "
                                         "(relative: to the first root)") -> Field:
    return Field(name, "str", min=1, max=PATH_MAX, doc=doc)


LIST_BODY = Schema("FilesList", (
    _path(doc="a directory"),
    Field("limit", "int", required=False, min=1, max=LIST_MAX, default=LIST_MAX),
))
PATH_BODY = Schema("FilesPath", (_path(),))
READ_BODY = Schema("FilesRead", (
    _path(),
    Field("max_bytes", "int", required=False, min=1, max=EDIT_MAX, default=1024 * 1024,
          doc="a larger file is refused (413): download it instead"),
))
WRITE_BODY = Schema("FilesWrite", (
    _path(),
    Field("content", "str", max=WRITE_MAX_BODY, doc="the whole new content"),
    Field("encoding", "str", required=False, default="utf-8", choices=("utf-8", "base64")),
    Field("overwrite", "bool", required=False, default=True),
    Field("mode", "int", required=False, nullable=True, min=0, max=0o7777,
          doc="permission bits of a new file (as a number: 420 is 0644)"),
))
DELETE_BODY = Schema("FilesDelete", (
    _path(), Field("recursive", "bool", required=False, default=False),
))
MKDIR_BODY = Schema("FilesMkdir", (
    _path(), Field("parents", "bool", required=False, default=False),
))
MOVE_BODY = Schema("FilesMove", (
    _path("source", "what to move"), _path("destination", "its new path, in full"),
    Field("overwrite", "bool", required=False, default=False),
))
UPLOAD_QUERY = Schema("FilesUpload", (
    _path(doc="where the file goes, in full"),
    Field("sha256", "str", required=False, pattern=SHA256,
          doc="the file's SHA-256 (lowercase hex), checked by the agent before the rename"),
    Field("overwrite", "bool", required=False, default=True),
    Field("mode", "int", required=False, min=0, max=0o7777),
))

_TRANSFER = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "kind": {"enum": ["download", "upload"]},
        "server_id": {"type": "integer"}, "path": {"type": "string"},
        "owner": {"type": "string"},
        "state": {"enum": ["ready", "running", "done", "failed", "cancelled", "expired"]},
        "size": {"type": ["integer", "null"]}, "bytes_done": {"type": "integer"},
        "progress": {"type": "number"}, "rate": {"type": "number", "description": "bytes/s"},
        "sha256": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
        "download_url": {"type": ["string", "null"]},
    },
}


def _server(request: web.Request) -> int:
    return path_id(request, "server", "server_id")


async def _simple(request: web.Request, op: str, args: dict[str, Any],
                  detail: dict[str, Any]) -> dict[str, Any]:
    return await remote.call(request, _server(request), op, args, detail=detail)


# --- browse and edit -----------------------------------------------------------


async def list_dir(request: web.Request) -> web.Response:
    """List a directory: entries with type, size, mtime and mode (denied names are hidden)."""
    body = context.body(request)
    return ok(await _simple(request, "files.list", body, {"path": body["path"]}))


async def stat_path(request: web.Request) -> web.Response:
    """What a path is: type, size, mtime, mode, owner."""
    body = context.body(request)
    return ok(await _simple(request, "files.stat", body, {"path": body["path"]}))


async def read(request: web.Request) -> web.Response:
    """A file's content for an editor: UTF-8 text, or base64 when it is not text."""
    body = context.body(request)
    result = await _simple(request, "files.read", body, {"path": body["path"]})
    content = result.pop("content", b"")
    try:
        result.update(encoding="utf-8", content=bytes(content).decode("utf-8"))
    except UnicodeDecodeError:
        result.update(encoding="base64", content=base64.b64encode(content).decode("ascii"))
    return ok(result)


async def write(request: web.Request) -> web.Response:
    """Replace or create a file with the given content, atomically."""
    body = context.body(request)
    if body["encoding"] == "base64":
        try:
            content = base64.b64decode(body["content"], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "content: is not valid base64") from None
    else:
        content = body["content"].encode("utf-8")
    if len(content) > EDIT_MAX:
        raise ApiError(413, f"content: {len(content)} bytes is more than write takes "
                            f"({EDIT_MAX}); upload the file instead")
    args = {"path": body["path"], "content": content, "overwrite": body["overwrite"],
            "mode": body["mode"]}
    detail = {"path": body["path"], "size": len(content)}
    return ok(await _simple(request, "files.write", args, detail))


async def delete(request: web.Request) -> web.Response:
    """Delete a file, a link or a directory (with ``recursive``, and all it holds)."""
    body = context.body(request)
    detail = {"path": body["path"], "recursive": body["recursive"]}
    return ok(await _simple(request, "files.delete", body, detail))


async def mkdir(request: web.Request) -> web.Response:
    """Create a directory (with ``parents``, its missing parents too)."""
    body = context.body(request)
    return ok(await _simple(request, "files.mkdir", body, {"path": body["path"]}), status=201)


async def move(request: web.Request) -> web.Response:
    """Rename a file or directory inside the roots, on one filesystem."""
    body = context.body(request)
    detail = {"path": body["source"], "destination": body["destination"]}
    return ok(await _simple(request, "files.move", body, detail))


# --- transfers -----------------------------------------------------------------


def _create(request: web.Request, kind: transfers_service.Kind, server_id: int, path: str,
            total: int | None) -> Transfer:
    try:
        return transfers_service.of(request.app).create(
            kind, server_id, path, context.principal(request), total)
    except Full as exc:
        raise ApiError(429, str(exc), headers={"Retry-After": "30"}) from None


async def create_download(request: web.Request) -> web.Response:
    """Create a download transfer of a file; fetch it from its ``download_url``."""
    server_id = _server(request)
    path = context.body(request)["path"]
    info = await remote.call(request, server_id, "files.stat", {"path": path},
                             detail={"path": path})
    if info["type"] != "file":
        raise ApiError(422, f"{path} is a {info['type']}, not a regular file")
    transfer = _create(request, "download", server_id, path, info["size"])
    request[context.AUDIT_DETAIL] = {"op": "files.download", "path": path,
                                     "transfer": transfer.id, "size": info["size"]}
    return ok(transfer.view(), status=201)


def _transfer(request: web.Request) -> Transfer:
    transfer_id = request.match_info["transfer_id"]
    transfer = transfers_service.of(request.app).get(transfer_id, context.principal(request))
    if transfer is None:
        raise ApiError(404, f"transfer {transfer_id[:40]} not found")
    return transfer


def _disposition(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1] or "download"
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                         for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name)}"


async def fetch_download(request: web.Request) -> web.StreamResponse:
    """Stream a download transfer's bytes (once), as they arrive from the agent."""
    transfer = _transfer(request)
    if transfer.kind != "download":
        raise ApiError(409, f"transfer {transfer.id} is an upload")
    if transfer.state != "ready":
        raise ApiError(409, f"transfer {transfer.id} is {transfer.state}; create a new one "
                            f"to download the file again")
    detail: dict[str, Any] = {"path": transfer.path, "transfer": transfer.id}
    transfer.state = "running"  # before the first await: a second GET is refused
    try:
        call = await remote.start(request, transfer.server_id, "files.download",
                                  {"path": transfer.path, "size": transfer.total},
                                  window=DOWNLOAD_WINDOW, detail=detail)
    except ApiError as exc:
        transfer.finish("failed", exc.message)
        raise
    transfer.start(call)
    response: web.StreamResponse | None = None
    try:
        first = await _first_chunk(call)
        response = web.StreamResponse(headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(transfer.total),
            "Content-Disposition": _disposition(transfer.path),
        })
        await response.prepare(request)
        await _relay_out(call, first, response, transfer)
    except RemoteError as exc:  # before the first byte: a proper error answer
        transfer.finish("failed", exc.reason)
        raise remote.api_error(exc) from None
    except ConnectionError:
        transfer.cancel("the client went away")
        if response is None or not response.prepared:
            raise ApiError(400, "the client went away") from None
    except asyncio.CancelledError:  # the connection closed (or the server is stopping)
        transfer.cancel("the client went away")
        raise
    finally:
        if not call.done:  # whatever ended this handler, the agent stops too
            call.cancel("the download ended")
        if not transfer.over:
            transfer.finish("failed", "the download ended unexpectedly")
        detail.update(state=transfer.state, bytes=transfer.bytes_done)
        if transfer.error:
            detail["error"] = transfer.error
    if transfer.state != "done" and request.transport is not None:
        request.transport.close()  # fewer bytes than Content-Length: the client sees it
    assert response is not None  # else an error was raised above
    return response


async def _first_chunk(call: Call) -> bytes | None:
    """The first bytes of a download, or its error before any header is sent (a
    refusal is then a proper 403/404/413, not a broken stream)."""
    try:
        async with asyncio.timeout(START_WITHIN):
            first = await call.receive()
    except TimeoutError:
        call.cancel("no data in time")
        raise RemoteError("timeout", f"the agent sent nothing within {START_WITHIN:g} s") \
            from None
    if first is None:
        await call.wait(START_WITHIN)  # raises the agent's error; else an empty file
    return first


async def _relay_out(call: Call, first: bytes | None, response: web.StreamResponse,
                     transfer: Transfer) -> None:
    data = first
    try:
        while data is not None:
            await response.write(data)
            transfer.bytes_done += len(data)
            data = await call.receive()
        result = await call.wait(FINISH_WITHIN)
    except RemoteError as exc:  # after the headers: the connection is cut short
        transfer.finish("failed", exc.reason)
        return
    transfer.sha256 = result.get("sha256")
    transfer.finish("done")
    await response.write_eof()


async def upload(request: web.Request) -> web.Response:
    """Upload the request body to a file (e.g. ``curl -T FILE``); the answer is the
    finished transfer once the agent has verified and renamed it."""
    server_id = _server(request)
    query = context.query(request)
    size = request.content_length
    if size is None:
        raise ApiError(411, "send the file with a Content-Length (curl -T or --data-binary "
                            "@FILE do)")
    transfer = _create(request, "upload", server_id, query["path"], size)
    args = {"path": query["path"], "size": size, "sha256": query.get("sha256"),
            "overwrite": query["overwrite"], "mode": query.get("mode")}
    detail = {"path": query["path"], "size": size, "transfer": transfer.id}
    try:
        call = await remote.start(request, server_id, "files.upload", args, detail=detail)
    except ApiError as exc:
        transfer.finish("failed", exc.message)
        raise
    transfer.start(call)
    try:
        result = await _relay_in(request, call, transfer, size, args["sha256"] is None)
    except RemoteError as raised:
        why = raised
        if transfer.state == "cancelled":  # DELETE /api/files/transfers/{id}
            why = RemoteError("cancelled", transfer.error or "cancelled")
        elif call.done and why.code == "cancelled":
            why = _failure(call) or why  # send() saw the call over: why it ended
        transfer.finish("cancelled" if why.code == "cancelled" else "failed", why.reason)
        detail.update(state=transfer.state, error=why.reason)
        raise remote.api_error(why) from None
    except ConnectionError:  # the client's body stopped: nobody is left to answer
        transfer.cancel("the client went away")
        raise ApiError(400, "the upload's connection was lost") from None
    except asyncio.CancelledError:  # the connection closed (or the server is stopping)
        transfer.cancel("the client went away")
        raise
    finally:
        if not call.done:
            call.cancel("the upload ended")
            transfer.finish("failed", transfer.error or "the client went away")
    transfer.sha256 = result.get("sha256")
    transfer.finish("done")
    detail.update(state="done", sha256=transfer.sha256)
    return ok(transfer.view(), status=201)


def _failure(call: Call) -> RemoteError | None:
    with contextlib.suppress(asyncio.InvalidStateError, asyncio.CancelledError):
        exc = call.result.exception()
        if isinstance(exc, RemoteError):
            return exc
    return None


async def _relay_in(request: web.Request, call: Call, transfer: Transfer, size: int,
                    compute: bool) -> dict[str, Any]:
    """Send the body to the agent as it arrives (paced by the agent's credit), then
    the digest if the client gave none, then the end; the agent's result."""
    digest = hashlib.sha256() if compute else None
    while chunk := await _next_piece(request, call):
        hashing = asyncio.ensure_future(asyncio.to_thread(digest.update, chunk)) \
            if digest is not None else None
        try:
            await call.send(chunk)
        finally:
            if hashing is not None:
                await hashing
        transfer.bytes_done += len(chunk)
    if transfer.bytes_done != size:
        call.cancel("the client sent less than its Content-Length")
        raise RemoteError("invalid", f"the body ended after {transfer.bytes_done} of {size} "
                                     f"bytes")
    if digest is not None:
        call.signal("digest", {"sha256": digest.hexdigest()})
    await call.send(b"", eof=True)
    return await call.wait(FINISH_WITHIN)


async def _next_piece(request: web.Request, call: Call) -> bytes:
    """The next piece of the body (b"" at its end), unless the call ends first (the
    agent refused, the link went, the transfer was cancelled): then the call's error
    at once, not when the client next sends something."""
    reading = asyncio.ensure_future(request.content.read(CHUNK))
    await asyncio.wait((reading, call.result), return_when=asyncio.FIRST_COMPLETED)
    if reading.done():
        return reading.result()
    reading.cancel()
    await call.wait(0)  # raises its RemoteError
    raise RemoteError("failed", "the agent finished before the upload's end")


async def list_transfers(request: web.Request) -> web.Response:
    """Transfers under way and recent: one's own (an admin sees all), newest first."""
    found = transfers_service.of(request.app).visible(context.principal(request))
    return ok([t.view() for t in found])


async def cancel_transfer(request: web.Request) -> web.Response:
    """Cancel a transfer: the agent stops (an upload's temporary file is removed)."""
    transfer = _transfer(request)
    request[context.AUDIT_TARGET] = f"server:{transfer.server_id}"
    request[context.AUDIT_DETAIL] = {"op": f"files.{transfer.kind}", "path": transfer.path,
                                     "transfer": transfer.id}
    if transfer.over:
        raise ApiError(409, f"transfer {transfer.id} is already {transfer.state}")
    principal = context.principal(request)
    transfer.cancel(f"cancelled by {principal.username}")
    return ok(transfer.view())


_FILES = "/api/files/{server_id}"
_ERR = (403, 404, 409, 413, 422, 502, 504)

ROUTES: list[Route] = [
    route("POST", f"{_FILES}/list", Access.MEMBER, "files.list", body=LIST_BODY, tags=TAGS,
          extra_statuses=_ERR)(list_dir),
    route("POST", f"{_FILES}/stat", Access.MEMBER, "files.stat", body=PATH_BODY, tags=TAGS,
          extra_statuses=_ERR)(stat_path),
    route("POST", f"{_FILES}/read", Access.MEMBER, "files.read", body=READ_BODY, tags=TAGS,
          extra_statuses=_ERR)(read),
    route("POST", f"{_FILES}/write", Access.ADMIN, "files.write", body=WRITE_BODY, tags=TAGS,
          max_body=WRITE_MAX_BODY + 64 * 1024, extra_statuses=_ERR)(write),
    route("POST", f"{_FILES}/delete", Access.ADMIN, "files.delete", body=DELETE_BODY,
          tags=TAGS, extra_statuses=_ERR)(delete),
    route("POST", f"{_FILES}/mkdir", Access.ADMIN, "files.mkdir", body=MKDIR_BODY, tags=TAGS,
          status=201, extra_statuses=_ERR)(mkdir),
    route("POST", f"{_FILES}/move", Access.ADMIN, "files.move", body=MOVE_BODY, tags=TAGS,
          extra_statuses=_ERR)(move),
    route("POST", f"{_FILES}/download", Access.ADMIN, "files.download", body=PATH_BODY,
          tags=TAGS, status=201, response=_TRANSFER, extra_statuses=(*_ERR, 429))(
              create_download),
    route("POST", f"{_FILES}/upload", Access.ADMIN, "files.upload", query=UPLOAD_QUERY,
          tags=TAGS, status=201, response=_TRANSFER, max_body=UPLOAD_MAX_BODY,
          extra_statuses=(*_ERR, 411, 429))(upload),
    # curl -T sends PUT: the same upload, so that the shortest command works too
    route("PUT", f"{_FILES}/upload", Access.ADMIN, "files.upload_put", query=UPLOAD_QUERY,
          tags=TAGS, status=201, response=_TRANSFER, max_body=UPLOAD_MAX_BODY,
          extra_statuses=(*_ERR, 411, 429))(upload),
    route("GET", "/api/files/transfers", Access.MEMBER, "files.transfers", tags=TAGS,
          response={"type": "array", "items": _TRANSFER})(list_transfers),
    route("GET", "/api/files/download/{transfer_id}", Access.MEMBER, "files.fetch",
          tags=TAGS, audited=True, extra_statuses=(404, 409, 413, 403))(fetch_download),
    route("DELETE", "/api/files/transfers/{transfer_id}", Access.ADMIN, "files.cancel",
          tags=TAGS, response=_TRANSFER, extra_statuses=(404, 409))(cancel_transfer),
]
