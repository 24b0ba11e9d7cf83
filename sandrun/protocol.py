"""The agent protocol: what agents send the control plane and what it answers (register,
claim, start, heartbeat, hand back, logs, completion, uploads). Read models shared with
users (jobs, attempts, claims, capacity) are in `sandrun.models`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from sandrun.models import (
    AttemptKey,
    AttemptRef,
    AttemptResult,
    Capacity,
    Claim,
    ErrorBody,
    InlineBlob,
    JobRecord,
    LogChunk,
    Request,
    SandboxReport,
    WarmReport,
    Wire,
)
from sandrun.spec.fields import Digest
from sandrun.spec.units import Amount, Count, Num, Ordinal

MAX_REPORTS = 256  # starts, and ends, in one report: what one transaction takes on

GitCommit = Annotated[str, Field(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")]  # SHA-1 or SHA-256


class CheckpointAsk(Wire):
    """Signal this attempt to checkpoint, unless it was for this request (`at`) already."""

    job_id: str
    attempt: int
    at: float


class HeartbeatReply(Wire):
    cancel: list[AttemptKey] = []  # attempts to kill: their jobs were cancelled
    paused: list[AttemptKey] = []  # attempts to keep frozen (the others: thawed)
    checkpoint: list[CheckpointAsk] = []  # attempts to ask for a checkpoint
    # Attempts to stop for a job of higher priority: asked to checkpoint, then, past
    # their `checkpoint.grace`, stopped.
    preempt: list[CheckpointAsk] = []
    stale: list[AttemptKey] = []  # attempts that lost their job: stop, do not report
    # Attempts the server has this node holding, not started, that the heartbeat did not
    # list: a claim whose reply was lost. The agent hands back those it never received.
    unheld: list[AttemptKey] = []


class KeyProof(Wire):
    """The agent's signature of (its name, its public key, `at`): see signing.prove."""

    at: Num
    signature: str


class RegisterRequest(Request):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
    capacity: Capacity
    labels: dict[str, str] = {}
    sandbox: SandboxReport | None = None
    public_key: str | None = None  # older agents sign nothing
    key_proof: KeyProof | None = None  # that it holds public_key's private half
    detected: Capacity | None = None  # what the hardware showed, where --cpus/--gpus... differ


class RegisterReply(Wire):
    node_id: str
    lease_seconds: float
    # What this server offers beyond the first agent API, so a newer agent can talk to
    # an older server: "complete-and-claim".
    features: list[str] = []


class ClaimRequest(Request):
    node: str
    free: Capacity
    wait: Num = Field(default=0.0, ge=0.0, le=60.0)  # long-poll this long for a job


class StartRequest(Request):
    ref: AttemptRef
    pid: Ordinal | None = None
    pid_started_at: Amount | None = None
    git_commit: GitCommit | None = None


NodeState = Literal["active", "draining", "stopped"]


class HeartbeatRequest(Request):
    node: str
    leases: list[AttemptRef] = []
    state: NodeState = "active"
    warm: WarmReport | None = None  # sent when its warm workers changed (None: as before)
    # Attempts it froze or thawed since its last heartbeat that got through.
    frozen: list[AttemptKey] = Field(default=[], max_length=MAX_REPORTS)
    thawed: list[AttemptKey] = Field(default=[], max_length=MAX_REPORTS)


# Why an agent gives back attempts it never started: it is stopping, or it never
# received their claims (the reply was lost, say in a server crash).
HandBackReason = Literal["stopping", "not_received"]


class HandBackRequest(Request):
    node: str
    attempts: list[AttemptKey]
    reason: HandBackReason


class LogsRequest(Request):
    ref: AttemptRef
    chunks: list[LogChunk]


INLINE_BLOBS = 4  # small outputs, at most, that ride with one end


class CompleteRequest(Request):
    ref: AttemptRef
    result: AttemptResult
    # Small outputs' bytes (to a server that lists "inline-outputs"), stored before the end.
    blobs: list[InlineBlob] = Field(default=[], max_length=INLINE_BLOBS)
    # The attempt's last output (to a server that lists "end-logs"), stored with the end.
    logs: list[LogChunk] = []


class CompleteAndClaimRequest(CompleteRequest):
    """An attempt's end, and a claim for the room it leaves on `node`: one round trip."""

    node: str
    free: Capacity


class CompleteAndClaimReply(Wire):
    job: JobRecord
    next: Claim | None = None


class ReportRequest(Request):
    """Attempts' starts and ends, applied in order in one transaction (starts first), and
    claims for the room the ends leave: up to `max_claims` jobs that fit `room` together."""

    node: str
    starts: list[StartRequest] = Field(default=[], max_length=MAX_REPORTS)
    ends: list[CompleteRequest] = Field(default=[], max_length=MAX_REPORTS)
    room: Capacity | None = None
    max_claims: Count = Field(default=0, le=MAX_REPORTS)
    # Names this call's claims: sent again after a lost reply, it gets the same ones back.
    claim_key: str | None = Field(default=None, min_length=1, max_length=64)


class Outcome(Wire):
    """One report's fate: taken (no error), or refused alone, the rest of its batch kept."""

    error: ErrorBody | None = None


class EndOutcome(Outcome):
    job: JobRecord | None = None  # the job after the end was taken


class ReportReply(Wire):
    starts: list[Outcome] = []  # one per start, in order
    ends: list[EndOutcome] = []  # one per end, in order
    claims: list[Claim] = []


class Uploaded(Wire):
    digest: Digest
    size: Count


class UploadsRequest(Request):
    """Blobs an agent is about to upload (to a server that lists "presigned-uploads")."""

    blobs: list[Uploaded] = Field(max_length=MAX_REPORTS)


class UploadTarget(Wire):
    digest: Digest
    url: str | None = None  # None: the store has these bytes already
    headers: dict[str, str] = {}  # to send with the PUT (the checksum the URL signs in)


class UploadsReply(Wire):
    uploads: list[UploadTarget]  # one per blob, in order
