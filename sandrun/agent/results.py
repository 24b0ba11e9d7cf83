"""How an attempt's end reads as a result: the agent's own reason to stop it, a limit it hit,
a signal, or its exit code."""

from __future__ import annotations

import signal

from sandrun.agent.supervise import Stop
from sandrun.models import AttemptResult, Usage
from sandrun.states import FailureReason


def spawn_error(message: str, exit_code: int = 127) -> AttemptResult:
    return AttemptResult(
        exit_code=exit_code, failure_reason=FailureReason.SPAWN_ERROR, message=message
    )


_OURS: dict[Stop, tuple[FailureReason, str | None]] = {
    Stop.TIMEOUT: (FailureReason.TIMEOUT, None),
    Stop.CANCELLED: (FailureReason.CANCELLED, None),
    # A drain is an infrastructure event: retried without using the job's retries.
    Stop.HANDBACK: (FailureReason.NODE_LOST, "handed back: the agent was drained"),
    # Reported all the same: the server refuses it if it has given the attempt away.
    Stop.LOST: (FailureReason.NODE_LOST, "stopped: its agent could not renew the lease"),
    Stop.LOG_LIMIT: (
        FailureReason.LOG_LIMIT,
        "stopped at its log limit (limits.stop_on_log_limit)",
    ),
    Stop.DISK_LIMIT: (FailureReason.DISK_LIMIT, None),  # the message names the limit
}


def stopped_early(reason: Stop, where: str) -> AttemptResult:
    """An attempt the agent stopped before its program started (`where` it was)."""
    failure, message = _OURS[reason]
    return AttemptResult(failure_reason=failure, message=message or f"stopped {where}")


def result_of(
    reason: Stop | None,
    exit_code: int,
    signum: int | None,
    usage: Usage,
    limit: tuple[FailureReason, str] | None,
) -> AttemptResult:
    failure: FailureReason | None
    message: str | None
    if reason is not None:
        failure, message = _OURS[reason]
    elif limit is not None:
        failure, message = limit
    elif signum is not None:
        failure, message = FailureReason.SIGNALED, f"killed by {signal_name(signum)}"
    else:
        failure, message = (FailureReason.EXIT_CODE if exit_code else None), None
    return AttemptResult(exit_code=exit_code, failure_reason=failure, message=message, usage=usage)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
