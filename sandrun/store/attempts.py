"""What agents write about attempts: claim, start, lease renewal, logs, the end, hand-back
and loss. Every write is fenced by the attempt's token (see changes.py); a refused one
leaves a `stale_report` event. Part of `Store` (a mixin over the same database)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from sandrun.errors import JobError, SandrunError, StaleAttempt, ValidationError
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
from sandrun.store import reputation
from sandrun.store.changes import (
    LIVE,
    Decide,
    fenced,
    finish,
    must_attempt,
    repeated_report,
)
from sandrun.store.database import Database, Tx, savepoint
from sandrun.store.lifecycle import Frozen, record_freezes
from sandrun.store.queue import Claimer, PoolCache
from sandrun.store.rows import attempt_from, job_from
from sandrun.store.transitions import event, must

NO_POLICY = Policy()
T = TypeVar("T")


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
        claim_key: str | None = None,
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
                claim_key=claim_key,
            ).claim()
        if row is None:
            return None
        job = job_from(row)
        lease = now + lease_seconds
        return Claim(job=job, attempt=job.attempts, token=token, lease_expires_at=lease)

    def claims_with_key(
        self, node: str, claim_key: str, now: float, lease_seconds: float
    ) -> list[Claim]:
        """The unstarted claims on `node` that a call with `claim_key` made: what a call
        sent again (its reply lost) is answered with, instead of new claims. Their leases
        start again now, as a new claim's would: the node learns of them only now."""
        with self.db.transaction() as tx:
            lease = now + lease_seconds
            key = {"node": node, "claim_key": claim_key}
            tx.run("renew_claims_with_key", lease_expires_at=lease, **key)
            rows = tx.all("claims_with_key", **key)
            return [
                Claim(
                    job=job_from(must(tx, r["job_id"])),
                    attempt=r["number"],
                    token=r["token"],
                    lease_expires_at=r["lease_expires_at"],
                )
                for r in rows
            ]

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
        start = Start(job_id, number, token, pid, pid_started_at, git_commit)
        with self._refusals_recorded(job_id, number, now), self.db.transaction() as tx:
            _start(tx, start, now)

    def heartbeats(self, beats: Sequence[Beat], now: float, lease_seconds: float) -> list[Seen]:
        """Many nodes' heartbeats in one transaction (the server gathers those that arrive
        together): each node's beat recorded, the leases it lists extended, and what it
        holds read back, in the order given."""
        with self.db.transaction() as tx:
            for state in sorted({b.state for b in beats}):
                ids = [b.node for b in beats if b.state == state]
                tx.run("nodes_heartbeat", ids=json.dumps(ids), state=state, now=now)
            for beat in beats:
                if beat.warm is not None:
                    tx.run("node_warm", id=beat.node, warm=beat.warm)
                record_freezes(tx, beat.node, beat.freezes, now)
            stale: dict[str, list[tuple[str, int]]] = {}
            for beat in beats:
                for job_id, number, token in beat.leases:
                    if not tx.run(
                        "renew_lease",
                        job_id=job_id,
                        number=number,
                        token=token,
                        lease_expires_at=now + lease_seconds,
                    ):
                        stale.setdefault(beat.node, []).append((job_id, number))
            nodes = json.dumps(sorted({b.node for b in beats}))
            live: dict[str, list[Held]] = {}
            for r in tx.all("nodes_live_attempts", ids=nodes):
                paused = r["job_state"] == "paused"
                held = Held(
                    r["job_id"],
                    r["number"],
                    r["state"],
                    bool(r["cancel_requested"]),
                    paused,
                    r["checkpoint_requested_at"],
                    r["preempt_requested_at"],
                )
                live.setdefault(r["node"], []).append(held)
        return [Seen(stale.get(b.node, []), live.get(b.node, [])) for b in beats]

    def append_logs(
        self, job_id: str, number: int, token: str, chunks: list[LogChunk], now: float
    ) -> None:
        """Store log chunks; a chunk whose seq is already stored is skipped (retried upload)."""
        with self._refusals_recorded(job_id, number, now), self.db.transaction() as tx:
            fenced(tx, job_id, number, token)
            _insert_logs(tx, job_id, number, chunks)

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
        end = End(job_id, number, token, result, worker_id)
        with self._refusals_recorded(job_id, number, now), self.db.transaction() as tx:
            return _finish(tx, end, decide, now)

    def report(
        self, starts: Sequence[Start], ends: Sequence[End], decide: Decide, now: float
    ) -> tuple[list[SandrunError | None], list[JobRecord | SandrunError]]:
        """Starts, then ends, in one transaction (a group commit). Each is taken or refused
        alone: a refusal (a stale attempt, say) is its outcome, the others still commit."""
        with self.db.transaction() as tx:
            started = [
                _alone(tx, s.job_id, s.number, now, partial(_start, tx, s, now)) for s in starts
            ]
            ended = [
                _alone(tx, e.job_id, e.number, now, partial(_finish, tx, e, decide, now))
                for e in ends
            ]
        return started, ended

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
                reputation.add(tx, reputation.node_keys(tx, attempt.node), now, lost=1)
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


