"""Many jobs in one request: a batch submit, a wait for many, and why one waits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandrun.models import JobRecord, Wire
from sandrun.spec import JobSpec
from sandrun.spec.text import forbid_nul_in_schema, refuse_nul

MAX_BATCH = 1000  # jobs in one batch submit: one request, one transaction


class SubmitBatch(BaseModel):
    """Jobs to submit together: all are recorded, in this order, or none."""

    model_config = ConfigDict(extra="forbid")
    jobs: list[JobSpec] = Field(min_length=1, max_length=MAX_BATCH)


class SubmittedBatch(Wire):
    jobs: list[JobRecord]


class WaitRequest(BaseModel):
    """Jobs to wait for: the answer comes once all have ended, or at `timeout`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=forbid_nul_in_schema)
    ids: list[str] = Field(min_length=1, max_length=MAX_BATCH)
    _no_nul = field_validator("*")(refuse_nul)
    timeout: float = Field(default=30.0, ge=0, le=60)


class EndedJobs(Wire):
    jobs: list[JobRecord]


class Waiting(Wire):
    """Why a job has not started; None once it has."""

    reason: str | None
