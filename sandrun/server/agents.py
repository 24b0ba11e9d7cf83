"""The agent API: register, long-poll claims, heartbeats, logs, artifacts, completion.

Every write after the claim names its attempt and carries the attempt's token; the store
refuses (409) a report from an attempt that no longer holds its job.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from sandrun.models import AttemptKey, Claim, JobRecord, Principal
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
)
from sandrun.roles import Role
from sandrun.server.auth import ERRORS, ServiceDep, agent
from sandrun.server.notify import Notifier
from sandrun.server.params import Text
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
    return RegisterReply(
        node_id=node_id,
        lease_seconds=service.lease_seconds,
        features=["complete-and-claim", "hand-back", "report"],
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
    await run_in_threadpool(_as_node, service, caller, body.node)
    notifier: Notifier = request.app.state.work
    deadline = time.monotonic() + body.wait
    while True:
        seen = notifier.generation
        # A poll must not outlive its agent: work claimed for a dead one waits out a lease.
        if await request.is_disconnected() or not await run_in_threadpool(
            service.node_is_live, body.node
        ):
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        got = await run_in_threadpool(service.claim, body.node, body.free)
        if got is not None:
            return got
        left = deadline - time.monotonic()
        if left <= 0:
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        upcoming = await run_in_threadpool(service.next_wakeup)
        if upcoming is not None:  # a retry's backoff ends before the poll does
            left = min(left, max(upcoming - time.time(), 0.01))
        await notifier.wait(seen, left)


@router.post("/start", status_code=status.HTTP_204_NO_CONTENT)
def start(body: StartRequest, service: ServiceDep) -> None:
    service.start(body.ref, body.pid, body.pid_started_at, body.git_commit)


@router.post("/heartbeat")
def heartbeat(body: HeartbeatRequest, service: ServiceDep, caller: AgentDep) -> HeartbeatReply:
    _as_node(service, caller, body.node)
    return service.heartbeat(body.node, body.leases, body.state)


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


@router.get(
    "/artifacts/{digest}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_artifact(digest: Text, service: ServiceDep) -> FileResponse:
    """A blob a job brings (its inputs or code), for the agent that runs it."""
    service.fetch_artifact(digest)
    return FileResponse(service.artifacts.path(digest), media_type="application/octet-stream")


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
    return CompleteAndClaimReply(job=job, next=claim)


@router.post("/report")
def report(body: ReportRequest, service: ServiceDep, caller: AgentDep) -> ReportReply:
    """Starts and ends in one transaction, each taken or refused alone (`error`), then at
    once (no long-poll) up to `max_claims` jobs that fit `room` together."""
    _as_node(service, caller, body.node)
    return service.report(
        body.node, body.starts, body.ends, body.room, body.max_claims, body.claim_key
    )
