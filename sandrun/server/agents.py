"""The agent API: register, long-poll claims, heartbeats, logs, artifacts, completion.

Every write after the claim names its attempt and carries the attempt's token; the store
refuses (409) a report from an attempt that no longer holds its job.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from sandrun.models import (
    INLINE_BLOB,
    AttemptKey,
    Capacity,
    Claim,
    InlineBlob,
    JobRecord,
    Principal,
)
from sandrun.protocol import (
    ClaimRequest,
    CompleteAndClaimReply,
    CompleteAndClaimRequest,
    CompleteRequest,
    HandBackRequest,
    HeartbeatReply,
    HeartbeatRequest,
    LogsRequest,
    RegisterReply,
    RegisterRequest,
    ReportReply,
    ReportRequest,
    StartRequest,
    Uploaded,
    UploadsReply,
    UploadsRequest,
    UploadTarget,
)
from sandrun.roles import Role
from sandrun.server.auth import ERRORS, ServiceDep, agent
from sandrun.server.beats import Heartbeats, operator_of
from sandrun.server.params import Text
from sandrun.server.uploads import BLOB_RESPONSES, blob_response
from sandrun.server.workboard import WorkBoard
from sandrun.service import Service

# Every route here is for agents (or admins): checked once, for the whole router.
router = APIRouter(prefix="/v1/agent", responses=ERRORS, dependencies=[Depends(agent)])


AgentDep = Annotated[Principal, Depends(agent)]


def _as_node(service: Service, caller: Principal, node: str) -> None:
    """Only the operator who registered a node (or an admin) may act as it."""
    if caller.role is not Role.ADMIN:
        service.check_operator(node, caller.name)


@router.post("/register")
def register(body: RegisterRequest, service: ServiceDep, caller: AgentDep) -> RegisterReply:
    node_id = service.register_node(
        body.name,
        body.capacity,
        body.labels,
        sandbox=body.sandbox,
        public_key=body.public_key,
        detected=body.detected,
        key_proof=body.key_proof,
        operator=caller.name,
    )
    # A remote blob store: agents move blob bytes to and from it themselves.
    blobs = "presigned-uploads" if service.artifacts.remote else "inline-outputs"
    return RegisterReply(
        node_id=node_id,
        lease_seconds=service.lease_seconds,
        features=["complete-and-claim", "hand-back", "report", blobs, "end-logs"],
    )


@router.post(
    "/claim",
    response_model=Claim,
    responses={204: {"description": "nothing fitting arrived within `wait` seconds"}},
)
async def claim(
    body: ClaimRequest, request: Request, service: ServiceDep, caller: AgentDep
) -> Claim | Response:
    """The best pending job that fits `free`; held open up to `wait` s until one arrives."""
    operator, labels = await run_in_threadpool(_node_identity, service, caller, body.node)
    board: WorkBoard = request.app.state.work
    # Its operator too: a replica is not given to the operator that runs another of its job.
    shape = (body.free.model_dump_json(), json.dumps(labels, sort_keys=True), operator)
    deadline = time.monotonic() + body.wait
    woken = False
    while True:
        seen = board.generation
        # A poll must not outlive its agent: work claimed for a dead one waits out a lease.
        if await request.is_disconnected() or not await _is_live(request, service, body.node):
            if woken:
                board.pass_on()
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        if board.worth_asking(body.node, shape):
            got = await run_in_threadpool(_claim_with_inputs, service, body.node, body.free)
            if got is not None:
                board.took(body.node)
                return got
            board.found_nothing(body.node, shape, seen)
        left = deadline - time.monotonic()
        if left <= 0:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        await board.time_next(lambda: run_in_threadpool(service.next_wakeup))
        woken = await board.wait(seen, left, shape)


def _node_identity(service: Service, caller: Principal, node: str) -> tuple[str, dict[str, str]]:
    """The node's operator (its id if it has none) and labels."""
    _as_node(service, caller, node)
    operator, labels = service.node_identity(node)
    return operator or node, labels


async def _is_live(request: Request, service: Service, node: str) -> bool:
    """Whether `node` heartbeated within a lease: known here without the store when its
    last beat came through this server."""
    beats: Heartbeats = request.app.state.beats
    written = beats.written.get(node)
    if written is not None and time.monotonic() - written < service.lease_seconds:
        return True
    return await run_in_threadpool(service.node_is_live, node)


