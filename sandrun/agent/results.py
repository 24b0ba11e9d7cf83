"""How an attempt's end reads as a result: the agent's own reason to stop it, a limit it hit,
a signal, or its exit code."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from sandrun.agent.control import ControlPlane
from sandrun.agent.outputs import with_outputs
from sandrun.agent.process import Ended
from sandrun.agent.sandbox import Confined, Sandboxing
from sandrun.agent.sandbox.runtime import disk_message
from sandrun.agent.supervise import Stop
from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import UploadTooLarge
from sandrun.models import AttemptResult, Capacity, Claim, Usage
from sandrun.signing import Identity, claim_of, meter_claim
from sandrun.spec import JobSpec
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
    Stop.VOLUME_FULL: (FailureReason.VOLUME_FULL, None),  # ...and the volume (agent/mounts.py)
    Stop.PREEMPTED: (
        FailureReason.PREEMPTED,
        "preempted: it did not checkpoint (exit 85) within checkpoint.grace",
    ),
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


def metered(spec: JobSpec, result: AttemptResult, node: Capacity) -> AttemptResult:
    """`result` with what its attempt held beside what it used: the ledger prices it
    (docs/pool.md), and the signature binds it."""
    gpus = spec.gpus.count if spec.gpus else 0
    held = {
        "cpus": spec.cpus,
        "memory_mb": spec.memory,
        "gpus": gpus,
        "gpu_model": node.gpu_type if gpus else None,
    }
    return result.model_copy(update={"usage": result.usage.model_copy(update=held)})


def signed(identity: Identity | None, claim: Claim, result: AttemptResult) -> AttemptResult:
    """`result` signed by this agent's key (as it is, if the agent has none): the result
    itself, and what it held and its stdout's sha256 (`meter_claim`)."""
    if identity is None:
        return result
    job = claim.job
    update = {"signature": identity.sign(claim_of(job.id, claim.attempt, job.spec, result))}
    metered = meter_claim(job.id, claim.attempt, result.usage, result.stdout_sha256)
    if metered is not None:
        update["meter_signature"] = identity.sign(metered)
    return result.model_copy(update=update)


_NO_OUTPUTS = (FailureReason.CANCELLED, FailureReason.NODE_LOST)  # nobody will take them


def attempt_result(
    sandboxing: Sandboxing,
    artifacts: LocalArtifactStore,
    claim: Claim,
    confined: Confined,
    workdir: Path,
    reason: Stop | None,
    ended: Ended,
    started: float,
) -> AttemptResult:
    """The attempt's end as a result: why it stopped, its exit, what it used, the limit it
    hit, and its outputs."""
    spec = claim.job.spec
    cpu = ended.cpu_seconds
    peak = confined.cgroup.peak_memory_mb() if confined.cgroup else None
    usage = Usage(
        wall_seconds=time.monotonic() - started,
        cpu_seconds=cpu,
        max_rss_mb=peak if peak is not None else ended.max_rss_kb / 1024,
    )
    code = os.waitstatus_to_exitcode(ended.status)
    exit_code = 128 - code if code < 0 else code  # a signal N reads as 128+N, as in shells
    # A sandbox (like a shell) reports its job's death by signal N as exit code 128+N.
    reported = exit_code - 128 if 128 < exit_code <= 128 + 64 else None
    signum = -code if code < 0 else reported if sandboxing.backend.isolates else None
    limit = None
    if reason is None:
        killer = signum if signum is not None else reported
        limit = sandboxing.limit_reason(confined, spec, killer, exit_code != 0, cpu)
    result = result_of(reason, exit_code, signum, usage, limit)
    if reason is Stop.DISK_LIMIT:
        result = result.model_copy(update={"message": disk_message(confined.disk_mb)})
    if reason is Stop.TIMEOUT and confined.cgroup and confined.cgroup.hit_process_limit():
        note = f"it had hit its limit of {spec.limits.processes} processes"
        result = result.model_copy(update={"message": note})
    if spec.outputs and result.failure_reason not in _NO_OUTPUTS:
        result = with_outputs(result, spec, workdir, artifacts, claim.attempt)
    return result


def uploaded(
    control: ControlPlane, result: AttemptResult, sign: Callable[[AttemptResult], AttemptResult]
) -> AttemptResult:
    """`result`, signed, once its outputs are uploaded. A server whose store takes no
    blob that big (S3: one PUT holds 5 GiB) refuses for good: the attempt then fails
    `output_limit` without its outputs, saying why, rather than being retried as lost."""
    result = sign(result)
    try:
        control.upload_outputs(result)
    except UploadTooLarge as exc:
        reason = result.failure_reason or FailureReason.OUTPUT_LIMIT
        update = {"outputs": [], "failure_reason": reason, "message": f"outputs not kept: {exc}"}
        return sign(result.model_copy(update=update))
    return result
