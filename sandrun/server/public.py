"""The public sandrun REST API, served unchanged at the server root beside `/v1`.

Its clients in the wild (a Python client, curl scripts, a web page, pool coordinators)
speak this shape: errors are `{"error": ...}` (429 adds `retry_after`), states are
queued | running | completed | failed. Anonymous callers are limited per client address
(`PublicApi`); with a token, the token's user owns the jobs.
"""

from __future__ import annotations

import codecs
import functools
import io
import json
import tarfile
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, TypeVar, cast

from fastapi import APIRouter, File, Form, Request, UploadFile, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect

import sandrun
from sandrun.errors import AuthenticationError, OverQuota, PublicApiOff, SandrunError
from sandrun.roles import Role
from sandrun.server.auth import principal
from sandrun.server.params import JobId, Text
from sandrun.server.public_shapes import STATES, file_entry, mime_type, status_of
from sandrun.server.uploads import blob_response
from sandrun.service import Service
from sandrun.service.manifest import ENVIRONMENTS
from sandrun.service.projects import submit_project
from sandrun.service.quota import PublicApi

router = APIRouter(include_in_schema=False)  # its own shape, documented in docs/api.md
LOG_PAGE = 4  # log chunks read at a time (each up to 1 MiB: MAX_CHUNK)


def _error(exc: SandrunError) -> JSONResponse:
    status = 400 if exc.http_status in (400, 422) else exc.http_status
    body: dict[str, Any] = {"error": str(exc)}
    if isinstance(exc, OverQuota):
        body["retry_after"] = exc.retry_after
        return JSONResponse(body, status_code=429, headers={"Retry-After": str(exc.retry_after)})
    return JSONResponse(body, status_code=status)


async def _caller(conn: HTTPConnection) -> tuple[str, str | None]:
    """Who owns what this caller submits, and whose jobs it may see (None: all). A token's
    user, else (anonymous mode) the caller's address."""
    config: PublicApi = conn.app.state.public_api
    if config.mode == "off":
        raise PublicApiOff()
    if conn.headers.get("authorization") or config.mode == "token":
        who = await principal(cast(Request, conn))  # it reads only headers and app state
        if who.role not in (Role.USER, Role.ADMIN):
            raise AuthenticationError(f"a {who.role} token cannot use the job API")
        return who.name, None if who.role is Role.ADMIN else who.name
    owner = f"anon:{conn.client.host if conn.client else 'unknown'}"
    return owner, owner


Handler = Callable[..., Awaitable[Response]]
T = TypeVar("T")


async def _as_viewer(
    request: Request, work: Callable[[Service, str, str | None], T], job_id: str
) -> T:
    """`work(service, job_id, viewer)` on a worker thread, for this caller."""
    _, viewer = await _caller(request)
    return await run_in_threadpool(work, request.app.state.service, job_id, viewer)


def _answers(handler: Handler) -> Handler:
    """Turn sandrun's errors into this API's `{"error"}` answers."""

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except SandrunError as exc:
            return _error(exc)

    return wrapped


@router.get("/")
async def root() -> dict[str, str]:
    return {
        "service": "sandrun",
        "status": "running",
        "description": "Runs code in sandboxes on a pool of machines: POST /submit, "
        "GET /status/{job_id}, /logs, /outputs, /download. The full API is under /v1.",
        "version": sandrun.__version__,
    }


@router.post("/submit")
@_answers
async def submit(
    request: Request,
    files: Annotated[list[UploadFile] | None, File()] = None,
    manifest: Annotated[str | None, Form()] = None,
) -> Response:
    owner, _ = await _caller(request)
    if not files:
        return JSONResponse({"error": "no files: upload a project as `files`"}, status_code=400)
    uploads = [(f.filename or "file", await f.read()) for f in files]
    service: Service = request.app.state.service
    config: PublicApi = request.app.state.public_api
    job, position = await run_in_threadpool(
        submit_project, service, owner, uploads, manifest, config
    )
    return JSONResponse({"job_id": job.id, "status": "queued", "position": position})


@router.get("/status/{job_id}")
@_answers
async def status(job_id: JobId, request: Request) -> Response:
    return JSONResponse(await _as_viewer(request, status_of, job_id))


@router.get("/logs/{job_id}")
@_answers
async def logs(job_id: JobId, request: Request) -> Response:
    service: Service = request.app.state.service
    _, viewer = await _caller(request)
    await run_in_threadpool(service.get, job_id, viewer)
    return StreamingResponse(_logs_json(service, job_id), media_type="application/json")


def _logs_json(service: Service, job_id: str) -> Iterator[bytes]:
    """`{"stdout": ..., "stderr": ...}`, written page by page: a job's logs may be far
    larger than what a server should hold in memory for one request."""
    for i, stream in enumerate(("stdout", "stderr")):
        yield f'{"{" if i == 0 else ", "}"{stream}": "'.encode()
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        cursor = (0, 0)
        while page := service.logs(job_id, after=cursor, limit=LOG_PAGE):
            text = decode(b"".join(c.data for c in page if c.stream == stream))
            yield json.dumps(text)[1:-1].encode()
            cursor = (page[-1].attempt, page[-1].seq)
        yield json.dumps(decode(b"", final=True))[1:-1].encode() + b'"'
    yield b"}"


