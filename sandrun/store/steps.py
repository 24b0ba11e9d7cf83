"""Pipeline steps inside a transaction: making a released step's job, fanning out, reusing
a cached result, and counting a run's unfinished jobs.

These never settle waiters themselves: each returns the jobs it ended and those it made
ready, and `store/deps.py` works through them.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sandrun.errors import InvalidSpec
from sandrun.ids import new_id
from sandrun.models import AttemptResult, JobRecord
from sandrun.pipeline.decide import (
    Expand,
    Fail,
    Run,
    Skip,
    cache_key,
    decide_step,
    group_end,
    run_fields,
)
from sandrun.pipeline.definition import Definition, Step
from sandrun.pipeline.render import StepRow, View, views
from sandrun.pipeline.template import TemplateProblem
from sandrun.spec import JobSpec, parse_spec
from sandrun.states import FailureReason, JobState
from sandrun.store import replicas
from sandrun.store.database import Row, Tx
from sandrun.store.rows import blobs_of, job_from, spec_columns
from sandrun.store.transitions import Decision, add_edge, event, must, set_state

Moved = tuple[list[JobRecord], list[JobRecord]]  # (ended, ready)
MAX_VIEW = 16 << 20  # bytes of results one step's templates may read
MAX_GROUP_RESULT = 1 << 20  # bytes of JSON a fan-out keeps as its own result


def release(tx: Tx, job: JobRecord, now: float) -> Moved:
    """A waiting step whose dependencies all ended: make it, skip it, or fan it out."""
    # Its run's row lock: a cancel marks the run under it, so a step is made before the
    # mark (and the cancel finds it) or sees it.
    run = tx.one("lock_pipeline", id=job.pipeline_id)
    assert run is not None and job.step is not None
    definition = _definition(run["definition"])
    step = definition.steps[job.step]
    if run["cancel_requested"]:
        return [_end(tx, job, JobState.CANCELLED, "cancelled with its pipeline", now)], []
    if job.item is not None:  # an item whose turn came (`max_parallel`)
        return _make(tx, run, step, job, job.spec.to_json_dict(), now)
    if step.fans_out and _expanded(tx, job):
        return _fan_in(tx, step, job, now), []
    try:
        seen = _views(tx, job.pipeline_id or "", step.needs)
    except TemplateProblem as exc:
        return [_failed(tx, job, str(exc), now)], []
    decided = decide_step(step, seen, definition.params)
    if isinstance(decided, Skip):
        return [_end(tx, job, JobState.SKIPPED, decided.reason, now)], []
    if isinstance(decided, Fail):
        return [_failed(tx, job, decided.reason, now)], []
    if isinstance(decided, Expand):
        return _expand(tx, run, definition, step, job, decided.items, seen, now)
    return _make(tx, run, step, job, decided.fields, now)


# A fan-out's items are released one by one, each from its run's definition: parse it once
# (definitions are frozen, so one may be shared).
_definition = functools.lru_cache(maxsize=64)(Definition.model_validate_json)


def release_job(tx: Tx, job: JobRecord, now: float) -> list[JobRecord]:
    """A waiting job (not a step) whose dependencies ended: its `inputs_from` become
    inputs by digest, and it is queued; returns it if it ended instead."""
    if job.spec.inputs_from:
        inputs = dict(job.spec.inputs)
        for path, ref in job.spec.inputs_from.items():
            dep_id, _, output = ref.partition(":")
            row = tx.one("output_of", job_id=dep_id, path=output)
            if row is None:
                reason = f"inputs_from.{path}: job {dep_id} has no output {output!r}"
                return [_failed(tx, job, reason, now)]
            inputs[path] = row["digest"]
        fields = {k: v for k, v in job.spec.to_json_dict().items() if k != "inputs_from"}
        spec = parse_spec({**fields, "inputs": inputs})  # its refs, resolved
        _write_spec(tx, job, spec, cache_key(spec.to_json_dict()), now)
        job = job_from(must(tx, job.id))
    queue(tx, job, "its dependencies ended", now)
    return []


def queue(tx: Tx, job: JobRecord, why: str, now: float) -> None:
    """Queue a released job, or, one with `consensus`, its replicas (it waits for them)."""
    if job.spec.consensus is not None:
        event(tx, job.id, None, "released", f"{why}; its replicas are queued", now)
        replicas.start(tx, job, now)
        return
    set_state(tx, job, Decision(JobState.PENDING, not_before=now, message="released"), now)
    event(tx, job.id, None, "released", f"{why}; queued", now)
    tx.notify("submitted")


def step_ended(tx: Tx, job: JobRecord, now: float) -> None:
    """Count `job`'s end against its run; the last end ends the run. A fan-out's items
    count through the fan-out itself (its policy says whether they fail the run)."""
    failed = job.item is None and job.state in (JobState.FAILED, JobState.CANCELLED)
    row = tx.one("pipeline_step_ended", id=job.pipeline_id, failed=int(failed), now=now)
    if row is None or row["jobs_left"] > 0:
        return
    if row["cancel_requested"]:
        state = "cancelled"
    else:
        state = "failed" if row["failures"] else "completed"
    tx.run("finish_pipeline", id=job.pipeline_id, state=state, now=now)
    message = f"{state}" + (f": {row['failures']} step(s) failed" if row["failures"] else "")
    pipeline_event(tx, job.pipeline_id or "", state, message, now)


def stop_items(tx: Tx, group: JobRecord, now: float) -> list[JobRecord]:
    """Cancel a fan-out's unfinished items: those not started at once (returned), those
    running through their agents."""
    ended = []
    for row in tx.all("unfinished_items", pipeline_id=group.pipeline_id, step=group.step):
        item = job_from(must(tx, row["id"], lock=True))
        if item.state in (JobState.WAITING, JobState.PENDING):
            decision = Decision(JobState.CANCELLED, message=f"its fan-out failed: {group.message}")
            ended.append(job_from(set_state(tx, item, decision, now)))
        elif not item.cancel_requested:
            tx.run("request_cancel", id=item.id, now=now)
            event(tx, item.id, item.attempts, "cancel_requested", "its fan-out failed", now)
    tx.notify("cancel")
    return ended


def cancelled(tx: Tx, job: JobRecord) -> bool:
    """Whether `job`'s pipeline run was asked to cancel."""
    run = tx.one("get_pipeline", id=job.pipeline_id)
    return run is not None and bool(run["cancel_requested"])


