"""The job API for users: thin routes over the service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from sandrun.bulk_models import EndedJobs, SubmitBatch, SubmittedBatch, Waiting, WaitRequest
from sandrun.errors import JobNotFoundError
from sandrun.ids import pause
from sandrun.models import (
    Attempt,
    Checkpoint,
    Event,
    Instance,
    JobPage,
    JobRecord,
    LogChunk,
    NodeInfo,
    OutputFile,
)
from sandrun.pool.models import Countersignature
from sandrun.retention_models import GcReport, GcRequest
from sandrun.server.auth import ERRORS, ServiceDep, UserDep, admin, user, viewer
from sandrun.server.notify import Notifier
from sandrun.server.params import INT32, JobId, Text
from sandrun.server.uploads import BLOB_RESPONSES, blob_response
from sandrun.spec import JobSpec
from sandrun.spec.text import NO_NUL
from sandrun.states import JobState

router = APIRouter(prefix="/v1", responses=ERRORS)

# Log chunks per read. Each is up to 1 MiB (agent.logsink.MAX_CHUNK): a page, and so what
# one request holds in memory, stays a few MiB however large the logs are.
LOG_PAGE = 16
LABEL = r"^[^=\x00]+=[^\x00]*$"
CURSOR = r"^[0-9]+(\.[0-9]+)?/[^\x00]+$"


@router.post("/jobs", status_code=status.HTTP_201_CREATED)
def submit(spec: JobSpec, caller: UserDep, service: ServiceDep) -> JobRecord:
    return service.submit(spec, owner=caller.name, admin=viewer(caller) is None)


@router.post("/jobs/batch", status_code=status.HTTP_201_CREATED)
def submit_batch(body: SubmitBatch, caller: UserDep, service: ServiceDep) -> SubmittedBatch:
    """Up to 1,000 jobs in one request and one transaction: all are queued, or none."""
    jobs = service.submit_many(body.jobs, owner=caller.name, admin=viewer(caller) is None)
    return SubmittedBatch(jobs=jobs)


@router.get("/jobs")
def list_jobs(
    caller: UserDep,
    service: ServiceDep,
    state: JobState | None = None,
    name: Annotated[str | None, Query(pattern=NO_NUL)] = None,
    label: Annotated[
        str | None, Query(description="KEY=VALUE", pattern=r"^[^=\x00]+=[^\x00]*$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[
        str | None, Query(description="next_cursor of the previous page", pattern=CURSOR)
    ] = None,
) -> JobPage:
    return service.list_jobs(
        viewer=viewer(caller),
        state=state.value if state else None,
        name=name,
        label=label,
        limit=limit,
        cursor=cursor,
    )


@router.get("/jobs/{job_id}")
def get_job(job_id: JobId, caller: UserDep, service: ServiceDep) -> JobRecord:
    return service.get(job_id, viewer(caller))


@router.get("/jobs/{job_id}/waiting")
def waiting(job_id: JobId, caller: UserDep, service: ServiceDep) -> Waiting:
    """Why a pending job has not started (the reason is null once it has)."""
    return Waiting(reason=service.why_pending(job_id, viewer(caller)))


@router.get("/jobs/{job_id}/wait")
async def wait(
    job_id: JobId,
    request: Request,
    caller: UserDep,
    service: ServiceDep,
    timeout: Annotated[float, Query(ge=0, le=60, description="seconds to hold the request")] = 30,
) -> JobRecord:
    """The job once it has ended, or as it is after `timeout` seconds (a long-poll)."""
    notifier: Notifier = request.app.state.logs  # bumped whenever an attempt ends
    deadline = time.monotonic() + timeout
    while True:
        seen = notifier.generation
        job = await run_in_threadpool(service.get, job_id, viewer(caller))
        left = deadline - time.monotonic()
        if job.is_terminal or left <= 0 or await request.is_disconnected():
            return job
        await notifier.wait(seen, left)


@router.post("/jobs/wait")
async def wait_all(
    body: WaitRequest, request: Request, caller: UserDep, service: ServiceDep
) -> EndedJobs:
    """The jobs once all of `ids` have ended, or those that have after `timeout` seconds
    (a long-poll). Wake-ups are coalesced: a long wait looks again at most every 10% of
    the time waited so far (up to 0.1 s), so a waiter on many jobs costs little."""
    notifier: Notifier = request.app.state.logs  # bumped whenever an attempt ends
    began = time.monotonic()
    deadline = began + body.timeout
    wanted = len(set(body.ids))
    while True:
        seen = notifier.generation
        ended = await run_in_threadpool(service.ended, body.ids, viewer(caller))
        left = deadline - time.monotonic()
        if len(ended) == wanted or left <= 0 or await request.is_disconnected():
            return EndedJobs(jobs=ended)
        await notifier.wait(seen, left)
        waited = time.monotonic() - began
        await asyncio.sleep(min(pause(waited), max(deadline - time.monotonic(), 0.0)))


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: JobId, caller: UserDep, service: ServiceDep) -> JobRecord:
    return service.cancel(job_id, viewer(caller))


@router.post("/jobs/{job_id}/pause")
def pause_job(job_id: JobId, caller: UserDep, service: ServiceDep) -> JobRecord:
    """Freeze a running job in place (its slot stays held; its timeout stops)."""
    return service.pause(job_id, viewer(caller))


@router.post("/jobs/{job_id}/resume")
def resume_job(job_id: JobId, caller: UserDep, service: ServiceDep) -> JobRecord:
    return service.resume(job_id, viewer(caller))


@router.post("/jobs/{job_id}/checkpoint")
def checkpoint_job(job_id: JobId, caller: UserDep, service: ServiceDep) -> JobRecord:
    """Ask a running job to checkpoint now (its `checkpoint.signal`)."""
    return service.checkpoint(job_id, viewer(caller))


@router.get("/jobs/{job_id}/checkpoints")
def checkpoints(job_id: JobId, caller: UserDep, service: ServiceDep) -> list[Checkpoint]:
    return service.checkpoints(job_id, viewer(caller))


@router.get("/jobs/{job_id}/attempts")
def attempts(job_id: JobId, caller: UserDep, service: ServiceDep) -> list[Attempt]:
    return service.attempts(job_id, viewer(caller))


@router.get("/jobs/{job_id}/attempts/{number}/countersignature")
def countersignature(
    job_id: JobId,
    number: Annotated[int, Path(ge=1, le=INT32)],
    caller: UserDep,
    service: ServiceDep,
) -> Countersignature:
    """This server's signature over the attempt's signed result (`sandrun verify`)."""
    attempt = next(
        (a for a in service.attempts(job_id, viewer(caller)) if a.number == number), None
    )
    if attempt is None:
        raise JobNotFoundError(f"job {job_id} has no attempt {number}", field="number")
    return Countersignature(
        server_id=service.server_identity().worker_id,
        countersignature=service.countersignature(attempt),
    )


@router.get("/jobs/{job_id}/events")
def events(
    job_id: JobId,
    caller: UserDep,
    service: ServiceDep,
    after: Annotated[int, Query(ge=0, le=INT32)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> list[Event]:
    return service.events(job_id, after=after, limit=limit, viewer=viewer(caller))


@router.get("/jobs/{job_id}/logs")
def logs(
    job_id: JobId,
    caller: UserDep,
    service: ServiceDep,
    attempt: Annotated[int | None, Query(ge=1, le=INT32)] = None,
    after_attempt: Annotated[int, Query(ge=0, le=INT32)] = 0,
    after_seq: Annotated[int, Query(ge=0, le=INT32)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = LOG_PAGE,
) -> list[LogChunk]:
    """Log chunks (data in base64) after the cursor (after_attempt, after_seq): at most
    `limit`, and at most 16 whatever `limit` asks; an empty page is the end."""
    return service.logs(
        job_id,
        attempt=attempt,
        after=(after_attempt, after_seq),
        limit=min(limit, LOG_PAGE),
        viewer=viewer(caller),
    )


@router.get(
    "/jobs/{job_id}/logs/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def stream_logs(
    job_id: JobId,
    request: Request,
    caller: UserDep,
    service: ServiceDep,
    attempt: Annotated[int | None, Query(ge=1, le=INT32)] = None,
) -> StreamingResponse:
    """Follow the logs live: one JSON chunk per line, ending when the job has ended."""
    await run_in_threadpool(service.get, job_id, viewer(caller))
    notifier: Notifier = request.app.state.logs

    async def lines() -> AsyncIterator[bytes]:
        cursor = (0, 0)
        ended = False
        while True:
            seen = notifier.generation
            chunks = await run_in_threadpool(
                service.logs, job_id, attempt=attempt, after=cursor, limit=LOG_PAGE
            )
            for chunk in chunks:
                yield chunk.model_dump_json().encode() + b"\n"
            if chunks:
                cursor = (chunks[-1].attempt, chunks[-1].seq)
            if len(chunks) == LOG_PAGE:
                continue
            if ended:
                return
            # Agents store all logs before they report an end: one more read gets the rest.
            ended = (await run_in_threadpool(service.get, job_id)).is_terminal
            if not ended:
                await notifier.wait(seen, timeout=1.0)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/jobs/{job_id}/outputs")
def outputs(
    job_id: JobId,
    caller: UserDep,
    service: ServiceDep,
    attempt: Annotated[int | None, Query(ge=1, le=INT32)] = None,
) -> list[OutputFile]:
    return service.outputs(job_id, attempt, viewer(caller))


@router.get("/jobs/{job_id}/outputs/{path:path}", responses=BLOB_RESPONSES)
def download(
    job_id: JobId,
    path: Text,
    caller: UserDep,
    service: ServiceDep,
    attempt: Annotated[int | None, Query(ge=1, le=INT32)] = None,
) -> Response:
    out = service.output(job_id, path, attempt, viewer(caller))
    return blob_response(service.artifacts, out.digest)


@router.get("/instances", dependencies=[Depends(user)])
def instances(
    service: ServiceDep,
    min_gpu_memory: Annotated[float, Query(ge=0, le=INT32)] = 0,
    max_price: Annotated[float | None, Query(ge=0, le=INT32)] = None,
) -> list[Instance]:
    """GPU instance types the pool can run now, with a price per hour, cheapest first."""
    return service.instances(min_gpu_memory, max_price)


@router.get("/nodes")
def nodes(service: ServiceDep, caller: UserDep) -> list[NodeInfo]:
    """The nodes, what they hold and their warm workers (a user sees only their own)."""
    return service.nodes(viewer(caller))


@router.post("/admin/gc", dependencies=[Depends(admin)])
def gc(body: GcRequest, service: ServiceDep) -> GcReport:
    """Remove the logs of jobs that ended more than `older_than` ago (with `purge_jobs`,
    the jobs), agents silent that long, then blobs nothing refers to; in batches."""
    return service.collect_garbage(body.older_than, purge_jobs=body.purge_jobs)