@router.post("/start", status_code=status.HTTP_204_NO_CONTENT)
def start(body: StartRequest, service: ServiceDep) -> None:
    service.start(body.ref, body.pid, body.pid_started_at, body.git_commit)


@router.post("/heartbeat")
async def heartbeat(body: HeartbeatRequest, request: Request, caller: AgentDep) -> HeartbeatReply:
    """Written together with the heartbeats that arrive meanwhile. (`beats.py`'s
    HeartbeatFastPath answers this request the same way, below FastAPI's routing.)"""
    beats: Heartbeats = request.app.state.beats
    return await beats.beat(body, operator_of(caller))


@router.post("/hand-back")
def hand_back(body: HandBackRequest, service: ServiceDep, caller: AgentDep) -> list[AttemptKey]:
    """Give back attempts the node holds but never started; returns those given back."""
    _as_node(service, caller, body.node)
    return service.hand_back(body.node, body.attempts, body.reason)


@router.post("/logs", status_code=status.HTTP_204_NO_CONTENT)
def logs(body: LogsRequest, service: ServiceDep) -> None:
    service.append_logs(body.ref, body.chunks)


@router.post(
    "/artifacts",
    openapi_extra={
        "requestBody": {
            "required": False,  # an empty output file is an output too
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def put_artifact(request: Request, service: ServiceDep) -> Uploaded:
    """Store one output's bytes; the answer names them by their sha256."""
    data = await request.body()
    digest, size = await run_in_threadpool(service.artifacts.put_bytes, data)
    return Uploaded(digest=digest, size=size)


@router.get("/artifacts/{digest}", responses=BLOB_RESPONSES)
def get_artifact(digest: Text, service: ServiceDep) -> Response:
    """A blob a job brings (its inputs or code), for the agent that runs it."""
    service.fetch_artifact(digest)
    return blob_response(service.artifacts, digest)


@router.post("/uploads")
def uploads(body: UploadsRequest, service: ServiceDep) -> UploadsReply:
    """Where to PUT each blob (to a server that lists "presigned-uploads"): a URL that
    takes exactly those bytes, or none where the store has them already."""
    targets = []
    for blob in body.blobs:
        got = service.artifacts.upload_url(blob.digest, blob.size)
        url, headers = got if got is not None else (None, {})
        targets.append(UploadTarget(digest=blob.digest, url=url, headers=headers))
    return UploadsReply(uploads=targets)


@router.post("/complete")
def complete(body: CompleteRequest, service: ServiceDep) -> JobRecord:
    return service.complete(body.ref, body.result)


@router.post("/complete-and-claim")
def complete_and_claim(
    body: CompleteAndClaimRequest, service: ServiceDep, caller: AgentDep
) -> CompleteAndClaimReply:
    """`complete`, then at once (no long-poll) the best job that fits `free`."""
    _as_node(service, caller, body.node)
    job, claim = service.complete_and_claim(body.ref, body.result, body.node, body.free)
    return CompleteAndClaimReply(job=job, next=_with_inputs(service, claim) if claim else None)


@router.post("/report")
def report(body: ReportRequest, service: ServiceDep, caller: AgentDep) -> ReportReply:
    """Starts and ends in one transaction, each taken or refused alone (`error`), then at
    once (no long-poll) up to `max_claims` jobs that fit `room` together."""
    _as_node(service, caller, body.node)
    reply = service.report(
        body.node, body.starts, body.ends, body.room, body.max_claims, body.claim_key
    )
    reply.claims = [_with_inputs(service, claim) for claim in reply.claims]
    return reply


def _claim_with_inputs(service: Service, node: str, free: Capacity) -> Claim | None:
    got = service.claim(node, free)
    return _with_inputs(service, got) if got is not None else None


def _with_inputs(service: Service, claim: Claim) -> Claim:
    """The claim with its small inputs' bytes (64 KiB in all, at most): the agent starts
    the job without a round trip for each. From a remote store the agent fetches them."""
    spec, blobs, room = claim.job.spec, [], INLINE_BLOB
    if service.artifacts.remote:
        return claim
    for digest in dict.fromkeys([*([spec.code] if spec.code else []), *spec.inputs.values()]):
        size = service.artifacts.size(digest)
        if size is None:
            continue  # the agent's fetch will say what is missing
        if size <= room:
            blobs.append(InlineBlob(digest=digest, data=service.artifacts.read_bytes(digest)))
            room -= size
    return claim.model_copy(update={"blobs": blobs})