def pipeline_event(tx: Tx, pipeline_id: str, kind: str, message: str, now: float) -> None:
    tx.run("insert_pipeline_event", pipeline_id=pipeline_id, kind=kind, message=message, at=now)


def _end(tx: Tx, job: JobRecord, state: JobState, message: str, now: float) -> JobRecord:
    return job_from(set_state(tx, job, Decision(state, message=message), now))


def _failed(tx: Tx, job: JobRecord, reason: str, now: float) -> JobRecord:
    message = f"steps.{job.step}: {reason}" if job.step else reason
    result = AttemptResult(failure_reason=FailureReason.STEP_ERROR)
    return job_from(set_state(tx, job, Decision(JobState.FAILED, message=message), now, result))


def _expanded(tx: Tx, job: JobRecord) -> bool:
    row = must(tx, job.id)
    return row["items"] is not None


def _views(tx: Tx, pipeline_id: str, names: list[str]) -> View:
    """What a step's templates see of the steps it needs. Their results are read up to
    MAX_VIEW bytes in all (10,000 items of 64 KiB each would be 640 MB)."""
    rows = []
    read = 0
    for name in names:
        outputs: dict[str, dict[str, str]] = {}
        for out in tx.all("step_outputs", pipeline_id=pipeline_id, step=name):
            outputs.setdefault(out["id"], {})[out["path"]] = out["digest"]
        for r in tx.all("step_rows", pipeline_id=pipeline_id, step=name):
            read += len(r["result"] or "")
            if read > MAX_VIEW:
                raise TemplateProblem(
                    f"the results of the steps it needs are over {MAX_VIEW >> 20} MiB: "
                    "pass large values as outputs (by digest), not results"
                )
            rows.append(
                StepRow(
                    step=name,
                    item=r["item"],
                    job=r["id"],
                    state=r["state"],
                    exit_code=r["exit_code"],
                    result=json.loads(r["result"]) if r["result"] is not None else None,
                    outputs=outputs.get(r["id"], {}),
                )
            )
    return views(rows)


def _make(
    tx: Tx, run: Row, step: Step, job: JobRecord, fields: dict[str, Any], now: float
) -> Moved:
    """Make a released step's (or item's) job from its rendered fields: queue it, or end
    it with the result of a job that already ran it as it is now."""
    fields = {"name": job.name, **fields}
    try:
        spec = parse_spec(fields)
    except InvalidSpec as exc:
        return [_failed(tx, job, exc.message, now)], []
    hidden = _not_visible(tx, spec, job.owner)
    if hidden:
        return [_failed(tx, job, hidden, now)], []
    key = cache_key(spec.to_json_dict())
    _write_spec(tx, job, spec, key, now)
    source = None
    if run["retry_of"] is not None:
        source = tx.one(
            "retry_source", pipeline_id=run["retry_of"], step=job.step, item=job.item, cache_key=key
        )
    if source is None and step.cache is not None:
        source = tx.one("cache_source", owner=job.owner, cache_key=key, since=now - step.cache)
    job = job_from(must(tx, job.id))
    if source is not None:
        return [_reuse(tx, job, job_from(source), now)], []
    queue(tx, job, "what it needs ended", now)
    return [], []


def _reuse(tx: Tx, job: JobRecord, source: JobRecord, now: float) -> JobRecord:
    tx.run("copy_outputs", job_id=job.id, source=source.id)
    tx.run("mark_cached", id=job.id, source=source.id)
    message = f"reused the result of job {source.id}, which ran it as it is now"
    event(tx, job.id, None, "cached", message, now, {"from": source.id})
    decision = Decision(JobState.COMPLETED, message=message, result=source.result)
    return job_from(set_state(tx, job, decision, now, AttemptResult(exit_code=0)))


