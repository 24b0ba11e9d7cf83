"""The retry policy, as a pure function: what becomes of a job when an attempt ends."""

from __future__ import annotations

from sandrun.models import AttemptResult, JobRecord
from sandrun.spec import RetryOn
from sandrun.spec.units import format_duration
from sandrun.states import AttemptState, FailureReason, JobState
from sandrun.store import Decision

# Infrastructure faults (a lost node, a sandbox error) are retried without using up the
# job's own retries, up to this many times, so a job that kills its node cannot loop.
MAX_INFRA_RETRIES = 3

_RESUMED = {
    FailureReason.CHECKPOINTED: "checkpointed; queued again to resume from its checkpoint",
    FailureReason.PREEMPTED: "preempted; queued again (from its checkpoint, if it saved one)",
}

_RETRY_ON = {
    FailureReason.EXIT_CODE: RetryOn.EXIT_CODE,
    FailureReason.SIGNALED: RetryOn.EXIT_CODE,
    FailureReason.TIMEOUT: RetryOn.TIMEOUT,
    FailureReason.OOM: RetryOn.OOM,
}


def describe(result: AttemptResult, timeout: float | None) -> str:
    """A one-line account of why an attempt failed."""
    reason = result.failure_reason
    if reason is FailureReason.TIMEOUT and timeout is not None:
        text = f"timed out after {format_duration(timeout)}"
    elif reason is FailureReason.EXIT_CODE:
        text = f"exited with code {result.exit_code}"
    else:
        text = str(reason).replace("_", " ")
    if result.message and reason is not FailureReason.EXIT_CODE:
        text += f": {result.message}"
    return text


def decide(
    job: JobRecord, attempt_state: AttemptState, result: AttemptResult, now: float
) -> Decision:
    kept = {"retries_used": job.retries_used, "infra_retries": job.infra_retries}
    if attempt_state is AttemptState.COMPLETED:
        return Decision(JobState.COMPLETED, message="completed", **kept)
    reason = result.failure_reason
    if job.cancel_requested or reason is FailureReason.CANCELLED:
        return Decision(JobState.CANCELLED, message="cancelled", **kept)
    if reason in _RESUMED:  # asked to be resumed, or stopped to make room: nothing to count
        return Decision(JobState.PENDING, not_before=now, message=_RESUMED[reason], **kept)
    policy = job.spec.retries
    why = describe(result, job.spec.timeout)

    if reason in (FailureReason.NODE_LOST, FailureReason.INTERNAL):
        allowed = reason is FailureReason.INTERNAL or RetryOn.NODE_LOST in policy.on
        if allowed and job.infra_retries < MAX_INFRA_RETRIES:
            return Decision(
                JobState.PENDING,
                not_before=now,
                retries_used=job.retries_used,
                infra_retries=job.infra_retries + 1,
                message=f"{why}; retrying (not counted against the job's retries)",
            )
        return Decision(JobState.FAILED, message=why, **kept)

    retry_on = _RETRY_ON.get(reason) if reason else None
    excluded = reason is FailureReason.EXIT_CODE and result.exit_code in policy.no_retry_exit_codes
    if retry_on in policy.on and not excluded and job.retries_used < policy.limit:
        number = job.retries_used + 1
        delay = policy.delay(number)
        return Decision(
            JobState.PENDING,
            not_before=now + delay,
            retries_used=number,
            infra_retries=job.infra_retries,
            message=f"{why}; retry {number} of {policy.limit} in {format_duration(delay)}",
        )
    return Decision(JobState.FAILED, message=why, **kept)


def handed_back(
    job: JobRecord, attempt_state: AttemptState, result: AttemptResult, now: float
) -> Decision:
    """An attempt its agent gave back before starting it: the job never ran there, so it
    is queued again at once and no retry of either kind is counted."""
    kept = {"retries_used": job.retries_used, "infra_retries": job.infra_retries}
    if job.cancel_requested:
        return Decision(JobState.CANCELLED, message="cancelled", **kept)
    why = describe(result, job.spec.timeout)
    return Decision(JobState.PENDING, not_before=now, message=f"{why}; queued again", **kept)
