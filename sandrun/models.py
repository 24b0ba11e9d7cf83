"""The wire module: read models and the messages between agents and the control plane.

What the store returns, the service hands out and the API sends. They tolerate unknown
fields, so a newer server and an older agent or client can talk.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sandrun.spec import JobSpec
from sandrun.states import AttemptState, FailureReason, JobState


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Usage(_Wire):
    """Resources one attempt used."""

    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    max_rss_mb: float | None = None


class Attempt(_Wire):
    job_id: str
    number: int
    state: AttemptState
    node: str
    lease_expires_at: float
    pid: int | None = None
    pid_started_at: float | None = None
    scheduled_at: float
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    failure_reason: FailureReason | None = None
    message: str | None = None
    usage: Usage = Usage()


class JobRecord(_Wire):
    id: str
    name: str
    owner: str
    state: JobState
    spec: JobSpec
    priority: int
    attempts: int
    retries_used: int = 0
    infra_retries: int = 0
    exit_code: int | None = None
    failure_reason: FailureReason | None = None
    message: str | None = None
    cancel_requested: bool = False
    not_before: float
    created_at: float
    updated_at: float
    finished_at: float | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal


class Event(_Wire):
    id: int
    job_id: str
    attempt: int | None
    kind: str
    message: str
    data: dict[str, Any] = {}
    at: float


class LogChunk(_Wire):
    # Output is bytes, not text: on the wire it travels as base64.
    model_config = ConfigDict(extra="ignore", ser_json_bytes="base64", val_json_bytes="base64")

    attempt: int
    seq: int
    stream: str  # "stdout" | "stderr"
    data: bytes
    at: float


class OutputFile(_Wire):
    attempt: int
    path: str
    digest: str  # sha256 hex of the content
    size: int


class JobPage(_Wire):
    jobs: list[JobRecord]
    next_cursor: str | None = None


class AttemptRef(_Wire):
    """Names one attempt and proves the caller holds it: the fencing token."""

    job_id: str
    attempt: int
    token: str


class Claim(_Wire):
    """What an agent gets when it claims a job: the spec, the attempt and its fencing token."""

    job: JobRecord
    attempt: int
    token: str
    lease_expires_at: float

    @property
    def ref(self) -> AttemptRef:
        return AttemptRef(job_id=self.job.id, attempt=self.attempt, token=self.token)


class AttemptResult(_Wire):
    """What an agent reports when an attempt ends."""

    exit_code: int | None = None
    failure_reason: FailureReason | None = None
    message: str | None = None
    usage: Usage = Usage()
    outputs: list[OutputFile] = []


class Capacity(_Wire):
    """Resources on a node (all of them, or those free now)."""

    cpus: float
    memory_mb: int
    gpus: int = 0


class HeartbeatReply(_Wire):
    cancel: list[tuple[str, int]] = []  # attempts to kill: their jobs were cancelled
    stale: list[tuple[str, int]] = []  # attempts that lost their job: stop, do not report


class Role(StrEnum):
    USER = "user"  # submits and sees its own jobs
    AGENT = "agent"  # speaks only the agent endpoints
    ADMIN = "admin"  # sees everything


class Principal(_Wire):
    """Who a request comes from."""

    name: str
    role: Role


class NodeInfo(_Wire):
    id: str
    name: str
    labels: dict[str, str] = {}
    capacity: Capacity
    state: str  # active | draining, or lost when its heartbeats stopped
    started_at: float
    heartbeat_at: float
    running: int = 0


# --- agent <-> server requests -------------------------------------------------------------


class RegisterRequest(_Wire):
    name: str
    capacity: Capacity
    labels: dict[str, str] = {}


class RegisterReply(_Wire):
    node_id: str
    lease_seconds: float


class ClaimRequest(_Wire):
    node: str
    free: Capacity
    wait: float = Field(default=0.0, ge=0.0, le=60.0)  # long-poll this long for a job


class StartRequest(_Wire):
    ref: AttemptRef
    pid: int | None = None
    pid_started_at: float | None = None


class HeartbeatRequest(_Wire):
    node: str
    leases: list[AttemptRef] = []
    state: str = "active"


class LogsRequest(_Wire):
    ref: AttemptRef
    chunks: list[LogChunk]


class CompleteRequest(_Wire):
    ref: AttemptRef
    result: AttemptResult