def _not_visible(tx: Tx, spec: JobSpec, owner: str) -> str | None:
    """Why the job may not have a blob it names (a digest given through `params` that its
    owner never uploaded nor made), or None."""
    named = {f"inputs.{p}": d for p, d in spec.inputs.items()}
    if spec.code:
        named["code"] = spec.code
    for field, digest in named.items():
        if tx.one("blob_visible", digest=digest, owner=owner) is None:
            return f"{field}: nothing its owner uploaded or made has digest {digest}"
    return None


def _write_spec(tx: Tx, job: JobRecord, spec: JobSpec, key: str, now: float) -> None:
    tx.run(
        "make_step",
        id=job.id,
        name=spec.display_name,
        **spec_columns(spec),
        cache_key=key,
        now=now,
    )
    for digest in blobs_of(spec):
        tx.run("insert_job_input", job_id=job.id, digest=digest)


def _expand(
    tx: Tx,
    run: Row,
    definition: Definition,
    step: Step,
    group: JobRecord,
    items: list[Any],
    seen: View,
    now: float,
) -> Moved:
    """Fan `group` out: one job per item, all recorded before any is made, so the group
    hears of every item's end. With `max_parallel` N, item i waits for item i-N."""
    tx.run("set_items", id=group.id, items=len(items), now=now)
    if not items:
        decision = Decision(JobState.COMPLETED, message="no items", result=[])
        return [job_from(set_state(tx, group, decision, now, AttemptResult(exit_code=0)))], []
    tx.run("pipeline_add_jobs", id=group.pipeline_id, count=len(items), now=now)
    condition = "ok" if step.on_item_failure == "fail" else "any"
    window = step.max_parallel
    made: list[tuple[JobRecord, Run | Fail]] = []
    for index, item in enumerate(items):
        rendered = run_fields(step, seen, definition.params, item, index)
        record = insert_step(
            tx,
            pipeline_id=group.pipeline_id or "",
            owner=group.owner,
            name=f"{group.name}-{index}",
            step=step.name,
            item=index,
            spec=group.spec,
            now=now,
            waits=1 if window and index >= window else 0,
        )
        add_edge(tx, group.id, record.id, condition)
        if window and index >= window:
            before = made[index - window][0].id
            add_edge(tx, record.id, before, "any")
        made.append((record, rendered))
    event(tx, group.id, None, "fanned_out", f"{len(items)} items", now, {"items": len(items)})
    ended: list[JobRecord] = []
    ready: list[JobRecord] = []
    for index, (record, rendered) in enumerate(made):
        if isinstance(rendered, Fail):
            ended.append(_failed(tx, record, rendered.reason, now))
            continue
        if window and index >= window:  # made now, queued when its turn comes
            spec = _checked(rendered.fields, record)
            if isinstance(spec, Fail):
                ended.append(_failed(tx, record, spec.reason, now))
            else:
                _write_spec(tx, record, spec, "", now)
            continue
        more_ended, more_ready = _make(tx, run, step, record, rendered.fields, now)
        ended.extend(more_ended)
        ready.extend(more_ready)
    return ended, ready


def _checked(fields: dict[str, Any], record: JobRecord) -> JobSpec | Fail:
    try:
        return parse_spec({"name": record.name, **fields})
    except InvalidSpec as exc:
        return Fail(exc.message)


def _fan_in(tx: Tx, step: Step, group: JobRecord, now: float) -> list[JobRecord]:
    rows = tx.all("step_rows", pipeline_id=group.pipeline_id, step=group.step)
    items = [
        (JobState(r["state"]), json.loads(r["result"]) if r["result"] is not None else None)
        for r in rows
        if r["item"] is not None
    ]
    state, message, result = group_end(step, items)
    if len(json.dumps(result)) > MAX_GROUP_RESULT:  # its items hold them: see `steps.X.result`
        result = None
    reason = None if state is JobState.COMPLETED else FailureReason.ITEMS_FAILED
    outcome = AttemptResult(exit_code=0 if reason is None else None, failure_reason=reason)
    decision = Decision(state, message=message, result=result)
    return [job_from(set_state(tx, group, decision, now, outcome))]


def insert_step(
    tx: Tx,
    *,
    pipeline_id: str,
    owner: str,
    name: str,
    step: str,
    item: int | None,
    spec: JobSpec,
    now: float,
    waits: int,
) -> JobRecord:
    """A waiting job of a pipeline: a step, or an item of a fan-out."""
    job_id = new_id()
    tx.run(
        "insert_waiting_job",
        id=job_id,
        name=name[:128],
        owner=owner,
        **spec_columns(spec),
        not_before=now,
        created_at=now,
        pipeline_id=pipeline_id,
        step=step,
        item=item,
        deps_left=waits,
    )
    return job_from(must(tx, job_id))
