"""A running job's life past start and cancel (docs/lifecycle.md): pause and resume,
checkpoints, and execs into it."""

from __future__ import annotations

from collections.abc import Callable

from sandrun.exec_models import ExecRequest
from sandrun.models import Checkpoint, JobRecord, NodeInfo
from sandrun.service import preemption
from sandrun.spec.policy import Policy
from sandrun.store import Store


class LifecycleCalls:
    """The lifecycle half of `Service`."""

    store: Store
    policy: Policy
    clock: Callable[[], float]
    get: Callable[[str, str | None], JobRecord]  # Service's: a job its viewer may see
    nodes: Callable[[], list[NodeInfo]]  # Service's

    def pause(self, job_id: str, viewer: str | None = None) -> JobRecord:
        """Freeze a running job where it stands (its agent does, within a heartbeat); it
        keeps its slot, and its timeout stops counting until it is resumed."""
        self.get(job_id, viewer)
        return self.store.set_paused(job_id, True, self.clock())

    def resume(self, job_id: str, viewer: str | None = None) -> JobRecord:
        self.get(job_id, viewer)
        return self.store.set_paused(job_id, False, self.clock())

    def checkpoint(self, job_id: str, viewer: str | None = None) -> JobRecord:
        """Ask a running job to checkpoint now: its agent sends it `checkpoint.signal`
        (within a heartbeat); the job saves and exits 85, and is resumed from it."""
        self.get(job_id, viewer)
        return self.store.request_checkpoint(job_id, self.clock())

    def begin_exec(
        self, job_id: str, request: ExecRequest, by: str, viewer: str | None = None
    ) -> tuple[str, int]:
        """Check that `by` (seeing `viewer`'s jobs: its owner, or an admin) may run
        `request` inside the job now, and record it; the node and attempt to run it in."""
        self.get(job_id, viewer)
        return self.store.begin_exec(job_id, by, request.argv, request.tty, self.clock())

    def end_exec(self, job_id: str, attempt: int, request: ExecRequest, code: int) -> None:
        self.store.end_exec(job_id, attempt, request.argv, code, self.clock())

    def checkpoints(self, job_id: str, viewer: str | None = None) -> list[Checkpoint]:
        """The checkpoints the job keeps, oldest first (its next attempt starts from the
        last)."""
        self.get(job_id, viewer)
        return self.store.checkpoints(job_id)

    def preempt(self) -> list[str]:
        """One preemption pass (the server's reaper runs it; embedded, the agent's
        heartbeat): the first pending job in line that has waited `preempt_after` seconds,
        fits no node's free room, and can have room made, has the fewest `preemptible` jobs
        of lower priority on one node asked to make room, and that node kept for it. The
        jobs asked, if any (one preemption at a time)."""
        after = self.policy.preempt_after
        if after is None:
            return []
        now = self.clock()
        candidates = self.store.preempt_candidates(now, now - after)
        running = self.store.running_below(candidates[0].priority) if candidates else []
        nodes = self.nodes() if running else []
        for job in candidates:
            below = [r for r in running if r.job.priority < job.priority]
            chosen = preemption.plan(job, nodes, below) if below else None
            if chosen is not None and chosen[1] and not self._held_back(job):
                node, victims = chosen
                return self.store.preempt(job, node.id, node.name, victims, now)
        return []

    def _held_back(self, job: JobRecord) -> bool:
        """Whether its owner's limit keeps the job waiting anyway (no use making room)."""
        limits = self.policy.limits_for(job.owner)
        if limits.max_running_jobs is None:
            return False
        return self.store.owner_load(job.owner)[0] >= limits.max_running_jobs
