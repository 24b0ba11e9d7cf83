"""Pipelines on the wire: a run as the store keeps it, and its status with each step's."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from sandrun.models import Wire
from sandrun.spec.text import forbid_nul_in_schema, refuse_nul

PipelineState = Literal["running", "completed", "failed", "cancelled"]


class PipelineRun(Wire):
    """One run of a pipeline definition."""

    id: str
    name: str
    owner: str
    state: PipelineState
    definition: dict[str, Any]  # as checked: params, and steps with their needs
    retry_of: str | None = None
    cancel_requested: bool = False
    created_at: float
    updated_at: float
    finished_at: float | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state != "running"


class StepJob(Wire):
    """One job of a run as its status reads it (an item's result is left out)."""

    id: str
    step: str
    item: int | None = None
    state: str
    message: str | None = None
    exit_code: int | None = None
    result: JsonValue = None
    cached_from: str | None = None


class StepStatus(Wire):
    """A step as `pipeline status` shows it; a fan-out's items are its `jobs`."""

    name: str
    state: str
    job: str | None  # the step's own job
    jobs: list[str] = []  # a fan-out's items, in order
    items: dict[str, int] = {}  # a fan-out's items counted by state
    needs: list[str] = []
    message: str | None = None
    exit_code: int | None = None
    result: JsonValue = None
    cached_from: str | None = None


class PipelineEvent(Wire):
    id: int
    kind: str
    message: str
    at: float


class PipelineStatus(Wire):
    run: PipelineRun
    state: PipelineState
    steps: dict[str, StepStatus]
    events: list[PipelineEvent] = []


class PipelineSubmit(BaseModel):
    """POST /v1/pipelines: a definition (as YAML gives it) and `--set` values. No text
    in them, key or value, may hold a NUL (as in a spec)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=forbid_nul_in_schema)
    definition: dict[str, Any]
    params: dict[str, JsonValue] = Field(default_factory=dict)
    _no_nul = field_validator("*")(refuse_nul)


def step_statuses(run: PipelineRun, jobs: list[StepJob]) -> dict[str, StepStatus]:
    """Each step of `run`, in the definition's order, from its jobs."""
    steps = run.definition.get("steps", {})
    out: dict[str, StepStatus] = {}
    for name, step in steps.items():
        own = next((j for j in jobs if j.step == name and j.item is None), None)
        items = sorted((j for j in jobs if j.step == name and j.item is not None), key=_item)
        counts: dict[str, int] = {}
        for item in items:
            counts[item.state] = counts.get(item.state, 0) + 1
        out[name] = StepStatus(
            name=name,
            state=own.state if own else "waiting",
            job=own.id if own else None,
            jobs=[j.id for j in items],
            items=counts,
            needs=list(step.get("needs", [])),
            message=own.message if own else None,
            exit_code=own.exit_code if own else None,
            result=own.result if own else None,
            cached_from=own.cached_from if own else None,
        )
    return out


def _item(job: StepJob) -> int:
    return job.item or 0
