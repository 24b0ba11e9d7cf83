"""The wire module: read models and the messages between agents and the control plane.
They tolerate unknown fields, so a newer server and an older agent or client can talk."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    WithJsonSchema,
    field_validator,
)

from sandrun.data_models import Environment, VolumeGrant
from sandrun.errors import SandrunError
from sandrun.ids import new_id
from sandrun.roles import Role
from sandrun.spec import JobSpec
from sandrun.spec.fields import Digest
from sandrun.spec.text import forbid_nul_in_schema, refuse_nul
from sandrun.spec.units import Amount, Count, Int, Num, Ordinal, number_only
from sandrun.states import AttemptState, FailureReason, JobState


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra=forbid_nul_in_schema)


class Request(Wire):
    """A message a server receives: its text reaches the store, so none may hold a NUL."""

    _no_nul = field_validator("*")(refuse_nul)


# Numbers on the wire are numbers: "2" or true is refused, not quietly converted.
Stream = Literal["stdout", "stderr"]
# Canonical base64, as the decoder insists (the last symbol's unused bits are zero).
_B64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$"
Base64Bytes = Annotated[
    bytes, WithJsonSchema({"type": "string", "contentEncoding": "base64", "pattern": _B64})
]


class Usage(Wire):
    """Resources one attempt used."""

    wall_seconds: Amount | None = None
    cpu_seconds: Amount | None = None
    max_rss_mb: Amount | None = None
    # What it held (metered by its agent and signed with its result): the ledger prices it.
    cpus: Amount | None = None
    memory_mb: Amount | None = None
    gpus: Amount | None = None
    gpu_model: str | None = None


class Attempt(Wire):
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
    git_commit: str | None = None  # what a repository job checked out
    worker_id: str | None = None  # the public key (base64) of the agent that signed it
    signature: str | None = None
    stdout_sha256: str | None = None
    meter_signature: str | None = None  # over sandrun.signing.meter_claim


class JobRecord(Wire):
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
    pipeline_id: str | None = None  # the pipeline run it is a step of
    step: str | None = None  # that step's name; `item` is its index in a fan-out
    item: int | None = None
    result: JsonValue = None  # its declared result (spec.result), once it completed
    cached_from: str | None = None  # the job whose result it reused instead of running
    replica_of: str | None = None  # the job whose replica it is (`consensus`); `replica`: which
    replica: int | None = None
    consensus: JsonValue = None  # the agreement its replicas came to (docs/pool.md)
    cost: float | None = None  # USD it paid, once ended (a priced pool); `held`: in escrow now
    held: float = 0.0
    checkpoint: str | None = None  # the blob its next attempt starts from (docs/lifecycle.md)
    checkpoint_requested_at: float | None = None  # `sandrun checkpoint`, last asked
    preemptions: int = 0  # times it was stopped for a job of higher priority
    waited_on: bool = Field(default=False, exclude=True)  # a job waits for it (store's)

    @classmethod
    def submitted(cls, spec: JobSpec, owner: str, at: float) -> JobRecord:
        """A job as a submit records it: pending, eligible from `at`, a fresh id."""
        return cls(
            id=new_id(),
            name=spec.display_name,
            owner=owner,
            # A job with consensus waits for its replicas.
            state=JobState.WAITING if spec.dependencies or spec.consensus else JobState.PENDING,
            spec=spec,
            priority=spec.priority,
            attempts=0,
            not_before=at,
            created_at=at,
            updated_at=at,
        )

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal


class Event(Wire):
    id: int
    job_id: str
    attempt: int | None
    kind: str
    message: str
    data: dict[str, Any] = {}
    at: float


class LogChunk(Wire):
    # Output is bytes, not text: on the wire it travels as base64.
    model_config = ConfigDict(extra="ignore", ser_json_bytes="base64", val_json_bytes="base64")

    attempt: Ordinal
    seq: Ordinal
    stream: Stream
    data: Base64Bytes
    at: Amount


class OutputFile(Wire):
    attempt: Ordinal
    path: Annotated[str, Field(min_length=1)]
    digest: Digest  # sha256 of the content
    size: Count


class Checkpoint(Wire):
    """A checkpoint a job keeps: what attempt `attempt` saved (0: the one it started from,
    another job's, `restore_from`)."""

    attempt: int
    digest: str
    size: int
    created_at: float


class JobPage(Wire):
    jobs: list[JobRecord]
    next_cursor: str | None = None


class AttemptRef(Wire):
    """Names one attempt and proves the caller holds it: the fencing token."""

    job_id: str
    attempt: Ordinal
    token: str


INLINE_BLOB = 64 << 10  # bytes: a blob this small may ride with a claim or an end


class InlineBlob(Request):
    """A small blob's bytes, sent with a message instead of fetched or uploaded alone: a
    job's inputs with its claim, an attempt's outputs with its end."""

    model_config = ConfigDict(extra="ignore", ser_json_bytes="base64", val_json_bytes="base64")

    digest: Digest
    data: Annotated[Base64Bytes, Field(max_length=INLINE_BLOB)]


class Claim(Wire):
    """What an agent gets when it claims a job: the spec, the attempt and its fencing token."""

    job: JobRecord
    attempt: int
    token: str
    lease_expires_at: float
    # Some of its small inputs (64 KiB in all, at most): the agent need not fetch them.
    blobs: list[InlineBlob] = []
    volumes: list[VolumeGrant] = []  # the volumes it mounts, and where they live
    secrets: dict[str, str] = {}  # its secrets' values, for this attempt alone
    environment: Environment | None = None  # the named environment it gives, resolved

    @property
    def ref(self) -> AttemptRef:
        return AttemptRef(job_id=self.job.id, attempt=self.attempt, token=self.token)


class AttemptResult(Wire):
    """What an agent reports when an attempt ends."""

    exit_code: (
        Annotated[int, Field(ge=-(2**31), le=2**31 - 1), BeforeValidator(number_only)] | None
    ) = None
    failure_reason: FailureReason | None = None
    message: str | None = None
    usage: Usage = Usage()
    outputs: list[OutputFile] = []
    unmatched_outputs: list[str] = []  # output patterns no file matched
    signature: str | None = None  # the agent's, over sandrun.signing.result_claim
    stdout_sha256: str | None = None  # of all its stdout (replicas may have to agree on it)
    meter_signature: str | None = None  # the agent's, over signing.meter_claim (held, stdout)
    checkpoint: OutputFile | None = None  # what it saved, when it exited 85 (checkpointed)


class Capacity(Wire):
    """Resources on a node (all of them, or those free now)."""

    cpus: Num
    memory_mb: Int
    gpus: Int = 0
    gpu_type: str | None = None  # the model (see sandrun/spec/gpus.json); one per node
    gpu_memory_gb: Amount = 0  # each GPU's

    def holds(self, cpus: float, memory_mb: int, gpus: int) -> bool:
        """Whether this much room holds a job of that size (the quantities of the fit
        rule; service/placement.py: fits has the rest)."""
        return cpus <= self.cpus and memory_mb <= self.memory_mb and gpus <= self.gpus

    def share(self, spec: JobSpec) -> Capacity:
        """The part of this node a job of `spec` holds while it runs."""
        return self.model_copy(
            update={
                "cpus": spec.cpus,
                "memory_mb": spec.memory or 0,
                "gpus": spec.gpus.count if spec.gpus else 0,
            }
        )

    def minus(self, held: Capacity) -> Capacity:
        """What is left of this room once `held` is taken from it."""
        return self.model_copy(
            update={
                "cpus": self.cpus - held.cpus,
                "memory_mb": self.memory_mb - held.memory_mb,
                "gpus": self.gpus - held.gpus,
            }
        )

    def plus(self, other: Capacity) -> Capacity:
        """This room and `other` together (rooms on one node: its GPU model is theirs)."""
        return self.model_copy(
            update={
                "cpus": self.cpus + other.cpus,
                "memory_mb": self.memory_mb + other.memory_mb,
                "gpus": self.gpus + other.gpus,
            }
        )


class SandboxReport(Wire):
    """How a node confines its jobs: the backend, the view and each limit's mechanism."""

    backend: str  # bwrap | unshare | none
    view: str  # system | host
    job_user: str
    limits: dict[str, str] = {}  # limit -> how it is enforced, or "not enforced"
    seccomp: str = "none"  # the system-call filter jobs run under, or "none: why"


class AttemptKey(Wire):
    job_id: str
    attempt: Ordinal

    @property
    def key(self) -> tuple[str, int]:
        return self.job_id, self.attempt


class Principal(Wire):
    """Who a request comes from."""

    name: str
    role: Role


class WarmGroup(Request):
    """An agent's warm workers of one key: one owner's sandbox shape (or class instance)."""

    owner: Annotated[str, Field(max_length=128)]
    # the functions (`function` labels, or job names) whose calls it served lately
    functions: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=16)] = []
    instance: StrictBool = False  # an `@app.cls` instance's, entered once per worker
    workers: Count
    idle: Count
    min_workers: Count = 0  # kept warm while its calls come (`min_workers=`)
    idle_timeout: Annotated[float, Field(ge=0, le=1e9), BeforeValidator(number_only)]  # s


