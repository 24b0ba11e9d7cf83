"""Dependencies between jobs, inside the transaction that ends a job.

When a job ends, each job waiting on it learns so in the same transaction: an edge whose
condition can no longer hold ends the waiter (`skipped`, or `failed` for a fan-out whose
item failed); else its count of dependencies left drops, and at zero it is released
(queued, or for a pipeline step, made by `store/steps.py`). Counts change by row updates
under the waiter's row lock, so two servers ending its last two dependencies at once
release it exactly once. Ends that follow from ends (a skip that skips the next step)
are worked through a queue in the same transaction, not by recursion; the same queue
judges a replica's end (`store/replicas.py`) and settles a priced job's escrow
(`store/ledger.py`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from sandrun.models import AttemptResult, JobRecord
from sandrun.pipeline.decide import holds
from sandrun.states import FailureReason, JobState
from sandrun.store import ledger, replicas, steps
from sandrun.store.database import Row, Tx
from sandrun.store.rows import job_from
from sandrun.store.transitions import Decision, add_edge, event, must, set_state


def end_job(
    tx: Tx, job: JobRecord, decision: Decision, now: float, result: AttemptResult | None = None
) -> Row:
    """Move `job` as `decision` says; if it ended, settle what waits on it."""
    row = set_state(tx, job, decision, now, result)
    # Most jobs are neither waited for, a step, a replica nor priced: nothing to settle.
    if decision.state.is_terminal and (
        row["waited_on"]
        or row["pipeline_id"] is not None
        or row["replica_of"] is not None
        or row["replicas"] is not None
        or row["held"]
    ):
        settle(tx, now, ended=[job_from(row)])
    return row


def cancel_job(tx: Tx, job: JobRecord, now: float) -> None:
    """Cancel an unfinished job: one not started ends at once (its waiters learn it), one
    scheduled or running is flagged for its agent."""
    if job.state in (JobState.PENDING, JobState.WAITING):
        end_job(tx, job, Decision(JobState.CANCELLED, message="cancelled"), now)
        tx.run("request_cancel", id=job.id, now=now)
    elif not job.cancel_requested:
        tx.run("request_cancel", id=job.id, now=now)
        event(tx, job.id, job.attempts, "cancel_requested", "cancel requested", now)
    tx.notify("cancel")


def add_dependencies(tx: Tx, job: JobRecord, deps: Sequence[tuple[str, str]], now: float) -> None:
    """Record a new waiting job's `after` edges. A dependency's row is locked before its
    state is read, so one ending at this moment either sees the edge or is seen ended."""
    unique = dict(deps)  # one edge per dependency: the last condition given
    tx.run("set_deps_left", id=job.id, deps_left=len(unique))
    listed = ", ".join(f"{d}:{c}" for d, c in list(unique.items())[:5])
    more = f" and {len(unique) - 5} more" if len(unique) > 5 else ""
    data = {"after": [f"{d}:{c}" for d, c in unique.items()]}
    event(tx, job.id, None, "waiting", f"waiting for {listed}{more}", now, data)
    done = []
    for dep_id, condition in sorted(unique.items()):  # rows locked in one order: no deadlock
        dep = job_from(must(tx, dep_id, lock=True))
        add_edge(tx, job.id, dep_id, condition)
        if dep.is_terminal:
            done.append((dep, condition))
    ended: deque[JobRecord] = deque()
    ready: deque[JobRecord] = deque()
    for dep, condition in done:
        _edge(tx, job.id, dep, condition, ended, ready, now)
    _work(tx, now, ended, ready)


def settle(
    tx: Tx, now: float, ended: Iterable[JobRecord] = (), ready: Iterable[JobRecord] = ()
) -> None:
    """Work through jobs that `ended` (their waiters learn it) and waiters now `ready`."""
    _work(tx, now, deque(ended), deque(ready))


def _work(tx: Tx, now: float, ended: deque[JobRecord], ready: deque[JobRecord]) -> None:
    while ended or ready:
        if ended:
            job = ended.popleft()
            if job.replica_of is not None:
                ended.extend(replicas.replica_ended(tx, job, now))
            elif job.spec.consensus is not None and job.state is JobState.CANCELLED:
                ended.extend(replicas.stop(tx, job.id, now))  # (a verdict stops its own)
            if job.held:
                ledger.close(tx, job, now)
            if job.pipeline_id is not None:
                steps.step_ended(tx, job, now)
            if not job.waited_on:  # most jobs: no query for waiters they do not have
                continue
            for edge in tx.all("dependents", dep_id=job.id):
                _edge(tx, edge["job_id"], job, edge["condition"], ended, ready, now)
        else:
            job = job_from(must(tx, ready.popleft().id, lock=True))
            if job.state is not JobState.WAITING:
                continue
            if job.pipeline_id is None:
                ended.extend(steps.release_job(tx, job, now))
                continue
            now_ended, now_ready = steps.release(tx, job, now)
            ended.extend(now_ended)
            ready.extend(now_ready)


def _edge(
    tx: Tx,
    waiter_id: str,
    dep: JobRecord,
    condition: str,
    ended: deque[JobRecord],
    ready: deque[JobRecord],
    now: float,
) -> None:
    """`dep` ended: tell the job waiting on it through an edge of `condition`."""
    waiter = job_from(must(tx, waiter_id, lock=True))
    if waiter.state is not JobState.WAITING:
        return
    if not holds(condition, dep.state):
        ended.extend(_unmet(tx, waiter, dep, condition, now))
        return
    row = tx.one("dependency_ended", id=waiter.id, now=now)
    if row is not None and row["deps_left"] <= 0:
        ready.append(waiter)


def _unmet(
    tx: Tx, waiter: JobRecord, dep: JobRecord, condition: str, now: float
) -> list[JobRecord]:
    """End a waiter whose edge's condition failed; returns the jobs this ended."""
    if dep.item is not None and dep.pipeline_id == waiter.pipeline_id and waiter.item is None:
        # A fan-out's item failed under `on_item_failure: fail`: the fan-out fails, and
        # its other items stop (or, cancelled with its pipeline, is cancelled too).
        if steps.cancelled(tx, waiter):
            decision = Decision(JobState.CANCELLED, message="cancelled with its pipeline")
            return [job_from(set_state(tx, waiter, decision, now))]
        message = f"item {dep.item} {dep.state}: {dep.message or dep.state}"
        result = AttemptResult(failure_reason=FailureReason.ITEMS_FAILED)
        row = set_state(tx, waiter, Decision(JobState.FAILED, message=message), now, result)
        return [job_from(row), *steps.stop_items(tx, waiter, now)]
    message = f"it needed job {dep.id} ({dep.name}) to end {_said(condition)}; it {dep.state}"
    return [job_from(set_state(tx, waiter, Decision(JobState.SKIPPED, message=message), now))]


def _said(condition: str) -> str:
    return {"ok": "completed", "failed": "failed"}.get(condition, "in any state")
