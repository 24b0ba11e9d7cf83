"""A running job's life past start and cancel (docs/lifecycle.md): pause and resume, and
checkpoints."""

from __future__ import annotations

from collections.abc import Callable

from sandrun.models import Checkpoint, JobRecord
from sandrun.store import Store


class LifecycleCalls:
    """The lifecycle half of `Service`."""

    store: Store
    clock: Callable[[], float]
    get: Callable[[str, str | None], JobRecord]  # Service's: a job its viewer may see

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

    def checkpoints(self, job_id: str, viewer: str | None = None) -> list[Checkpoint]:
        """The checkpoints the job keeps, oldest first (its next attempt starts from the
        last)."""
        self.get(job_id, viewer)
        return self.store.checkpoints(job_id)
