"""Pipeline runs in the store: recording one with its steps, reading, cancelling."""

from __future__ import annotations

import json

from sandrun.errors import IllegalTransition, PipelineNotFound
from sandrun.models import JobRecord
from sandrun.pipeline.definition import Definition
from sandrun.pipeline.models import PipelineEvent, PipelineRun, StepJob
from sandrun.spec import JobSpec
from sandrun.store.database import Database, Row, Tx
from sandrun.store.deps import cancel_job, settle
from sandrun.store.rows import job_from
from sandrun.store.steps import insert_step, pipeline_event
from sandrun.store.transitions import add_edge, event, must


class PipelineStore:
    db: Database

    def insert_pipeline(
        self,
        run_id: str,
        owner: str,
        definition: Definition,
        specs: dict[str, JobSpec],
        now: float,
        retry_of: str | None = None,
    ) -> PipelineRun:
        """Record a run and a waiting job per step, edges for their needs, and release the
        steps that need none: one transaction."""
        with self.db.transaction() as tx:
            tx.run(
                "insert_pipeline",
                id=run_id,
                name=definition.name,
                owner=owner,
                definition=definition.model_dump_json(),
                retry_of=retry_of,
                jobs_left=len(definition.steps),
                now=now,
            )
            made: dict[str, JobRecord] = {}
            for name, step in definition.steps.items():
                made[name] = insert_step(
                    tx,
                    pipeline_id=run_id,
                    owner=owner,
                    name=f"{definition.name}-{name}",
                    step=name,
                    item=None,
                    spec=specs[name],
                    now=now,
                    waits=len(step.needs),
                )
                event(tx, made[name].id, None, "submitted", f"step {name} of {run_id}", now)
                if step.needs:
                    needs = ", ".join(step.needs)
                    event(tx, made[name].id, None, "waiting", f"waiting for {needs}", now)
                for need in step.needs:
                    dep = made[need].id
                    add_edge(tx, made[name].id, dep, "any")
            what = f"retry of {retry_of}" if retry_of else "started"
            pipeline_event(tx, run_id, "started", f"{definition.name}: {what}", now)
            ready = [made[n] for n, s in definition.steps.items() if not s.needs]
            settle(tx, now, ready=ready)
            return _run(_must(tx, run_id))

    def dependencies(self, job_id: str) -> list[tuple[str, str, str, str]]:
        """The jobs `job_id` waits for: (id, name, state, condition) each."""
        with self.db.transaction(write=False) as tx:
            rows = tx.all("dependencies", job_id=job_id)
        return [(r["dep_id"], r["name"], r["state"], r["condition"]) for r in rows]

    def get_pipeline(self, run_id: str) -> PipelineRun:
        with self.db.transaction(write=False) as tx:
            return _run(_must(tx, run_id))

    def list_pipelines(self, owner: str | None, limit: int) -> list[PipelineRun]:
        with self.db.transaction(write=False) as tx:
            return [_run(r) for r in tx.all("list_pipelines", owner=owner, limit=limit)]

    def pipeline_jobs(self, run_id: str) -> list[StepJob]:
        """A run's jobs, its steps' and items', as its status shows them."""
        with self.db.transaction(write=False) as tx:
            _must(tx, run_id)
            rows = tx.all("pipeline_step_jobs", pipeline_id=run_id)
        return [
            StepJob.model_validate(
                {**r, "result": json.loads(r["result"]) if r["result"] is not None else None}
            )
            for r in rows
        ]

    def pipeline_events(self, run_id: str) -> list[PipelineEvent]:
        with self.db.transaction(write=False) as tx:
            rows = tx.all("pipeline_events", pipeline_id=run_id)
        return [PipelineEvent.model_validate(dict(r)) for r in rows]

    def cancel_pipeline(self, run_id: str, now: float) -> PipelineRun:
        """Cancel every unfinished step: waiting and queued ones at once, the others
        through their agents. The run ends `cancelled` once its last step ends.

        First the run is marked, under its row lock: a release in flight (it holds that
        lock) finishes first, and every later one sees the mark and cancels its step.
        Then each step is cancelled in a transaction of its own, taking its row before
        the run's, as a step's end does: a cancel and an end never wait on each other."""
        with self.db.transaction() as tx:
            run = _run(_must(tx, run_id, lock=True))
            if run.is_terminal:
                raise IllegalTransition(
                    f"pipeline {run_id} already {run.state}; there is nothing to cancel",
                    field="run_id",
                )
            tx.run("cancel_pipeline", id=run_id, now=now)
            pipeline_event(tx, run_id, "cancel_requested", "cancel requested", now)
            ids = [r["id"] for r in tx.all("pipeline_jobs", pipeline_id=run_id)]
        for job_id in ids:
            with self.db.transaction() as tx:
                job = job_from(must(tx, job_id, lock=True))
                if not job.is_terminal:
                    cancel_job(tx, job, now)
        return self.get_pipeline(run_id)


def _must(tx: Tx, run_id: str, lock: bool = False) -> Row:
    row = tx.one("lock_pipeline" if lock else "get_pipeline", id=run_id)
    if row is None:
        raise PipelineNotFound(f"no pipeline run has id {run_id!r}", field="run_id")
    return row


def _run(row: Row) -> PipelineRun:
    return PipelineRun(
        id=row["id"],
        name=row["name"],
        owner=row["owner"],
        state=row["state"],
        definition=json.loads(row["definition"]),
        retry_of=row["retry_of"],
        cancel_requested=bool(row["cancel_requested"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )
