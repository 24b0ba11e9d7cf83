"""The two writes every state change makes, inside an open transaction: the job's row
moved as the one transition table allows, and its event row."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sandrun.errors import JobNotFoundError
from sandrun.models import AttemptResult, JobRecord
from sandrun.states import FailureReason, JobState, check_job_transition
from sandrun.store.database import Row, Tx


@dataclass(frozen=True)
class Decision:
    """What becomes of a job when an attempt ends (made by the service's retry policy)."""

    state: JobState  # PENDING for a retry, else a terminal state
    not_before: float = 0.0
    retries_used: int = 0
    infra_retries: int = 0
    message: str | None = None
    result: Any = None  # the job's declared result (spec.result), read by the service


def must(tx: Tx, job_id: str, lock: bool = False) -> Row:
    """The job's row; `lock` holds it until the transaction ends (PostgreSQL row lock)."""
    row = tx.one("lock_job" if lock else "get_job", id=job_id)
    if row is None:
        raise JobNotFoundError(f"no job has id {job_id!r}", field="job_id")
    return row


def set_state(
    tx: Tx, job: JobRecord, decision: Decision, now: float, result: AttemptResult | None = None
) -> Row:
    """Move the job to `decision.state`; returns its updated row."""
    check_job_transition(job.state, decision.state)
    terminal = decision.state.is_terminal
    row = tx.one(
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
        result=json.dumps(decision.result) if decision.result is not None else None,
    )
    if row is None:
        raise JobNotFoundError(f"no job has id {job.id!r}", field="job_id")
    if terminal:
        event(tx, job.id, None, str(decision.state), decision.message or str(decision.state), now)
    return row


def add_edge(tx: Tx, waiter: str, dep: str, condition: str) -> None:
    """`waiter` waits for `dep` (`store/deps.py`); `dep` is marked, so that its end looks
    for its waiters (most jobs have none, and their ends skip that query)."""
    tx.run("insert_dependency", job_id=waiter, dep_id=dep, condition=condition)
    tx.run("mark_waited_on", id=dep)


def event(
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
