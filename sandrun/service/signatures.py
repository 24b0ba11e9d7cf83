"""Checking what an agent signed: its result, and what the attempt held beside it."""

from __future__ import annotations

from sandrun.errors import BadSignature
from sandrun.models import AttemptResult, JobRecord
from sandrun.signing import claim_of, meter_claim, verify

# What the ledger prices and replicas may compare: taken only when the agent signed it.
_METERED = ("cpus", "memory_mb", "gpus", "gpu_model")


def checked(
    key: str | None, job: JobRecord | None, attempt: int, result: AttemptResult
) -> AttemptResult:
    """`result` as the store may take it from an agent whose key is `key` (None: it has
    none, and nothing it says is signed), for `job`: its signatures verified, or
    BadSignature; what it says it held and its stdout's digest dropped unless signed (an
    older agent's)."""
    if key is None or job is None:
        return result.model_copy(update={"signature": None, "meter_signature": None})
    where = f"job {job.id} attempt {attempt}"
    if result.signature is None:
        raise BadSignature(f"{where}: its agent signs results, but this one is unsigned")
    if not verify(key, claim_of(job.id, attempt, job.spec, result), result.signature):
        raise BadSignature(f"{where}: the signature does not match its agent's key")
    metered = meter_claim(job.id, attempt, result.usage, result.stdout_sha256)
    if result.meter_signature is None or metered is None:
        usage = result.usage.model_copy(update=dict.fromkeys(_METERED))
        return result.model_copy(
            update={"usage": usage, "stdout_sha256": None, "meter_signature": None}
        )
    if not verify(key, metered, result.meter_signature):
        raise BadSignature(f"{where}: what it metered is not what its agent signed")
    return result
