"""A pipeline run's handle in the SDK, and pipeline files read as definitions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from sandrun.client.job import Job
from sandrun.client.transport import Transport
from sandrun.errors import InvalidSpec, JobFailedError, TimeoutError
from sandrun.ids import pause
from sandrun.pipeline.models import PipelineRun, PipelineStatus, StepStatus


def load_pipeline(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A definition from a YAML file (or a mapping already read)."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidSpec(f"cannot read {path}: {exc.strerror}", field="file") from None
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{path} is not valid YAML: {exc}", field="file") from None
    if not isinstance(data, dict):
        raise InvalidSpec(f"{path}: a pipeline file is a mapping (name, steps)", field="file")
    return data


def with_code(definition: dict[str, Any], digest: str) -> dict[str, Any]:
    """`definition` with `digest` (an uploaded directory) as the code of every step that
    brings none of its own (code, repository, working_dir)."""
    own = ("code", "repository", "working_dir")
    defaults = definition.get("defaults") or {}
    if any(k in defaults for k in own):
        return definition
    steps = {
        name: step
        if not isinstance(step, dict) or any(k in step for k in own)
        else {**step, "code": digest}
        for name, step in (definition.get("steps") or {}).items()
    }
    return {**definition, "steps": steps}


class Run:
    """One run of a pipeline, as its server keeps it."""

    def __init__(self, transport: Transport, run: PipelineRun) -> None:
        self._transport = transport
        self.record = run

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.record.name} {self.record.state}>"

    @property
    def id(self) -> str:
        return self.record.id

    def status(self) -> PipelineStatus:
        status = self._transport.pipeline_status(self.id)
        self.record = status.run
        return status

    @property
    def state(self) -> str:
        return self.status().state

    def steps(self) -> dict[str, StepStatus]:
        return self.status().steps

    def wait(self, timeout: float | None = None, *, check: bool = False) -> Run:
        """Block until the run ends; with `check`, one that did not complete raises
        JobFailedError naming the steps that failed."""
        start = time.monotonic()
        while not (status := self.status()).run.is_terminal:
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                raise TimeoutError(
                    f"pipeline run {self.id} is still running after {timeout}s", field="timeout"
                )
            time.sleep(pause(waited) * 5)
        if check and status.state != "completed":
            failed = [n for n, s in status.steps.items() if s.state in ("failed", "cancelled")]
            raise JobFailedError(
                f"pipeline run {self.id} {status.state}; steps: {', '.join(failed) or 'none'}"
            )
        return self

    def job(self, step: str, item: int | None = None) -> Job:
        """The job of `step` (of its `item`, for a fan-out)."""
        found = self.steps().get(step)
        if found is None:
            raise InvalidSpec(f"run {self.id} has no step {step!r}", field="step")
        job_id = found.job if item is None else _nth(found.jobs, item, step)
        if job_id is None:
            raise InvalidSpec(f"step {step!r} has no job yet", field="step")
        return Job(self._transport, self._transport.get(job_id))

    def cancel(self) -> Run:
        self.record = self._transport.cancel_pipeline(self.id)
        return self

    def retry(self) -> Run:
        """A new run reusing each step this one completed with the same inputs."""
        return Run(self._transport, self._transport.retry_pipeline(self.id))


def _nth(jobs: list[str], item: int, step: str) -> str:
    if not 0 <= item < len(jobs):
        raise InvalidSpec(f"step {step!r} has {len(jobs)} items, not {item + 1}", field="item")
    return jobs[item]
