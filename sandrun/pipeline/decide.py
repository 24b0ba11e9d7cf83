"""What becomes of a waiting job once its dependencies ended: pure decisions.

A plain job's `after` edges each name a condition (`ok`, `failed`, `any`) checked as each
dependency ends. A pipeline step waits for every step it needs to end, then: it is
skipped if all of them were skipped, or its `when:` is false, or (without a `when:`) one
of them did not complete; else it runs, or fans out into items.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sandrun.pipeline.definition import MAX_ITEMS, Step
from sandrun.pipeline.render import View, context, for_each_items, job_fields
from sandrun.pipeline.template import TemplateProblem, evaluate, render
from sandrun.states import JobState

CONDITIONS = ("ok", "failed", "any")


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Fail:
    reason: str


@dataclass(frozen=True)
class Run:
    fields: dict[str, Any]  # the job's, rendered


@dataclass(frozen=True)
class Expand:
    items: list[Any]


Decision = Skip | Fail | Run | Expand


def holds(condition: str, state: JobState) -> bool:
    """Whether a dependency that ended in `state` meets an `after` edge's condition."""
    if condition == "ok":
        return state is JobState.COMPLETED
    if condition == "failed":
        return state is JobState.FAILED
    return True


def decide_step(step: Step, steps: View, params: Mapping[str, Any]) -> Decision:
    """The fate of `step` once every step it needs has ended (`steps` shows them)."""
    needed = {name: steps.get(name) for name in step.needs}
    states = {name: (v.state if v is not None else "skipped") for name, v in needed.items()}
    if needed and all(s == "skipped" for s in states.values()):
        return Skip(f"every step it needs was skipped ({', '.join(needed)})")
    ctx = context(params, steps)
    if step.when is not None:
        try:
            go = evaluate(step.when, ctx)
        except TemplateProblem as exc:
            return Fail(f"when: {exc}")
        if not go:
            return Skip(f"when {step.when!r} is false")
    else:
        unmet = [f"{n} {s}" for n, s in states.items() if s != JobState.COMPLETED]
        if unmet:
            return Skip(f"a step it needs did not complete: {', '.join(unmet)}")
    if step.fans_out:
        try:
            items = for_each_items(step.for_each, ctx)
        except TemplateProblem as exc:
            return Fail(f"for_each: {exc}")
        if len(items) > MAX_ITEMS:
            return Fail(f"for_each gave {len(items)} items, over {MAX_ITEMS}")
        return Expand(items)
    return run_fields(step, steps, params)


def run_fields(
    step: Step, steps: View, params: Mapping[str, Any], item: Any = None, index: int | None = None
) -> Run | Fail:
    """The step's (or one item's) job fields, rendered."""
    try:
        fields = job_fields(render(step.job, context(params, steps, item, index)))
    except TemplateProblem as exc:
        return Fail(str(exc))
    return Run(_json_safe(fields))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | range):
        return [_json_safe(v) for v in value]
    return value


def group_end(step: Step, items: Sequence[tuple[JobState, Any]]) -> tuple[JobState, str, Any]:
    """A fan-out's end once its items ended: its state, message and result (the items'
    results in order; None for one that did not complete)."""
    failed = [i for i, (state, _) in enumerate(items) if state is not JobState.COMPLETED]
    result = [r if state is JobState.COMPLETED else None for state, r in items]
    if failed and step.on_item_failure == "fail":
        return JobState.FAILED, f"item {failed[0]} did not complete", result
    done = f"{len(items) - len(failed)} of {len(items)} items completed"
    if failed:
        shown = ", ".join(str(i) for i in failed[:20]) + (", …" if len(failed) > 20 else "")
        done += f"; failed: {shown}"
    return JobState.COMPLETED, done, result


def cache_key(spec_json: Mapping[str, Any]) -> str:
    """What makes a step's result reusable: its job as it would run (program, code and
    inputs by digest, environment, resources) — not its name or labels."""
    kept = {k: v for k, v in spec_json.items() if k not in ("name", "labels", "after")}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
