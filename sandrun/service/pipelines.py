"""Pipelines in the application layer: run a definition, read a run's status, cancel and
retry it. A step's job is checked at submit as a job would be (maxima, its owner's
limits, the blobs it names), with stand-ins for what only the run gives."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sandrun.errors import PipelineNotFound, SandrunError, ValidationError
from sandrun.ids import new_id
from sandrun.pipeline.definition import Definition, parse_pipeline, standin_spec
from sandrun.pipeline.models import PipelineRun, PipelineStatus, step_statuses
from sandrun.pipeline.render import ZERO_DIGEST
from sandrun.service import admission
from sandrun.spec import JobSpec
from sandrun.spec.policy import Policy
from sandrun.store import Store

MAX_LISTED = 1000


class PipelineCalls:
    """The pipeline half of `Service`."""

    store: Store
    policy: Policy
    host_paths: bool
    clock: Callable[[], float]
    _visible: Callable[[str, str | None], bool]  # Service's: may a viewer name a blob

    def run_pipeline(
        self,
        definition: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        owner: str = "local",
        *,
        admin: bool = False,
        fits: Callable[[JobSpec], None] | None = None,
    ) -> PipelineRun:
        """Check `definition` whole and start a run of it; steps that need nothing are
        queued before this returns. `fits` refuses a step's job that could never run here
        (embedded mode: this machine)."""
        checked = parse_pipeline(definition, params)
        specs = self._checked_specs(checked, owner, admin, fits)
        return self.store.insert_pipeline(new_id(), owner, checked, specs, self.clock())

    def retry_pipeline(self, run_id: str, viewer: str | None = None) -> PipelineRun:
        """A new run of `run_id`'s definition that reuses each step the old run completed
        with the same inputs (the same job, as its templates render now)."""
        old = self.pipeline(run_id, viewer)
        checked = Definition.model_validate(old.definition)
        specs = self._checked_specs(checked, old.owner, viewer is None)
        now = self.clock()
        return self.store.insert_pipeline(new_id(), old.owner, checked, specs, now, run_id)

    def pipeline(self, run_id: str, viewer: str | None = None) -> PipelineRun:
        """The run, if `viewer` (an owner; None for admins) may see it."""
        run = self.store.get_pipeline(run_id)
        if viewer is not None and run.owner != viewer:
            raise PipelineNotFound(f"no pipeline run has id {run_id!r}", field="run_id")
        return run

    def pipeline_status(self, run_id: str, viewer: str | None = None) -> PipelineStatus:
        run = self.pipeline(run_id, viewer)
        jobs = self.store.pipeline_jobs(run_id)
        return PipelineStatus(
            run=run,
            state=run.state,
            steps=step_statuses(run, jobs),
            events=self.store.pipeline_events(run_id),
        )

    def pipelines(self, viewer: str | None = None, limit: int = 50) -> list[PipelineRun]:
        return self.store.list_pipelines(viewer, max(1, min(limit, MAX_LISTED)))

    def cancel_pipeline(self, run_id: str, viewer: str | None = None) -> PipelineRun:
        self.pipeline(run_id, viewer)
        return self.store.cancel_pipeline(run_id, self.clock())

    def _checked_specs(
        self,
        definition: Definition,
        owner: str,
        admin: bool,
        fits: Callable[[JobSpec], None] | None = None,
    ) -> dict[str, JobSpec]:
        if self.policy.pool.ledger:  # a step would run without its cost held in escrow
            raise ValidationError(
                "this server prices jobs (its policy's pool.ledger), and pipelines are not "
                "priced yet",
                field="definition",
                suggestions=["submit the steps as jobs that wait for each other (after)"],
            )
        viewer = None if admin else owner

        def visible(digest: str) -> bool:
            return digest == ZERO_DIGEST or self._visible(digest, viewer)

        specs = {}
        for name, step in definition.steps.items():
            spec = standin_spec(definition, step)
            try:
                admission.check_host_paths(spec, self.host_paths)
                admission.check_maxima(spec, self.policy)
                admission.check_inputs(spec, visible)
                admission.check_limits(spec, owner, self.policy)
                if fits is not None:
                    fits(spec)
            except SandrunError as exc:
                raise admission.under(exc, f"steps.{name}") from None
            specs[name] = spec
        return specs
