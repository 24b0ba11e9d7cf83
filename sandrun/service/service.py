"""The application layer: everything the CLI, the SDK and (later) the HTTP routes do.

Nothing else touches the store. Scheduling and retry decisions are pure functions
(see retry.py); this module validates requests, stamps time and ids, and tells
listeners (a local agent's waker, say) that something changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import ArtifactNotFound, InvalidInput, closest
from sandrun.ids import new_id, now
from sandrun.models import (
    Attempt,
    AttemptResult,
    Capacity,
    Claim,
    Event,
    HeartbeatReply,
    JobPage,
    JobRecord,
    LogChunk,
    OutputFile,
)
from sandrun.service import retry
from sandrun.spec import JobSpec, parse_spec
from sandrun.states import JobState
from sandrun.store import Store

DEFAULT_LEASE_SECONDS = 30.0
MAX_PAGE = 1000

Listener = Callable[[str], None]


class Service:
    def __init__(
        self,
        store: Store,
        artifacts: LocalArtifactStore,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] = now,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._listeners: list[Listener] = []

    def close(self) -> None:
        self.store.close()

    def on_change(self, listener: Listener) -> None:
        """Call `listener(kind)` after each submit, cancel or finished attempt."""
        self._listeners.append(listener)

    def _changed(self, kind: str) -> None:
        for listener in self._listeners:
            listener(kind)

    # --- users ------------------------------------------------------------------------

    def submit(self, spec: JobSpec | dict[str, Any], owner: str = "local") -> JobRecord:
        """Validate and durably record a job; it is pending once this returns."""
        spec = parse_spec(spec)
        at = self.clock()
        job = JobRecord(
            id=new_id(),
            name=spec.display_name,
            owner=owner,
            state=JobState.PENDING,
            spec=spec,
            priority=spec.priority,
            attempts=0,
            not_before=at,
            created_at=at,
            updated_at=at,
        )
        self.store.insert_job(job)
        self._changed("submitted")
        return job

    def get(self, job_id: str) -> JobRecord:
        return self.store.get_job(job_id)

    def list_jobs(
        self,
        *,
        state: str | None = None,
        name: str | None = None,
        label: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Jobs newest first, filtered; pass `next_cursor` back for the next page."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        jobs = self.store.list_jobs(
            state=_state(state) if state else None,
            name=name,
            label=_label(label) if label else None,
            limit=limit,
            before=_cursor(cursor) if cursor else None,
        )
        last = jobs[-1] if len(jobs) == limit else None
        return JobPage(jobs=jobs, next_cursor=f"{last.created_at!r}/{last.id}" if last else None)

    def cancel(self, job_id: str) -> JobRecord:
        job = self.store.request_cancel(job_id, self.clock())
        self._changed("cancel")
        return job

    def attempts(self, job_id: str) -> list[Attempt]:
        return self.store.attempts(job_id)

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        return self.store.events(job_id, after=after, limit=limit)

    def logs(
        self,
        job_id: str,
        *,
        attempt: int | None = None,
        after: tuple[int, int] = (0, 0),
        limit: int = 1000,
    ) -> list[LogChunk]:
        """Log chunks in order (attempt, then seq), after the cursor `after`."""
        return self.store.logs(job_id, attempt=attempt, after=after, limit=limit)

    def outputs(self, job_id: str, attempt: int | None = None) -> list[OutputFile]:
        """Outputs of `attempt`, by default of the latest attempt that collected any."""
        outputs = self.store.outputs(job_id, attempt)
        if attempt is None and outputs:
            latest = max(o.attempt for o in outputs)
            outputs = [o for o in outputs if o.attempt == latest]
        return outputs

    def output(self, job_id: str, path: str, attempt: int | None = None) -> OutputFile:
        outputs = self.outputs(job_id, attempt)
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

    # --- agents -----------------------------------------------------------------------

    def register_node(self, name: str, capacity: dict[str, Any], node_id: str | None = None) -> str:
        """Record a node; a fixed `node_id` lets a restarted agent claim its old attempts."""
        node_id = node_id or f"{name}/{new_id()}"
        self.store.register_node(node_id, name, capacity, self.clock())
        return node_id

    def live_attempts(self, node: str) -> list[Attempt]:
        return self.store.live_attempts(node)

    def claim(self, node: str, free: Capacity) -> Claim | None:
        return self.store.claim(node, free, self.clock(), self.lease_seconds)

    def start(
        self, claim: Claim, pid: int | None = None, pid_started_at: float | None = None
    ) -> None:
        self.store.start_attempt(
            claim.job.id, claim.attempt, claim.token, self.clock(), pid, pid_started_at
        )

    def heartbeat(self, node: str, leases: list[tuple[str, int, str]]) -> HeartbeatReply:
        stale = self.store.renew_leases(leases, self.clock(), self.lease_seconds)
        return HeartbeatReply(cancel=self.store.cancel_requested(node), stale=stale)

    def append_logs(self, claim: Claim, chunks: list[LogChunk]) -> None:
        self.store.append_logs(claim.job.id, claim.attempt, claim.token, chunks, self.clock())

    def complete(self, claim: Claim, result: AttemptResult) -> JobRecord:
        job = self.store.finish_attempt(
            claim.job.id, claim.attempt, claim.token, result, retry.decide, self.clock()
        )
        self._changed("finished")
        return job

    def expire_leases(self) -> list[tuple[str, int]]:
        """End as node_lost the attempts whose agents stopped renewing their leases."""
        lost = self.store.lose_attempts(retry.decide, self.clock())
        if lost:
            self._changed("lost")
        return lost

    def lose_node(self, node: str) -> list[tuple[str, int]]:
        """End as node_lost every live attempt of `node` (known dead: its process is gone)."""
        lost = self.store.lose_attempts(retry.decide, self.clock(), node=node)
        if lost:
            self._changed("lost")
        return lost

    def next_wakeup(self) -> float | None:
        return self.store.next_not_before()


def _state(text: str) -> JobState:
    try:
        return JobState(text)
    except ValueError:
        valid = [s.value for s in JobState]
        near = closest(text, valid)
        raise InvalidInput(
            f"state {text!r} is not a job state",
            field="state",
            suggestions=[*(f"did you mean {n!r}?" for n in near), "valid: " + ", ".join(valid)],
        ) from None


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidInput(f"label filter {text!r} must be KEY=VALUE", field="label")
    return key, value


def _cursor(text: str) -> tuple[float, str]:
    created, _, job_id = text.partition("/")
    try:
        return float(created), job_id
    except ValueError:
        raise InvalidInput(f"cursor {text!r} is not one this server gave", field="cursor") from None
