"""What agents write about attempts: claim, start, lease renewal, logs, the end, hand-back
and loss. Every write is fenced by the attempt's token (see changes.py); a refused one
leaves a `stale_report` event. Part of `Store` (a mixin over the same database)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sandrun.errors import StaleAttempt
from sandrun.ids import new_token
from sandrun.models import AttemptResult, Capacity, Claim, JobRecord, LogChunk
from sandrun.spec.policy import Policy
from sandrun.states import (
    AttemptState,
    FailureReason,
    JobState,
    check_attempt_transition,
    check_job_transition,
)
from sandrun.store.changes import (
    LIVE,
    Decide,
    event,
    fenced,
    finish,
    must,
    must_attempt,
    repeated_report,
)
from sandrun.store.database import Database
from sandrun.store.queue import Claimer, PoolCache
from sandrun.store.rows import attempt_from, job_from

NO_POLICY = Policy()


class AttemptWrites:
    """The attempt-writing half of `Store`."""

    db: Database
    _pool: PoolCache

    def claim(
        self,
        node: str,
        free: Capacity,
        now: float,
        lease_seconds: float,
        policy: Policy = NO_POLICY,
    ) -> Claim | None:
        """Take the next pending job that fits `free` in the order and within the limits of
        `policy` (see queue.py): one row lock, a new attempt (fenced by a fresh token) and
        its event. Without limits each step commits alone (no round trips for BEGIN and
        COMMIT on a server database): the claim itself is one statement."""
        token = new_token()
        with self.db.transaction(autocommit=not policy.limited) as tx:
            row = Claimer(
                tx,
                node,
                free,
                policy,
                now=now,
                lease_seconds=lease_seconds,
                token=token,
                pool=self._pool,
            ).claim()
        if row is None:
            return None
        job = job_from(row)
        lease = now + lease_seconds
        return Claim(job=job, attempt=job.attempts, token=token, lease_expires_at=lease)

    def start_attempt(
        self,
        job_id: str,
        number: int,
        token: str,
        now: float,
        pid: int | None = None,
        pid_started_at: float | None = None,
        git_commit: str | None = None,
    ) -> None:
        with self._refusals_recorded(job_id, number, now), self.db.transaction() as tx:
            job, attempt = fenced(tx, job_id, number, token)
            check_attempt_transition(attempt.state, AttemptState.RUNNING)
            check_job_transition(job.state, JobState.RUNNING)
            tx.run(
                "start_attempt",
                job_id=job_id,
                number=number,
                now=now,
                pid=pid,
                pid_started_at=pid_started_at,
                git_commit=git_commit,
            )
            tx.run("mark_running", id=job_id, now=now)
            at = f" at commit {git_commit}" if git_commit else ""
            event(tx, job_id, number, "started", f"attempt {number} started{at}", now)

    def renew_leases(
        self, leases: list[tuple[str, int, str]], now: float, lease_seconds: float
    ) -> list[tuple[str, int]]:
        """Extend the given attempts' leases; return those that no longer hold their job."""
        stale = []
        with self.db.transaction() as tx:
            for job_id, number, token in leases:
                if not tx.run(
                    "renew_lease",
                    job_id=job_id,
                    number=number,
                    token=token,
                    lease_expires_at=now + lease_seconds,
                ):
                    stale.append((job_id, number))
        return stale

    def cancel_requested(self, node: str) -> list[tuple[str, int]]:
        """Live attempts on `node` whose job a user asked to cancel."""
        with self.db.transaction(write=False) as tx:
            return [(r["job_id"], r["number"]) for r in tx.all("cancel_requested", node=node)]

    def append_logs(
        self, job_id: str, number: int, token: str, chunks: list[LogChunk], now: float
    ) -> None:
        """Store log chunks; a chunk whose seq is already stored is skipped (retried upload)."""
        with self._refusals_recorded(job_id, number, now), self.db.transaction() as tx:
            fenced(tx, job_id, number, token)
            for chunk in chunks:
                tx.run(
                    "insert_log",
                    job_id=job_id,
                    attempt=number,
                    seq=chunk.seq,
                    stream=chunk.stream,
                    data=chunk.data,
                    at=chunk.at,
                )
            tx.notify("logs")

    def finish_attempt(
        self,
        job_id: str,
        number: int,
        token: str,
        result: AttemptResult,
        decide: Decide,
        now: float,
        worker_id: str | None = None,
    ) -> JobRecord:
        """End an attempt with its result; `decide` says whether the job retries or ends."""
        with self._refusals_recorded(job_id, number, now), self.db.transaction() as tx:
            try:
                job, attempt = fenced(tx, job_id, number, token)
            except StaleAttempt:
                if (repeat := repeated_report(tx, job_id, number, token, result)) is not None:
                    return repeat
                raise
            row = finish(tx, job, attempt, result, decide, now, worker_id)
            tx.notify("finished")
        return job_from(row)

    def hand_back(
        self, node: str, keys: list[tuple[str, int]], message: str, decide: Decide, now: float
    ) -> list[tuple[str, int]]:
        """End as node_lost the attempts of `keys` that `node` holds and never started,
        moving their jobs as `decide` says; return those ended (others are skipped)."""
        ended = []
        with self.db.transaction() as tx:
            for job_id, number in keys:
                job = job_from(must(tx, job_id, lock=True))
                row = tx.one("get_attempt", job_id=job_id, number=number)
                if row is None or job.attempts != number:
                    continue
                attempt = attempt_from(row)
                if attempt.node != node or attempt.state is not AttemptState.SCHEDULED:
                    continue
                result = AttemptResult(failure_reason=FailureReason.NODE_LOST, message=message)
                finish(tx, job, attempt, result, decide, now)
                ended.append((job_id, number))
            if ended:
                tx.notify("lost")
        return ended

    def lose_attempts(
        self, decide: Decide, now: float, node: str | None = None
    ) -> list[tuple[str, int]]:
        """End as node_lost every live attempt whose lease expired (or that runs on `node`)."""
        with self.db.transaction() as tx:
            rows = (
                tx.all("lock_node_attempts", node=node)
                if node is not None
                else tx.all("lock_expired_attempts", now=now)
            )
            lost = []
            for row in rows:
                # Re-read under the job's lock: the attempt may have ended or been renewed
                # since the scan's snapshot.
                job = job_from(must(tx, row["job_id"], lock=True))
                attempt = attempt_from(must_attempt(tx, row["job_id"], row["number"]))
                if attempt.state not in LIVE or (node is None and attempt.lease_expires_at >= now):
                    continue
                result = AttemptResult(
                    failure_reason=FailureReason.NODE_LOST,
                    message=f"node {row['node']} stopped reporting",
                )
                finish(tx, job, attempt, result, decide, now)
                lost.append((row["job_id"], row["number"]))
            if lost:
                tx.notify("lost")
        return lost

    @contextmanager
    def _refusals_recorded(self, job_id: str, number: int, now: float) -> Iterator[None]:
        """Keep an audit event of a refused (stale) report: its own transaction rolled back."""
        try:
            yield
        except StaleAttempt as exc:
            with self.db.transaction() as tx:
                event(tx, job_id, number, "stale_report", f"refused: {exc.message}", now)
            raise
