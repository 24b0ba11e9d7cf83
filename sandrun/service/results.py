"""A job's declared result (`spec.result`): read once, when its attempt completes.

The agent has stored the job's outputs before it reports the end, so the decision that
ends the job can carry the result's value into the job's row, in the same transaction
that releases the steps that read it (`steps.NAME.result`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from sandrun.artifacts import ArtifactStore
from sandrun.errors import ArtifactError
from sandrun.models import INLINE_BLOB, AttemptResult, JobRecord
from sandrun.service import retry
from sandrun.states import AttemptState, JobState
from sandrun.store import Decide, Decision

MAX_RESULT = INLINE_BLOB  # bytes of JSON a result may hold


def deciding(artifacts: ArtifactStore) -> Decide:
    """The retry policy, with each completed job's declared result read in."""

    def decide(
        job: JobRecord, attempt_state: AttemptState, result: AttemptResult, now: float
    ) -> Decision:
        decision = retry.decide(job, attempt_state, result, now)
        if decision.state is not JobState.COMPLETED or job.spec.result is None:
            return decision
        value, problem = read_result(artifacts, job.spec.result, result)
        message = f"completed; result {job.spec.result}: {problem}" if problem else "completed"
        return replace(decision, result=value, message=message)

    return decide


def read_result(
    artifacts: ArtifactStore, path: str, result: AttemptResult
) -> tuple[Any, str | None]:
    """The value of output `path` as JSON, or None and why not."""
    out = next((o for o in result.outputs if o.path == path), None)
    if out is None:
        return None, "the job wrote no such file"
    if out.size > MAX_RESULT:
        return None, f"{out.size} bytes, over the {MAX_RESULT} a result may hold"
    try:
        return json.loads(artifacts.read_bytes(out.digest)), None
    except ArtifactError:
        return None, "its blob was not stored"
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not valid JSON ({exc})"
