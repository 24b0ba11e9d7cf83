"""The application layer: everything the CLI, the SDK and the HTTP routes do.

Nothing else touches the store. Scheduling and retry decisions are pure functions
(see retry.py); this module validates requests, stamps time and ids, and tells
listeners (a local agent's waker, say) that something changed.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from sandrun.artifacts import ArtifactStore
from sandrun.bulk_models import MAX_BATCH
from sandrun.errors import ArtifactNotFound, JobNotFoundError, SandrunError, ValidationError
from sandrun.hints import closest
from sandrun.ids import new_id, new_token, now
from sandrun.models import (
    Attempt,
    Event,
    Instance,
    JobPage,
    JobRecord,
    LogChunk,
    NodeInfo,
    OutputFile,
    Principal,
    TokenInfo,
)
from sandrun.retention_models import GcReport
from sandrun.roles import Role
from sandrun.service import admission, placement, results, retention
from sandrun.service.agents import AgentCalls
from sandrun.service.lifecycle import LifecycleCalls
from sandrun.service.pipelines import PipelineCalls
from sandrun.service.pool import PoolCalls, price
from sandrun.service.secretbox import SecretBox
from sandrun.spec import JobSpec, parse_spec
from sandrun.spec.fields import NAME_RE
from sandrun.spec.policy import Policy
from sandrun.states import JobState
from sandrun.store import Store
from sandrun.store.store import Listener

DEFAULT_LEASE_SECONDS = 30.0
LOCAL_OWNER = "local"  # who owns embedded jobs (and a server's without auth)
MAX_PAGE = 1000


class Service(AgentCalls, PipelineCalls, PoolCalls, LifecycleCalls):
    """The application layer; what agents call is in `AgentCalls` (service/agents.py)."""

    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] = now,
        policy: Policy | None = None,
        host_paths: bool = False,
        secret_box: SecretBox | None = None,
    ) -> None:
        # host_paths: jobs may name directories of the node (working_dir): embedded mode,
        # where the user and the node are one.
        self.host_paths = host_paths
        self.secret_box = secret_box  # none: secrets are refused
        self.store, self.artifacts = store, artifacts
        self.decide = results.deciding(artifacts)
        self.lease_seconds = lease_seconds
        self.policy = policy or Policy()
        self.clock = clock
        # node -> (its operator, its labels): fixed until it registers again
        self.nodes_known: dict[str, tuple[str | None, dict[str, str]]] = {}

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
        viewer = None if admin else owner
        visible = functools.partial(self._visible, viewer=viewer)
        parsed = []
        for i, given in enumerate(specs):
            try:
                spec = parse_spec(given)
                admission.check_host_paths(spec, self.host_paths)
                admission.check_maxima(spec, self.policy)
                admission.check_inputs(spec, visible)
                admission.check_after(spec, viewer, self.store.ended_jobs)
                admission.check_restore_from(spec, owner, self.store.get_job)
                admission.check_limits(spec, owner, self.policy)
                self.check_secrets(spec, owner)
                self.check_environment(spec, owner)
            except SandrunError as exc:
                if len(specs) == 1:
                    raise
                raise admission.in_batch(exc, i) from None
            parsed.append(spec)
        at = self.clock()
        priced = [price(spec, self.policy) for spec in parsed]
        jobs = [JobRecord.submitted(spec, owner, at) for spec, _ in priced]
        terms = {job.id: t for job, (_, t) in zip(jobs, priced, strict=True) if t is not None}
        self.store.insert_jobs(jobs, terms)
        return jobs

    def why_pending(self, job_id: str, viewer: str | None = None) -> str | None:
        """Why a pending or waiting job has not started, in words (None once it has)."""
        job = self.get(job_id, viewer)
        if job.state is JobState.WAITING:
            return placement.why_waiting(self.store.dependencies(job_id), job.spec.consensus)
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
            pinned=self.store.volume_pin(job_id),
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
        return self.store.request_cancel(job_id, self.clock())

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

    def nodes(self, viewer: str | None = None) -> list[NodeInfo]:
        """Every registered node; one whose heartbeats stopped for a lease reads as lost.
        A `viewer` (not an admin) sees only their own groups of its warm workers."""
        horizon = self.clock() - self.lease_seconds
        found = []
        for node in self.store.nodes():
            if node.heartbeat_at < horizon and node.state != "stopped":
                node = node.model_copy(update={"state": "lost"})
            if viewer is not None and node.warm is not None:
                mine = [g for g in node.warm.groups if g.owner == viewer]
                node = node.model_copy(
                    update={"warm": node.warm.model_copy(update={"groups": mine})}
                )
            found.append(node)
        return found

    def resume_after_restart(self) -> None:
        """A restarted server gives agents one lease to reconnect before their jobs count
        as lost: the store kept everything, the agents kept running."""
        self.store.extend_live_leases(self.clock() + self.lease_seconds)

    # --- blobs ------------------------------------------------------------------------

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
