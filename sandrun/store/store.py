"""The Store: durable jobs, the queue rules and every state change, over a `Database`.

Each public method is one transaction. State changes are checked against the one
transition table (sandrun.states) and append an event row in the same transaction.
Agent writes are fenced: they name the job, the attempt number and the attempt's token,
and are refused unless that attempt still holds the job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sandrun.errors import IllegalTransition, JobNotFound, SchemaTooNew, StaleAttempt
from sandrun.ids import new_token
from sandrun.models import (
    Attempt,
    AttemptResult,
    Capacity,
    Claim,
    Event,
    JobRecord,
    LogChunk,
    NodeInfo,
    OutputFile,
    Principal,
    Role,
    Usage,
)
from sandrun.spec import JobSpec
from sandrun.states import (
    AttemptState,
    FailureReason,
    JobState,
    check_attempt_transition,
    check_job_transition,
)
from sandrun.store.database import Database, Row, Tx, load_migrations

LIVE = (AttemptState.SCHEDULED, AttemptState.RUNNING)


@dataclass(frozen=True)
class Decision:
    """What becomes of a job when an attempt ends (made by the service's retry policy)."""

    state: JobState  # PENDING for a retry, else a terminal state
    not_before: float = 0.0
    retries_used: int = 0
    infra_retries: int = 0
    message: str | None = None


Decide = Callable[[JobRecord, AttemptState, AttemptResult, float], Decision]


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- schema -----------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply the migrations this version knows; refuse a newer schema. Returns version."""
        migrations = load_migrations(self.db.dialect)
        known = migrations[-1].version if migrations else 0
        current = self.db.schema_version()
        if current > known:
            raise SchemaTooNew(
                f"the database schema is version {current}, this sandrun knows up to {known}",
                suggestions=["upgrade sandrun"],
            )
        for migration in migrations:
            if migration.version > current:
                self.db.apply_migration(migration.version, migration.sql)
        return known

    def close(self) -> None:
        self.db.close()

    # --- jobs -------------------------------------------------------------------------

    def insert_job(self, job: JobRecord) -> None:
        spec = job.spec
        with self.db.transaction() as tx:
            tx.run(
                "insert_job",
                id=job.id,
                name=job.name,
                owner=job.owner,
                state=job.state.value,
                spec=json.dumps(spec.to_json_dict()),
                labels=json.dumps(spec.labels),
                priority=job.priority,
                cpus=spec.cpus,
                memory_mb=spec.memory or 0,
                gpu_count=spec.gpus.count if spec.gpus else 0,
                not_before=job.not_before,
                created_at=job.created_at,
            )
            _event(tx, job.id, None, "submitted", f"submitted as {job.name}", job.created_at)

    def get_job(self, job_id: str) -> JobRecord:
        with self.db.transaction(write=False) as tx:
            return _job(_must(tx, job_id))

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        owner: str | None = None,
        name: str | None = None,
        label: tuple[str, str] | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[JobRecord]:
        with self.db.transaction(write=False) as tx:
            rows = tx.all(
                "list_jobs",
                state=state.value if state else None,
                owner=owner,
                name=name,
                label_key=label[0] if label else None,
                label_value=label[1] if label else None,
                before_created=before[0] if before else None,
                before_id=before[1] if before else None,
                limit=limit,
            )
        return [_job(r) for r in rows]

    def request_cancel(self, job_id: str, now: float) -> JobRecord:
        """Cancel a pending job at once; flag a scheduled or running one for its agent."""
        with self.db.transaction() as tx:
            job = _job(_must(tx, job_id))
            if job.state.is_terminal:
                raise IllegalTransition(
                    f"job {job_id} already {job.state}; there is nothing to cancel",
                    field="job_id",
                )
            if job.state is JobState.PENDING:
                _set_state(tx, job, Decision(JobState.CANCELLED, message="cancelled"), now)
                tx.run("request_cancel", id=job_id, now=now)
            elif not job.cancel_requested:
                tx.run("request_cancel", id=job_id, now=now)
                _event(tx, job_id, job.attempts, "cancel_requested", "cancel requested", now)
            return _job(_must(tx, job_id))

    def next_not_before(self) -> float | None:
        """When the earliest pending job becomes eligible (for an agent's wake-up)."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("next_not_before")
        return float(row["at"]) if row and row["at"] is not None else None

    # --- attempts (the agent's side) --------------------------------------------------

    def claim(self, node: str, free: Capacity, now: float, lease_seconds: float) -> Claim | None:
        """Take the best pending job that fits `free`: one row lock, one new attempt."""
        with self.db.transaction() as tx:
            row = tx.one(
                "claim_candidate", now=now, cpus=free.cpus, memory_mb=free.memory_mb, gpus=free.gpus
            )
            if row is None or not tx.run("mark_scheduled", id=row["id"], now=now):
                return None
            number = row["attempts"] + 1
            token = new_token()
            lease = now + lease_seconds
            tx.run(
                "insert_attempt",
                job_id=row["id"],
                number=number,
                node=node,
                token=token,
                lease_expires_at=lease,
                now=now,
            )
            _event(tx, row["id"], number, "scheduled", f"attempt {number} on {node}", now)
            job = _job(_must(tx, row["id"]))
        return Claim(job=job, attempt=number, token=token, lease_expires_at=lease)

    def start_attempt(
        self,
        job_id: str,
        number: int,
        token: str,
        now: float,
        pid: int | None = None,
        pid_started_at: float | None = None,
    ) -> None:
        with self._refusals_recorded(job_id, number, now), self.db.transaction() as tx:
            job, attempt = _fenced(tx, job_id, number, token)
            check_attempt_transition(attempt.state, AttemptState.RUNNING)
            check_job_transition(job.state, JobState.RUNNING)
            tx.run(
                "start_attempt",
                job_id=job_id,
                number=number,
                now=now,
                pid=pid,
                pid_started_at=pid_started_at,
            )
            tx.run("mark_running", id=job_id, now=now)
            _event(tx, job_id, number, "started", f"attempt {number} started", now)

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
            _fenced(tx, job_id, number, token)
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

    def finish_attempt(
        self,
        job_id: str,
        number: int,
        token: str,
        result: AttemptResult,
        decide: Decide,
        now: float,
    ) -> JobRecord:
        """End an attempt with its result; `decide` says whether the job retries or ends."""
        with self._refusals_recorded(job_id, number, now), self.db.transaction() as tx:
            job, attempt = _fenced(tx, job_id, number, token)
            _finish(tx, job, attempt, result, decide, now)
            return _job(_must(tx, job_id))

    def lose_attempts(
        self, decide: Decide, now: float, node: str | None = None
    ) -> list[tuple[str, int]]:
        """End as node_lost every live attempt whose lease expired (or that runs on `node`)."""
        with self.db.transaction() as tx:
            rows = (
                tx.all("node_attempts", node=node)
                if node is not None
                else tx.all("expired_attempts", now=now)
            )
            lost = []
            for row in rows:
                job = _job(_must(tx, row["job_id"]))
                attempt = _attempt(row)
                result = AttemptResult(
                    failure_reason=FailureReason.NODE_LOST,
                    message=f"node {row['node']} stopped reporting",
                )
                _finish(tx, job, attempt, result, decide, now)
                lost.append((row["job_id"], row["number"]))
        return lost

    @contextmanager
    def _refusals_recorded(self, job_id: str, number: int, now: float) -> Iterator[None]:
        """Keep an audit event of a refused (stale) report: its own transaction rolled back."""
        try:
            yield
        except StaleAttempt as exc:
            with self.db.transaction() as tx:
                _event(tx, job_id, number, "stale_report", f"refused: {exc.message}", now)
            raise

    # --- reading ----------------------------------------------------------------------

    def attempts(self, job_id: str) -> list[Attempt]:
        with self.db.transaction(write=False) as tx:
            _must(tx, job_id)
            return [_attempt(r) for r in tx.all("list_attempts", job_id=job_id)]

    def live_attempts(self, node: str) -> list[Attempt]:
        with self.db.transaction(write=False) as tx:
            return [_attempt(r) for r in tx.all("node_attempts", node=node)]

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        with self.db.transaction(write=False) as tx:
            _must(tx, job_id)
            rows = tx.all("read_events", job_id=job_id, after=after, limit=limit)
        return [Event.model_validate({**r, "data": json.loads(r["data"])}) for r in rows]

    def logs(
        self,
        job_id: str,
        *,
        attempt: int | None = None,
        after: tuple[int, int] = (0, 0),
        limit: int = 1000,
    ) -> list[LogChunk]:
        with self.db.transaction(write=False) as tx:
            _must(tx, job_id)
            rows = tx.all(
                "read_logs",
                job_id=job_id,
                attempt=attempt,
                after_attempt=after[0],
                after_seq=after[1],
                limit=limit,
            )
        return [LogChunk.model_validate(r) for r in rows]

    def outputs(self, job_id: str, attempt: int | None = None) -> list[OutputFile]:
        with self.db.transaction(write=False) as tx:
            _must(tx, job_id)
            rows = tx.all("list_outputs", job_id=job_id, attempt=attempt)
        return [OutputFile.model_validate(r) for r in rows]

    # --- nodes ------------------------------------------------------------------------

    def register_node(
        self,
        node_id: str,
        name: str,
        capacity: Capacity,
        labels: dict[str, str],
        now: float,
    ) -> None:
        with self.db.transaction() as tx:
            tx.run(
                "upsert_node",
                id=node_id,
                name=name,
                labels=json.dumps(labels),
                capacity=capacity.model_dump_json(),
                now=now,
            )

    def node_heartbeat(self, node_id: str, state: str, now: float) -> None:
        with self.db.transaction() as tx:
            tx.run("node_heartbeat", id=node_id, state=state, now=now)

    def node_heartbeat_at(self, node_id: str) -> float:
        """When `node_id` last heartbeated; 0 for a node never registered."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("node_heartbeat_at", id=node_id)
        return float(row["heartbeat_at"]) if row else 0.0

    def nodes(self) -> list[NodeInfo]:
        with self.db.transaction(write=False) as tx:
            rows = tx.all("list_nodes")
        return [
            NodeInfo.model_validate(
                {**r, "labels": json.loads(r["labels"]), "capacity": json.loads(r["capacity"])}
            )
            for r in rows
        ]

    def extend_live_leases(self, until: float) -> None:
        """Give every live attempt's agent until `until` to report (after a server restart)."""
        with self.db.transaction() as tx:
            tx.run("extend_live_leases", until=until)

    # --- tokens -----------------------------------------------------------------------

    def insert_token(self, token_id: str, name: str, role: Role, digest: str, now: float) -> None:
        with self.db.transaction() as tx:
            tx.run("insert_token", id=token_id, name=name, role=role.value, hash=digest, now=now)

    def principal_by_hash(self, digest: str) -> Principal | None:
        with self.db.transaction(write=False) as tx:
            row = tx.one("token_by_hash", hash=digest)
        return Principal(name=row["name"], role=Role(row["role"])) if row else None


# --- helpers: each runs inside the caller's transaction ----------------------------------


def _must(tx: Tx, job_id: str) -> Row:
    row = tx.one("get_job", id=job_id)
    if row is None:
        raise JobNotFound(f"no job has id {job_id!r}", field="job_id")
    return row


def _must_attempt(tx: Tx, job_id: str, number: int) -> Row:
    row = tx.one("get_attempt", job_id=job_id, number=number)
    if row is None:
        raise StaleAttempt(f"job {job_id} has no attempt {number}", field="attempt")
    return row


def _fenced(tx: Tx, job_id: str, number: int, token: str) -> tuple[JobRecord, Attempt]:
    """The job and attempt, if this attempt (and token) still holds the job; else refuse."""
    job = _job(_must(tx, job_id))
    row = _must_attempt(tx, job_id, number)
    attempt = _attempt(row)
    if row["token"] != token or attempt.state not in LIVE or job.attempts != number:
        raise StaleAttempt(
            f"attempt {number} of job {job_id} no longer holds the job (it is {attempt.state})",
            field="attempt",
        )
    return job, attempt


def _finish(
    tx: Tx, job: JobRecord, attempt: Attempt, result: AttemptResult, decide: Decide, now: float
) -> None:
    reason = result.failure_reason
    if reason is None and result.exit_code not in (0, None):
        reason = FailureReason.EXIT_CODE
    if reason is None:
        state = AttemptState.COMPLETED
    elif reason is FailureReason.CANCELLED:
        state = AttemptState.CANCELLED
    elif reason is FailureReason.NODE_LOST:
        state = AttemptState.LOST
    else:
        state = AttemptState.FAILED
    result = result.model_copy(update={"failure_reason": reason})
    check_attempt_transition(attempt.state, state)
    usage = result.usage
    tx.run(
        "finish_attempt",
        job_id=job.id,
        number=attempt.number,
        state=state.value,
        exit_code=result.exit_code,
        failure_reason=reason.value if reason else None,
        message=result.message,
        wall_seconds=usage.wall_seconds,
        cpu_seconds=usage.cpu_seconds,
        max_rss_mb=usage.max_rss_mb,
        now=now,
    )
    for out in result.outputs:
        tx.run(
            "insert_output",
            job_id=job.id,
            attempt=attempt.number,
            path=out.path,
            digest=out.digest,
            size=out.size,
        )
    what = f"exit code {result.exit_code}" if result.exit_code is not None else str(reason)
    detail = f": {result.message}" if result.message else ""
    _event(
        tx,
        job.id,
        attempt.number,
        f"attempt_{state}",
        f"attempt {attempt.number} {state} ({what}){detail}",
        now,
        {"exit_code": result.exit_code},
    )
    decision = decide(job, state, result, now)
    if decision.state is JobState.PENDING:
        _event(
            tx,
            job.id,
            attempt.number,
            "retrying",
            decision.message or "retrying",
            now,
            {"not_before": decision.not_before},
        )
    _set_state(tx, job, decision, now, result)


def _set_state(
    tx: Tx, job: JobRecord, decision: Decision, now: float, result: AttemptResult | None = None
) -> None:
    check_job_transition(job.state, decision.state)
    terminal = decision.state.is_terminal
    tx.run(
        "set_job_state",
        id=job.id,
        state=decision.state.value,
        exit_code=result.exit_code if result and terminal else None,
        failure_reason=(
            result.failure_reason.value
            if result and result.failure_reason and terminal
            else (FailureReason.CANCELLED.value if decision.state is JobState.CANCELLED else None)
        ),
        message=decision.message if terminal else None,
        now=now,
        finished_at=now if terminal else None,
        not_before=decision.not_before if decision.state is JobState.PENDING else job.not_before,
        retries_used=decision.retries_used,
        infra_retries=decision.infra_retries,
    )
    if terminal:
        _event(tx, job.id, None, str(decision.state), decision.message or str(decision.state), now)


def _event(
    tx: Tx,
    job_id: str,
    attempt: int | None,
    kind: str,
    message: str,
    at: float,
    data: dict[str, Any] | None = None,
) -> None:
    tx.run(
        "insert_event",
        job_id=job_id,
        attempt=attempt,
        kind=kind,
        message=message,
        data=json.dumps(data or {}),
        at=at,
    )


def _job(row: Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        name=row["name"],
        owner=row["owner"],
        state=JobState(row["state"]),
        spec=JobSpec.model_validate_json(row["spec"]),
        priority=row["priority"],
        attempts=row["attempts"],
        exit_code=row["exit_code"],
        failure_reason=row["failure_reason"],
        message=row["message"],
        cancel_requested=bool(row["cancel_requested"]),
        not_before=row["not_before"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        retries_used=row["retries_used"],
        infra_retries=row["infra_retries"],
    )


def _attempt(row: Row) -> Attempt:
    return Attempt(
        job_id=row["job_id"],
        number=row["number"],
        state=AttemptState(row["state"]),
        node=row["node"],
        lease_expires_at=row["lease_expires_at"],
        pid=row["pid"],
        pid_started_at=row["pid_started_at"],
        scheduled_at=row["scheduled_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        exit_code=row["exit_code"],
        failure_reason=row["failure_reason"],
        message=row["message"],
        usage=Usage(
            wall_seconds=row["wall_seconds"],
            cpu_seconds=row["cpu_seconds"],
            max_rss_mb=row["max_rss_mb"],
        ),
    )
