"""The application layer: everything the CLI, the SDK and the HTTP routes do.

Nothing else touches the store. Scheduling and retry decisions are pure functions
(see retry.py); this module validates requests, stamps time and ids, and tells
listeners (a local agent's waker, say) that something changed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Any

from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import (
    ArtifactNotFound,
    BadKeyProof,
    BadSignature,
    HostPathRefused,
    JobNotFoundError,
    OverMaximum,
    OverOwnerLimit,
    SandrunError,
    ValidationError,
    closest,
)
from sandrun.ids import new_id, new_token, now
from sandrun.models import (
    MAX_BATCH,
    Attempt,
    AttemptKey,
    AttemptRef,
    AttemptResult,
    Capacity,
    Claim,
    Event,
    GcReport,
    HandBackReason,
    HeartbeatReply,
    Instance,
    JobPage,
    JobRecord,
    KeyProof,
    LogChunk,
    NodeInfo,
    NodeState,
    OutputFile,
    Principal,
    Role,
    SandboxReport,
    TokenInfo,
)
from sandrun.service import maxima, placement, retention, retry
from sandrun.signing import (
    PROOF_WINDOW,
    registration_claim,
    result_claim,
    verify,
)
from sandrun.spec import JobSpec, parse_spec
from sandrun.spec.job import NAME_RE
from sandrun.spec.policy import Policy
from sandrun.states import AttemptState, JobState
from sandrun.store import Store
from sandrun.store.store import Listener

log = logging.getLogger("sandrun.service")

DEFAULT_LEASE_SECONDS = 30.0
LOCAL_OWNER = "local"  # who owns embedded jobs (and a server's without auth)
MAX_PAGE = 1000
_HAND_BACK_MESSAGES: dict[HandBackReason, str] = {
    "stopping": "handed back unstarted: node {node} is stopping",
    "not_received": "handed back unstarted: node {node} never received the claim",
}


class Service:
    def __init__(
        self,
        store: Store,
        artifacts: LocalArtifactStore,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] = now,
        policy: Policy | None = None,
        host_paths: bool = False,
    ) -> None:
        # host_paths: jobs may name directories of the node (working_dir): embedded mode,
        # where the user and the node are one.
        self.host_paths = host_paths
        self.store = store
        self.artifacts = artifacts
        self.lease_seconds = lease_seconds
        self.policy = policy or Policy()
        self.clock = clock

    def close(self) -> None:
        self.store.close()

    def on_change(self, listener: Listener) -> None:
        """Call `listener(kind)` after each committed change: submitted, cancel, logs,
        finished, lost (and, on PostgreSQL, those made by other servers)."""
        self.store.subscribe(listener)

    # --- users ------------------------------------------------------------------------

    def submit(
        self, spec: JobSpec | dict[str, Any], owner: str = LOCAL_OWNER, *, admin: bool = False
    ) -> JobRecord:
        """Validate and durably record a job; it is pending once this returns."""
        return self.submit_many([spec], owner, admin=admin)[0]

    def submit_many(
        self,
        specs: Sequence[JobSpec | dict[str, Any]],
        owner: str = LOCAL_OWNER,
        *,
        admin: bool = False,
    ) -> list[JobRecord]:
        """Validate every spec, then record them all in one transaction (queued in this
        order); one bad spec refuses the batch, its error naming `jobs.<i>`. The blobs a
        job brings must be its owner's (`admin`: any blob stored here)."""
        if not 1 <= len(specs) <= MAX_BATCH:
            raise ValidationError(
                f"a batch holds 1 to {MAX_BATCH} jobs, not {len(specs)}",
                field="jobs",
                suggestions=[f"submit in batches of at most {MAX_BATCH}"],
            )
        parsed = []
        for i, given in enumerate(specs):
            try:
                spec = parse_spec(given)
                self._check_host_paths(spec)
                self._check_maxima(spec)
                self._check_inputs(spec, None if admin else owner)
                self._check_limits(spec, owner)
            except SandrunError as exc:
                if len(specs) == 1:
                    raise
                raise _in_batch(exc, i) from None
            parsed.append(spec)
        at = self.clock()
        jobs = [JobRecord.submitted(spec, owner, at) for spec in parsed]
        self.store.insert_jobs(jobs)
        return jobs

    def _check_host_paths(self, spec: JobSpec) -> None:
        """A server's jobs run only in what they bring: a path on the node is refused."""
        if spec.working_dir is not None and not self.host_paths:
            raise HostPathRefused(
                f"working_dir {spec.working_dir!r} names a directory on the node; a server's "
                "jobs run only in what they bring",
                field="working_dir",
                suggestions=[
                    "drop working_dir: `sandrun run` and the SDK upload the current directory",
                    "or bring the files as code, inputs or a repository",
                ],
            )

    def _check_inputs(self, spec: JobSpec, owner: str | None) -> None:
        """Every blob a job brings must be uploaded (by its owner) before it is submitted."""
        named = {f"inputs.{path}": digest for path, digest in spec.inputs.items()}
        if spec.code:
            named["code"] = spec.code
        for field, digest in named.items():
            if not self._visible(digest, owner):
                raise ArtifactNotFound(
                    f"{field}: nothing was uploaded with digest {digest}",
                    field=field,
                    suggestions=["upload it first (POST /v1/artifacts), then submit"],
                )

    def _check_maxima(self, spec: JobSpec) -> None:
        """Refuse a job that asks for more than this server lets one job have."""
        first = next(maxima.over(spec, self.policy.maxima), None)
        if first is not None:
            field, asked, most, unit = first
            raise OverMaximum(
                f"{field}: {asked:g}{unit} is over this server's maximum of {most:g}{unit}",
                field=field,
                suggestions=[f"ask for at most {most:g}{unit}, or ask an admin to raise it"],
            )

    def _check_limits(self, spec: JobSpec, owner: str) -> None:
        """Refuse a job its owner's limits would keep waiting forever."""
        limits = self.policy.limits_for(owner)
        gpus = spec.gpus.count if spec.gpus else 0
        if limits.max_running_jobs == 0:
            raise OverOwnerLimit(
                f"{owner} may not run jobs on this server (max_running_jobs 0)", field="owner"
            )
        if limits.max_gpus is not None and gpus > limits.max_gpus:
            raise OverOwnerLimit(
                f"gpus: the job needs {gpus} GPUs; this server lets {owner} hold at most "
                f"{limits.max_gpus} at once (max_gpus)",
                field="gpus",
                suggestions=[f"ask for at most {limits.max_gpus}, or ask an admin to raise it"],
            )

    def why_pending(self, job_id: str, viewer: str | None = None) -> str | None:
        """Why a pending job has not started, in words (None once it has)."""
        job = self.get(job_id, viewer)
        if job.state is not JobState.PENDING:
            return None
        limits = self.policy.limits_for(job.owner)
        held = self.store.owner_load(job.owner) if limits.any else None
        return placement.why_pending(
            job.spec,
            self.nodes(),
            owner=job.owner,
            limits=limits,
            held=held,
            reserved_on=self.store.reserved_node(job_id),
        )

    def queue_position(self, job: JobRecord) -> int:
        """Pending jobs that would be claimed before `job`."""
        return self.store.queue_position(job)

    def owner_usage(self, owner: str) -> tuple[int, int, float]:
        """`owner`'s jobs queued or running, submitted in the last hour, and CPU-seconds
        of attempts that ended in the last minute."""
        return self.store.owner_usage(owner, self.clock())

    def instances(
        self, min_gpu_memory_gb: float = 0, max_price: float | None = None
    ) -> list[Instance]:
        """The GPU instance types the pool's active nodes offer, cheapest first."""
        return placement.instances(
            self.nodes(), self.policy.price_per_gpu_hour, min_gpu_memory_gb, max_price
        )

    def queue_length(self) -> tuple[int, int]:
        """Jobs waiting and running, all owners."""
        return self.store.queue_length()

    def get(self, job_id: str, viewer: str | None = None) -> JobRecord:
        """The job, if `viewer` (an owner name; None for admins) may see it."""
        job = self.store.get_job(job_id)
        if viewer is not None and job.owner != viewer:
            raise JobNotFoundError(f"no job has id {job_id!r}", field="job_id")
        return job

    def ended(self, ids: Sequence[str], viewer: str | None = None) -> list[JobRecord]:
        """Those of these jobs (at most MAX_BATCH) that have ended; an unknown id, or
        another owner's, is refused as `get` refuses it."""
        if not 1 <= len(ids) <= MAX_BATCH:
            raise ValidationError(
                f"wait for 1 to {MAX_BATCH} jobs at once, not {len(ids)}", field="ids"
            )
        ended, owners = self.store.ended_jobs(list(ids))
        for job_id in ids:
            if job_id not in owners or (viewer is not None and owners[job_id] != viewer):
                raise JobNotFoundError(f"no job has id {job_id!r}", field="ids")
        return ended

    def list_jobs(
        self,
        *,
        viewer: str | None = None,
        state: str | None = None,
        name: str | None = None,
        label: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Jobs newest first, filtered; pass `next_cursor` back for the next page."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        jobs = self.store.list_jobs(
            state=_state(state) if state else None,
            owner=viewer,
            name=name,
            label=_label(label) if label else None,
            limit=limit,
            before=_cursor(cursor) if cursor else None,
        )
        last = jobs[-1] if len(jobs) == limit else None
        return JobPage(jobs=jobs, next_cursor=f"{last.created_at!r}/{last.id}" if last else None)

    def cancel(self, job_id: str, viewer: str | None = None) -> JobRecord:
        self.get(job_id, viewer)
        job = self.store.request_cancel(job_id, self.clock())
        return job

    def attempts(self, job_id: str, viewer: str | None = None) -> list[Attempt]:
        self.get(job_id, viewer)
        return self.store.attempts(job_id)

    def events(
        self, job_id: str, after: int = 0, limit: int = 1000, viewer: str | None = None
    ) -> list[Event]:
        self.get(job_id, viewer)
        return self.store.events(job_id, after=after, limit=limit)

    def logs(
        self,
        job_id: str,
        *,
        attempt: int | None = None,
        after: tuple[int, int] = (0, 0),
        limit: int = 1000,
        viewer: str | None = None,
    ) -> list[LogChunk]:
        """Log chunks in order (attempt, then seq), after the cursor `after`."""
        if viewer is not None:
            self.get(job_id, viewer)
        return self.store.logs(job_id, attempt=attempt, after=after, limit=limit)

    def outputs(
        self, job_id: str, attempt: int | None = None, viewer: str | None = None
    ) -> list[OutputFile]:
        """Outputs of `attempt`, by default of the latest attempt that collected any."""
        self.get(job_id, viewer)
        outputs = self.store.outputs(job_id, attempt)
        if attempt is None and outputs:
            latest = max(o.attempt for o in outputs)
            outputs = [o for o in outputs if o.attempt == latest]
        return outputs

    def output(
        self, job_id: str, path: str, attempt: int | None = None, viewer: str | None = None
    ) -> OutputFile:
        outputs = self.outputs(job_id, attempt, viewer)
        for out in outputs:
            if out.path == path:
                return out
        near = closest(path, [o.path for o in outputs])
        raise ArtifactNotFound(
            f"job {job_id} has no output {path!r}",
            field="path",
            suggestions=[f"did you mean {n!r}?" for n in near]
            or [f"it has {len(outputs)} output(s); list them with `sandrun outputs {job_id}`"],
        )

    # --- tokens and nodes -------------------------------------------------------------

    def create_token(self, name: str, role: Role) -> str:
        """A new API token for `name`; only its hash is stored, so show it once."""
        if not NAME_RE.match(name):
            raise ValidationError(
                f"token name {name!r} is not valid; use letters, digits, '-' or '_'",
                field="name",
            )
        secret = "sr_" + new_token() + new_token()
        self.store.insert_token(new_id(), name, role, _digest(secret), self.clock())
        return secret

    def authenticate(self, secret: str) -> Principal | None:
        return self.store.principal_by_hash(_digest(secret))

    def tokens(self) -> list[TokenInfo]:
        return self.store.tokens()

    def revoke_token(self, key: str) -> int:
        """Revoke the token with id `key`, or every token named `key`; return how many."""
        count = self.store.revoke_tokens(key, self.clock())
        if count == 0:
            known = [t for t in self.store.tokens() if t.id == key or t.name == key]
            if known:
                return 0  # revoked already
            raise ValidationError(
                f"no token has id or name {key!r}",
                field="token",
                suggestions=["list them with `sandrun token list`"],
            )
        return count

    def nodes(self) -> list[NodeInfo]:
        """Every registered node; one whose heartbeats stopped for a lease reads as lost."""
        horizon = self.clock() - self.lease_seconds
        return [
            n.model_copy(update={"state": "lost"})
            if n.heartbeat_at < horizon and n.state != "stopped"
            else n
            for n in self.store.nodes()
        ]

    def resume_after_restart(self) -> None:
        """A restarted server gives agents one lease to reconnect before their jobs count
        as lost: the store kept everything, the agents kept running."""
        self.store.extend_live_leases(self.clock() + self.lease_seconds)

    # --- agents -----------------------------------------------------------------------

    def register_node(
        self,
        name: str,
        capacity: Capacity,
        labels: dict[str, str] | None = None,
        node_id: str | None = None,
        sandbox: SandboxReport | None = None,
        public_key: str | None = None,
        detected: Capacity | None = None,
        key_proof: KeyProof | None = None,
    ) -> str:
        """Record a node; a fixed `node_id` lets a restarted agent claim its old attempts.
        With `public_key`, every result it reports must be signed with that key: the agent
        proves it holds the key (`key_proof`), and a key belongs to the first node name
        that registered it."""
        if public_key is not None:
            self._check_proof(name, public_key, key_proof)
        node_id = node_id or f"{name}/{new_id()}"
        self.store.register_node(
            node_id, name, capacity, labels or {}, self.clock(), sandbox, public_key, detected
        )
        return node_id

    def _check_proof(self, name: str, public_key: str, proof: KeyProof | None) -> None:
        if proof is None:
            raise BadKeyProof(
                "registering a worker key needs proof of its private key (key_proof)",
                field="key_proof",
                suggestions=["upgrade the agent"],
            )
        if abs(proof.at - self.clock()) > PROOF_WINDOW:
            raise BadKeyProof(
                f"key_proof is from {proof.at:.0f}, not within {PROOF_WINDOW:.0f} s of the "
                "server's clock",
                field="key_proof.at",
                suggestions=["set the agent's clock (NTP)"],
            )
        if not verify(public_key, registration_claim(name, public_key, proof.at), proof.signature):
            raise BadKeyProof(
                "key_proof does not verify against public_key", field="key_proof.signature"
            )

    def node_is_live(self, node: str) -> bool:
        """Whether `node` is registered and has heartbeated within a lease."""
        return self.store.node_heartbeat_at(node) >= self.clock() - self.lease_seconds

    def live_attempts(self, node: str) -> list[Attempt]:
        return self.store.live_attempts(node)

    def claim(self, node: str, free: Capacity, wait: float = 0.0) -> Claim | None:
        """Claim at once. (`wait` is the control plane's long-poll: the server's route
        holds the request, an embedded agent is woken by a datagram instead.)"""
        return self.store.claim(node, free, self.clock(), self.lease_seconds, self.policy)

    def start(
        self,
        ref: AttemptRef,
        pid: int | None = None,
        pid_started_at: float | None = None,
        git_commit: str | None = None,
    ) -> None:
        self.store.start_attempt(
            ref.job_id, ref.attempt, ref.token, self.clock(), pid, pid_started_at, git_commit
        )

    def fetch_artifact(self, digest: str, viewer: str | None = None) -> None:
        """The agent shares this store: the blob is either here or was never uploaded.
        A `viewer` (an owner) is told the same about a blob that is not theirs."""
        if not self._visible(digest, viewer):
            raise ArtifactNotFound(f"no artifact has digest {digest}")

    def _visible(self, digest: str, viewer: str | None) -> bool:
        return self.artifacts.has(digest) if viewer is None else self.blob_visible(digest, viewer)

    def upload(self, data: bytes, owner: str) -> tuple[str, int]:
        """Store a blob `owner` sends; return (sha256, size)."""
        digest, size = self.artifacts.put_bytes(data)
        self.store.add_blob_owner(digest, owner)
        return digest, size

    def blob_visible(self, digest: str, owner: str) -> bool:
        """Whether `owner` may name this blob: it uploaded it, or its jobs made or use it.
        Any other blob reads as absent, so a digest tells nobody what others stored."""
        return self.artifacts.has(digest) and self.store.blob_visible(digest, owner)

    def heartbeat(
        self, node: str, leases: list[AttemptRef], state: NodeState = "active"
    ) -> HeartbeatReply:
        """Renew the node and its attempts' leases; say which to cancel and which are stale."""
        now = self.clock()
        self.store.node_heartbeat(node, state, now)
        held = [(r.job_id, r.attempt, r.token) for r in leases]
        stale = self.store.renew_leases(held, now, self.lease_seconds)
        listed = {(r.job_id, r.attempt) for r in leases}
        unheld = [
            a
            for a in self.store.live_attempts(node)
            if a.state is AttemptState.SCHEDULED and (a.job_id, a.number) not in listed
        ]
        return HeartbeatReply(
            cancel=[AttemptKey(job_id=j, attempt=n) for j, n in self.store.cancel_requested(node)],
            stale=[AttemptKey(job_id=j, attempt=n) for j, n in stale],
            unheld=[AttemptKey(job_id=a.job_id, attempt=a.number) for a in unheld],
        )

    def hand_back(
        self, node: str, attempts: list[AttemptKey], reason: HandBackReason
    ) -> list[AttemptKey]:
        """End the attempts `node` gives back unstarted; their jobs are queued again with no
        retry counted. Attempts not on `node`, or started, are left alone (not returned)."""
        why = _HAND_BACK_MESSAGES[reason].format(node=node)
        keys = [a.key for a in attempts]
        ended = self.store.hand_back(node, keys, why, retry.handed_back, self.clock())
        return [AttemptKey(job_id=j, attempt=n) for j, n in ended]

    def append_logs(self, ref: AttemptRef, chunks: list[LogChunk]) -> None:
        self.store.append_logs(ref.job_id, ref.attempt, ref.token, chunks, self.clock())

    def complete(self, ref: AttemptRef, result: AttemptResult) -> JobRecord:
        _check_output_paths(result.outputs)
        signer = self._signer(ref, result)
        if signer is None:
            result = result.model_copy(update={"signature": None})  # nothing to check it by
        return self.store.finish_attempt(
            ref.job_id, ref.attempt, ref.token, result, retry.decide, self.clock(), signer
        )

    def complete_and_claim(
        self, ref: AttemptRef, result: AttemptResult, node: str, free: Capacity
    ) -> tuple[JobRecord, Claim | None]:
        """Report an attempt's end, then claim the best job that fits the room it leaves
        (`free`), so an agent refills a slot without another round trip."""
        job = self.complete(ref, result)
        try:
            return job, self.claim(node, free) if self.node_is_live(node) else None
        except SandrunError as exc:  # the result is recorded: that must not read as failed
            log.warning("claim after job %s ended failed: %s", ref.job_id, exc)
            return job, None

    def _signer(self, ref: AttemptRef, result: AttemptResult) -> str | None:
        """The key the result is verified to be signed with; None if its agent has none."""
        key = self.store.signer_key(ref.job_id, ref.attempt)
        if key is None:
            return None  # an agent that registered no key (or the store refuses the report)
        where = f"job {ref.job_id} attempt {ref.attempt}"
        if result.signature is None:
            raise BadSignature(f"{where}: its agent signs results, but this one is unsigned")
        job = self.store.get_job(ref.job_id)
        outputs = {out.path: out.digest for out in result.outputs}
        claim = result_claim(job.id, ref.attempt, job.spec, result.exit_code, outputs)
        if not verify(key, claim, result.signature):
            raise BadSignature(f"{where}: the signature does not match its agent's key")
        return key

    def expire_leases(self) -> list[tuple[str, int]]:
        """End as node_lost the attempts whose agents stopped renewing their leases."""
        return self.store.lose_attempts(retry.decide, self.clock())

    def lose_node(self, node: str) -> list[tuple[str, int]]:
        """End as node_lost every live attempt of `node` (known dead: its process is gone)."""
        return self.store.lose_attempts(retry.decide, self.clock(), node=node)

    def next_wakeup(self) -> float | None:
        return self.store.next_not_before()

    # --- operators --------------------------------------------------------------------

    def collect_garbage(self, older_than: float, purge_jobs: bool = False) -> GcReport:
        """Remove logs of jobs that ended more than `older_than` seconds ago (and, with
        `purge_jobs`, the jobs), agents silent that long with nothing running, then blobs
        nothing refers to any more."""
        at = self.clock()
        return retention.collect(
            self.store,
            self.artifacts,
            cutoff=at - older_than,
            now=at,
            lease_seconds=self.lease_seconds,
            purge_jobs=purge_jobs,
        )