@dataclass(frozen=True)
class Beat:
    """One node's heartbeat: its state and the leases (job, attempt, token) it holds."""

    node: str
    state: str
    leases: Sequence[tuple[str, int, str]]
    warm: str | None = None  # its warm workers (a JSON report), when they changed
    freezes: Sequence[Frozen] = ()  # attempts it froze or thawed since its last beat


@dataclass(frozen=True)
class Held:
    """A live attempt a node holds, as its heartbeat reads it back."""

    job_id: str
    number: int
    state: str  # scheduled | running
    cancel_requested: bool
    paused: bool = False  # its job is paused: the node keeps it frozen
    checkpoint_at: float | None = None  # when a checkpoint was last asked of it
    preempt_at: float | None = None  # when it was asked to make room (preempted)


@dataclass(frozen=True)
class Seen:
    """What one heartbeat learned: leases no longer held, and the node's live attempts."""

    stale: list[tuple[str, int]]
    live: list[Held]


@dataclass(frozen=True)
class Start:
    """An attempt's start, as its agent reports it."""

    job_id: str
    number: int
    token: str
    pid: int | None = None
    pid_started_at: float | None = None
    git_commit: str | None = None


@dataclass(frozen=True)
class End:
    """An attempt's end, as its agent reports it (`worker_id`: the key that signed it)."""

    job_id: str
    number: int
    token: str
    result: AttemptResult
    worker_id: str | None = None
    logs: Sequence[LogChunk] = ()  # its last output, stored with it


def _insert_logs(tx: Tx, job_id: str, number: int, chunks: Sequence[LogChunk]) -> None:
    """Store log chunks; a chunk whose seq is already stored is skipped (sent again)."""
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
    if chunks:
        tx.notify("logs")


def _start(tx: Tx, start: Start, now: float) -> None:
    job, attempt = fenced(tx, start.job_id, start.number, start.token)
    if attempt.state is AttemptState.RUNNING:
        return  # sent again (its reply was lost): taken once
    check_attempt_transition(attempt.state, AttemptState.RUNNING)
    check_job_transition(job.state, JobState.RUNNING)
    tx.run(
        "start_attempt",
        job_id=start.job_id,
        number=start.number,
        now=now,
        pid=start.pid,
        pid_started_at=start.pid_started_at,
        git_commit=start.git_commit,
    )
    tx.run("mark_running", id=start.job_id, now=now)
    at = f" at commit {start.git_commit}" if start.git_commit else ""
    event(tx, start.job_id, start.number, "started", f"attempt {start.number} started{at}", now)


def _finish(tx: Tx, end: End, decide: Decide, now: float) -> JobRecord:
    try:
        job, attempt = fenced(tx, end.job_id, end.number, end.token)
    except StaleAttempt:
        repeat = repeated_report(tx, end.job_id, end.number, end.token, end.result)
        if repeat is not None:
            return repeat
        raise
    _insert_logs(tx, end.job_id, end.number, end.logs)
    row = finish(tx, job, attempt, end.result, decide, now, end.worker_id)
    tx.notify("finished")
    return job_from(row)


def _alone(
    tx: Tx, job_id: str, number: int, now: float, write: Callable[[], T]
) -> T | SandrunError:
    """`write`'s value, or the error that refused it (its writes undone, an audit event of a
    stale report kept). A failing store is not a refusal: that raises, failing the batch."""
    try:
        with savepoint(tx):
            return write()
    except StaleAttempt as exc:
        event(tx, job_id, number, "stale_report", f"refused: {exc.message}", now)
        return exc
    except (JobError, ValidationError) as exc:
        return exc
