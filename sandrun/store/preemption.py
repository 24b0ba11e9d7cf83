"""Preemption's reads and its one write (docs/lifecycle.md): which pending job may preempt,
what runs below it, and the victims asked to make room on a node kept for it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sandrun.models import JobRecord
from sandrun.store.database import Database
from sandrun.store.rows import job_from
from sandrun.store.transitions import event

# A job is preempted at most this many times; then it runs to its end like any other.
MAX_PREEMPTIONS = 3
CANDIDATES = 10  # pending jobs a pass looks at: one that fits no node must not block the rest


@dataclass(frozen=True)
class Running:
    """A running attempt that a job of higher priority might stop."""

    job: JobRecord
    attempt: int
    node: str


class PreemptionStore:
    db: Database

    def preempt_candidates(self, now: float, waited_since: float) -> list[JobRecord]:
        """The pending jobs first in line that have waited since `waited_since`, unless a
        preemption is under way already (one at a time)."""
        with self.db.transaction(write=False) as tx:
            if tx.one("preemption_in_progress") is not None:
                return []
            rows = tx.all("preempt_candidates", now=now, since=waited_since, most=CANDIDATES)
        return [job_from(r) for r in rows]

    def running_below(self, priority: int) -> list[Running]:
        """Running attempts of preemptible jobs below `priority` (lowest priority, then
        newest first: the least work lost), preempted fewer than MAX_PREEMPTIONS times."""
        with self.db.transaction(write=False) as tx:
            rows = tx.all("preemptible_attempts", priority=priority, most=MAX_PREEMPTIONS)
        found = [Running(job_from(r), r["attempt_number"], r["attempt_node"]) for r in rows]
        return [r for r in found if r.job.spec.preemptible]

    def preempt(
        self, job: JobRecord, node: str, node_name: str, victims: Sequence[Running], now: float
    ) -> list[str]:
        """Ask `victims` on `node` to make room for `job` (each to checkpoint, then be
        stopped), and keep the node for `job`; the victims asked (those still running)."""
        asked = []
        with self.db.transaction() as tx:
            for victim in victims:
                if tx.run("request_preempt", id=victim.job.id, attempt=victim.attempt, now=now):
                    asked.append(victim.job.id)
                    grace = victim.job.spec.checkpoint.grace_seconds
                    said = (
                        f"preempted for job {job.id} (priority {job.priority}) on {node_name}: "
                        f"asked to checkpoint, stopped after {grace:g}s"
                    )
                    event(tx, victim.job.id, victim.attempt, "preempting", said, now)
            if asked:
                tx.run("reserve_for_preemption", job=job.id, node=node, now=now)
                said = f"{len(asked)} job(s) of lower priority on {node_name} make room for it"
                event(tx, job.id, None, "preempting", said, now, {"jobs": asked})
                tx.notify("control")
        return asked