def _check_output_paths(outputs: Sequence[OutputFile]) -> None:
    """An agent names outputs: each must be a normalised relative path inside the working
    directory, named once (a client writes them under its download directory)."""
    seen: set[str] = set()
    for i, out in enumerate(outputs):
        path = out.path
        clean = PurePosixPath(path).as_posix()
        parts = path.split("/")
        if clean != path or path.startswith("/") or "\0" in path or {"", ".", ".."} & set(parts):
            raise ValidationError(
                f"output path {path!r} is not a normalised relative path inside the working "
                "directory",
                field=f"result.outputs.{i}.path",
            )
        if path in seen:
            raise ValidationError(
                f"output path {path!r} is listed twice", field=f"result.outputs.{i}.path"
            )
        seen.add(path)


def _digest(secret: str) -> str:
    # Tokens are 256 random bits: a plain sha256 is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


def _state(text: str) -> JobState:
    try:
        return JobState(text)
    except ValueError:
        valid = [s.value for s in JobState]
        near = closest(text, valid)
        raise ValidationError(
            f"state {text!r} is not a job state",
            field="state",
            suggestions=[*(f"did you mean {n!r}?" for n in near), "valid: " + ", ".join(valid)],
        ) from None


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValidationError(f"label filter {text!r} must be KEY=VALUE", field="label")
    return key, value


def _cursor(text: str) -> tuple[float, str]:
    created, _, job_id = text.partition("/")
    try:
        return float(created), job_id
    except ValueError:
        raise ValidationError(
            f"cursor {text!r} is not one this server gave", field="cursor"
        ) from None


def _in_batch(exc: SandrunError, index: int) -> SandrunError:
    """The same error, naming the batch entry it is about."""
    where = f"jobs.{index}"
    return type(exc)(
        f"{where}: {exc.message}",
        field=f"{where}.{exc.field}" if exc.field else where,
        suggestions=exc.suggestions,
    )
