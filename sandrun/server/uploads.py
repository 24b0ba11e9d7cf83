"""Uploads from users: the blobs a job brings (code bundles, function arguments, files),
and how any route serves a blob.

Blobs are content-addressed, so a client asks whether one is here before sending it again.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse

from sandrun.artifacts import ArtifactStore
from sandrun.errors import UploadTooLarge
from sandrun.protocol import Uploaded
from sandrun.server.auth import ERRORS, ServiceDep, UserDep, viewer
from sandrun.server.params import Text

router = APIRouter(prefix="/v1", responses=ERRORS)

MAX_UPLOAD_MB = 512

# How a route that serves a blob documents its answers.
BLOB_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"application/octet-stream": {}}},
    307: {"description": "the blob, at a presigned URL of the server's object store"},
}


def blob_response(
    store: ArtifactStore,
    digest: str,
    media_type: str = "application/octet-stream",
    filename: str | None = None,
) -> Response:
    """The blob's bytes from a local store; from a remote one, a redirect to them, so the
    bytes do not pass through this server (clients drop their token on the way: httpx,
    requests and browsers do not send Authorization to another origin)."""
    path = store.local_path(digest)
    if path is None:
        return RedirectResponse(store.download_url(digest, filename, media_type), 307)
    return FileResponse(path, media_type=media_type, filename=filename)


@router.post(
    "/artifacts",
    openapi_extra={
        "requestBody": {
            "required": False,  # an empty file is a file too
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload(request: Request, caller: UserDep, service: ServiceDep) -> Uploaded:
    """Store a blob; the answer names it by its sha256, for a job spec's inputs or code."""
    limit = MAX_UPLOAD_MB << 20
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared))
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise _too_large(len(data))
    digest, size = await run_in_threadpool(service.upload, bytes(data), caller.name)
    return Uploaded(digest=digest, size=size)


@router.head("/artifacts/{digest}", responses={200: {"description": "the blob is stored"}})
def has_artifact(digest: Text, caller: UserDep, service: ServiceDep) -> Response:
    """200 if a blob with this sha256 is stored and yours to use (you uploaded it, or your
    jobs made or use it; no need to upload it again), else 404."""
    service.fetch_artifact(digest, viewer(caller))
    return Response(status_code=200)


def _too_large(size: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"the upload is {size / (1 << 20):.1f} MiB; this server takes at most {MAX_UPLOAD_MB} MiB",
        suggestions=["leave large files out (.sandrunignore), or fetch them inside the job"],
    )