class WarmReport(Request):
    """A node's warm workers (`sandrun nodes --json`; a user sees only their own groups)."""

    workers: Count = 0
    idle: Count = 0
    groups: Annotated[list[WarmGroup], Field(max_length=64)] = []


class NodeInfo(Wire):
    id: str
    name: str
    labels: dict[str, str] = {}
    capacity: Capacity
    state: str  # active | draining, or lost when its heartbeats stopped
    started_at: float
    heartbeat_at: float
    running: int = 0
    used_cpus: float = 0  # what its running jobs hold
    used_memory_mb: int = 0
    used_gpus: int = 0
    sandbox: SandboxReport | None = None
    public_key: str | None = None  # its worker id: what its results are signed with
    key_first_seen: float | None = None  # when that key first registered
    detected: Capacity | None = None  # what its hardware showed (capacity may be declared)
    operator: str | None = None  # the agent token (its name) that registered it
    warm: WarmReport | None = None  # its warm workers, as its latest heartbeat said


class Instance(BaseModel):
    """A GPU shape the pool can run now: `count` GPUs of one model on one node."""

    name: str  # "2xa100-80gb"
    gpu_type: str
    gpu_count: int
    gpu_memory_gb: float
    price_per_hour: float  # all its GPUs, from the server's price table (or the catalogue)
    nodes: int  # active nodes that have that many


class TokenInfo(Wire):
    """An API token as `sandrun token list` shows it (never its secret)."""

    id: str
    name: str
    role: Role
    created_at: float
    revoked_at: float | None = None


class ErrorBody(Wire):
    """Every error the API returns: a stable code, one clear message, the field at fault."""

    code: str
    message: str
    field: str | None = None
    suggestions: list[str] = []

    @classmethod
    def of(cls, exc: SandrunError) -> ErrorBody:
        return cls.model_validate(exc.to_dict())
