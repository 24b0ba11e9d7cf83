"""Retention: removing old terminal jobs' logs (or whole records), and agents long gone, in
bounded batches.

Each batch is its own short transaction, so a large clean-up never holds locks for long
and can be interrupted at any point without leaving anything half-removed.
"""

from __future__ import annotations

from collections.abc import Iterable

from sandrun.store.database import Database
from sandrun.store.transitions import event

DEFAULT_BATCH = 500


def remove_logs(db: Database, cutoff: float, now: float, batch: int = DEFAULT_BATCH) -> int:
    """Delete the logs of terminal jobs that finished before `cutoff`; return how many jobs."""
    after: tuple[float, str] = (0.0, "")
    removed = 0
    while True:
        with db.transaction() as tx:
            rows = tx.all(
                "logged_jobs_before",
                cutoff=cutoff,
                after_at=after[0],
                after_id=after[1],
                limit=batch,
            )
            for row in rows:
                tx.run("delete_logs", job_id=row["id"])
                event(tx, row["id"], None, "logs_removed", "logs removed by retention", now)
        removed += len(rows)
        if len(rows) < batch:
            return removed
        after = (rows[-1]["finished_at"], rows[-1]["id"])


def purge_jobs(db: Database, cutoff: float, batch: int = DEFAULT_BATCH) -> int:
    """Delete terminal jobs that finished before `cutoff`, with everything recorded about
    them (attempts, events, logs, output records); return how many."""
    purged = 0
    while True:
        with db.transaction() as tx:
            rows = tx.all("terminal_jobs_before", cutoff=cutoff, limit=batch)
            for row in rows:
                tx.run("delete_job", id=row["id"])
            if len(rows) < batch:  # the last batch: runs left with no job go too
                tx.run("delete_ended_pipelines", cutoff=cutoff, limit=batch)
        purged += len(rows)
        if len(rows) < batch:
            return purged


def remove_nodes(db: Database, cutoff: float, batch: int = DEFAULT_BATCH) -> int:
    """Forget agents last heard from before `cutoff` that have nothing running; return how
    many (a restarted agent registers anew, so stopped ones pile up)."""
    removed = 0
    while True:
        with db.transaction() as tx:
            count = tx.run("delete_stale_nodes", cutoff=cutoff, limit=batch)
        removed += count
        if count < batch:
            return removed


def unreferenced(db: Database, digests: Iterable[str]) -> list[str]:
    """The digests among `digests` that no job output or input refers to."""
    with db.transaction(write=False) as tx:
        return [d for d in digests if tx.one("digest_referenced", digest=d) is None]
