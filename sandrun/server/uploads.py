"""Uploads from users: the blobs a job brings (code bundles, function arguments, files).

Blobs are content-addressed, so a client asks whether one is here before sending it again.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from sandrun.errors import UploadTooLarge
from sandrun.protocol import Uploaded
from sandrun.server.auth import ERRORS, ServiceDep, UserDep, viewer
from sandrun.server.params import Text

router = APIRouter(prefix="/v1", responses=ERRORS)

MAX_UPLOAD_MB = 512


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