@router.websocket("/logs/{job_id}/stream")
async def stream_logs(websocket: WebSocket, job_id: JobId) -> None:
    """Each log line as `{"stream", "line"}`, live; then `{"status"}` and close."""
    service: Service = websocket.app.state.service
    await websocket.accept()
    try:
        _, viewer = await _caller(websocket)
        await run_in_threadpool(service.get, job_id, viewer)
    except SandrunError as exc:
        await websocket.send_json({"error": str(exc)})
        await websocket.close(code=4404)
        return
    notifier = websocket.app.state.logs
    cursor, partial, ended = (0, 0), {"stdout": b"", "stderr": b""}, False
    try:
        while True:
            seen = notifier.generation
            page = await run_in_threadpool(service.logs, job_id, after=cursor, limit=LOG_PAGE)
            for chunk in page:
                *lines, partial[chunk.stream] = (partial[chunk.stream] + chunk.data).split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    await websocket.send_json({"stream": chunk.stream, "line": text})
            if page:
                cursor = (page[-1].attempt, page[-1].seq)
                continue
            if ended:
                break
            ended = (await run_in_threadpool(service.get, job_id)).is_terminal
            if not ended:
                await notifier.wait(seen, timeout=1.0)
        for stream, rest in partial.items():
            if rest:
                await websocket.send_json({"stream": stream, "line": rest.decode(errors="replace")})
        job = await run_in_threadpool(service.get, job_id)
        await websocket.send_json({"status": STATES.get(job.state, "failed")})
        await websocket.close()
    except WebSocketDisconnect:
        return


@router.get("/outputs/{job_id}")
@_answers
async def outputs(job_id: JobId, request: Request) -> Response:
    service: Service = request.app.state.service
    _, viewer = await _caller(request)
    job = await run_in_threadpool(service.get, job_id, viewer)
    files = await run_in_threadpool(service.outputs, job_id, None, viewer)
    return JSONResponse(
        {
            "job_id": job.id,
            "status": STATES.get(job.state, "failed"),
            "total_files": len(files),
            "files": [file_entry(job.id, f) for f in files],
        }
    )


@router.get("/download/{job_id}/{path:path}")
@_answers
async def download_one(job_id: JobId, path: Text, request: Request) -> Response:
    service: Service = request.app.state.service
    _, viewer = await _caller(request)
    out = await run_in_threadpool(service.output, job_id, path, None, viewer)
    return blob_response(
        service.artifacts, out.digest, mime_type(out.path), out.path.rsplit("/", 1)[-1]
    )


@router.get("/download/{job_id}")
@_answers
async def download_all(job_id: JobId, request: Request) -> Response:
    data = await _as_viewer(request, _tarball, job_id)
    return Response(
        data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{job_id}-outputs.tar.gz"'},
    )


def _tarball(service: Service, job_id: str, viewer: str | None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for out in service.outputs(job_id, viewer=viewer):
            entry = tarfile.TarInfo(out.path)
            entry.size = out.size
            with service.artifacts.open(out.digest) as handle:
                tar.addfile(entry, handle)
    return raw.getvalue()


@router.get("/health")
@_answers
async def health(request: Request) -> Response:
    await _caller(request)
    service: Service = request.app.state.service
    queued, running = await run_in_threadpool(service.queue_length)
    nodes = await run_in_threadpool(service.nodes)
    active = [n for n in nodes if n.state == "active"]
    identity = await run_in_threadpool(service.server_identity)
    return JSONResponse(
        {
            "status": "healthy",
            "worker_id": identity.worker_id,  # this deployment's key: a coordinator's allowlist
            "version": sandrun.__version__,
            "workers": [
                {"worker_id": n.public_key, "name": n.name, "running": n.running} for n in active
            ],
            "load": {"queued": queued, "running": running, "workers": len(active)},
        }
    )


@router.get("/stats")
@_answers
async def stats(request: Request) -> Response:
    service: Service = request.app.state.service
    config: PublicApi = request.app.state.public_api
    owner, _ = await _caller(request)
    active, hour, cpu = await run_in_threadpool(service.owner_usage, owner)
    queued, running = await run_in_threadpool(service.queue_length)
    return JSONResponse(
        {
            "client": owner,
            "quota": {
                "concurrent_jobs": {"used": active, "limit": config.max_concurrent},
                "jobs_per_hour": {"used": hour, "limit": config.jobs_per_hour},
                "cpu_seconds_per_minute": {"used": cpu, "limit": config.cpu_seconds_per_minute},
                "applies": owner.startswith("anon:"),
            },
            "system": {"queue_length": queued, "running": running},
        }
    )


@router.get("/environments")
@_answers
async def environments(request: Request) -> Response:
    owner, _ = await _caller(request)
    service: Service = request.app.state.service
    named = [{"name": k, "description": v} for k, v in ENVIRONMENTS.items()]
    for env in await run_in_threadpool(service.list_environments, owner):
        listed = ", ".join(env.spec.requirements)
        named.append({"name": env.name, "description": f"Python {env.spec.python or 'default'}"
                      f" with {listed or 'no packages'}"})  # fmt: skip
    return JSONResponse({"environments": named})
