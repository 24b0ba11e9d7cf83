"""State changes inside an open transaction: fencing, ending attempts, events.

The Store opens the transaction; these run in it, so a change and its event row commit
together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable

from sandrun.errors import StaleAttempt
from sandrun.models import Attempt, AttemptResult, JobRecord
from sandrun.states import AttemptState, FailureReason, JobState, check_attempt_transition
from sandrun.store import reputation
from sandrun.store.database import Row, Tx
from sandrun.store.deps import end_job
from sandrun.store.lifecycle import keep_checkpoint
from sandrun.store.rows import attempt_from, job_from
from sandrun.store.transitions import Decision, event, must

LIVE = (AttemptState.SCHEDULED, AttemptState.RUNNING)


Decide = Callable[[JobRecord, AttemptState, AttemptResult, float], Decision]


def must_attempt(tx: Tx, job_id: str, number: int) -> Row:
    row = tx.one("get_attempt", job_id=job_id, number=number)
    if row is None:
        raise StaleAttempt(f"job {job_id} has no attempt {number}", field="attempt")
    return row


def fenced(tx: Tx, job_id: str, number: int, token: str) -> tuple[JobRecord, Attempt]:
    """The job and attempt, if this attempt (and token) still holds the job; else refuse."""
    job = job_from(must(tx, job_id, lock=True))
    row = must_attempt(tx, job_id, number)
    attempt = attempt_from(row)
    if row["token"] != token or attempt.state not in LIVE or job.attempts != number:
        raise StaleAttempt(
            f"attempt {number} of job {job_id} no longer holds the job (it is {attempt.state})",
            field="attempt",
        )
    return job, attempt


def reason_of(result: AttemptResult) -> FailureReason | None:
    """Why an attempt failed (None: it completed); a bare non-zero exit is `exit_code`."""
    if result.failure_reason is None and result.exit_code not in (0, None):
        return FailureReason.EXIT_CODE
    if result.failure_reason is FailureReason.CHECKPOINTED and result.checkpoint is None:
        return FailureReason.EXIT_CODE  # said it saved, and brought nothing: just its exit
    return result.failure_reason


def repeated_report(
    tx: Tx, job_id: str, number: int, token: str, result: AttemptResult
) -> JobRecord | None:
    """The job, if `result` repeats the report that already ended this attempt: an agent
    whose reply was lost (a server killed after the commit) sends its result again."""
    row = tx.one("get_attempt", job_id=job_id, number=number)
    if row is None or row["token"] != token:
        return None
    attempt = attempt_from(row)
    ended_by_server = attempt.state in LIVE or attempt.state is AttemptState.LOST
    same = (attempt.exit_code, attempt.failure_reason, attempt.signature) == (
        result.exit_code,
        reason_of(result),
        result.signature,
    )
    return job_from(must(tx, job_id)) if same and not ended_by_server else None


# The attempt state each way of ending gives (any other reason: failed).
_ENDED_AS: dict[FailureReason | None, AttemptState] = {
    None: AttemptState.COMPLETED,
    FailureReason.CANCELLED: AttemptState.CANCELLED,
    FailureReason.NODE_LOST: AttemptState.LOST,
    FailureReason.CHECKPOINTED: AttemptState.CHECKPOINTED,
    FailureReason.PREEMPTED: AttemptState.PREEMPTED,
}


def finish(
    tx: Tx,
    job: JobRecord,
    attempt: Attempt,
    result: AttemptResult,
    decide: Decide,
    now: float,
    worker_id: str | None = None,
) -> Row:
    """End `attempt` with `result` and move the job as `decide` says; returns its row.
    `worker_id` is the key the result's signature was verified with."""
    reason = reason_of(result)
    state = _ENDED_AS.get(reason, AttemptState.FAILED)
    result = result.model_copy(update={"failure_reason": reason})
    check_attempt_transition(attempt.state, state)
    _store_result(tx, job.id, attempt.number, state, result, now, worker_id)
    if reason is FailureReason.CHECKPOINTED and result.checkpoint is not None:
        keep_checkpoint(tx, job, attempt.number, result.checkpoint, now)
    if reason is FailureReason.TIMEOUT:  # the node's record counts it (docs/pool.md)
        reputation.add(tx, reputation.node_keys(tx, attempt.node), now, timeouts=1)
    what = f"exit code {result.exit_code}" if result.exit_code is not None else str(reason)
    detail = f": {result.message}" if result.message else ""
    event(
        tx,
        job.id,
        attempt.number,
        f"attempt_{state}",
        f"attempt {attempt.number} {state} ({what}){detail}",
        now,
        {"exit_code": result.exit_code},
    )
    # Only the job's own patterns: an agent's text does not reach the job's events.
    unmatched = [p for p in job.spec.outputs if p in result.unmatched_outputs]
    if unmatched:
        listed = ", ".join(repr(p) for p in unmatched)
        what = "pattern" if len(unmatched) == 1 else "patterns"
        message = f"attempt {attempt.number}: no file matched output {what} {listed}"
        data = {"patterns": unmatched}
        event(tx, job.id, attempt.number, "outputs_unmatched", message, now, data)
    decision = decide(job, state, result, now)
    if decision.state is JobState.PENDING:
        event(
            tx,
            job.id,
            attempt.number,
            "retrying",
            decision.message or "retrying",
            now,
            {"not_before": decision.not_before},
        )
    return end_job(tx, job, decision, now, result)


def _store_result(
    tx: Tx,
    job_id: str,
    number: int,
    state: AttemptState,
    result: AttemptResult,
    now: float,
    worker_id: str | None,
) -> None:
    """The attempt's row as it ended, and its outputs."""
    reason = result.failure_reason
    usage = result.usage
    tx.run(
        "finish_attempt",
        job_id=job_id,
        number=number,
        state=state.value,
        exit_code=result.exit_code,
        failure_reason=reason.value if reason else None,
        message=result.message,
        wall_seconds=usage.wall_seconds,
        cpu_seconds=usage.cpu_seconds,
        max_rss_mb=usage.max_rss_mb,
        cpus=usage.cpus,
        memory_mb=usage.memory_mb,
        gpus=usage.gpus,
        gpu_model=usage.gpu_model,
        stdout_sha256=result.stdout_sha256,
        meter_signature=result.meter_signature,
        now=now,
        worker_id=worker_id if result.signature else None,
        signature=result.signature,
    )
    for out in result.outputs:
        tx.run(
            "insert_output",
            job_id=job_id,
            attempt=number,
            path=out.path,
            digest=out.digest,
            size=out.size,
        )
