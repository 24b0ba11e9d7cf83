"""What a step's templates see, and its rendered fields made into a job's.

A step's templates read `steps.NAME` (its `state`, `exit_code`, `result`, `outputs` by
path, `job`; a fan-out's `result` and `outputs` are lists in item order, with `items` and
`failed`), `params`, and in a fan-out `item` and `index`. At submit, `stand_in` renders
them with stand-ins for what only a run gives, so the job's fields are checked then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandrun.pipeline.template import TemplateProblem, evaluate, expression_of, render

ZERO_DIGEST = "0" * 64  # stands in for a digest a run will give
_TEXT = ("shell", "script", "name", "interpreter", "result")


@dataclass(frozen=True)
class StepRow:
    """One job of a pipeline as the store read it: a step, or an item of a fan-out."""

    step: str
    item: int | None
    job: str
    state: str
    exit_code: int | None = None
    result: Any = None
    outputs: dict[str, str] = field(default_factory=dict)


class View:
    """Values a template reads as `x.name` or `x['name']` (a step, the steps): attributes,
    so a step named `items` or `keys` is never a dict's method."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            there = ", ".join(sorted(self._values))
            raise TemplateProblem(f"there is no {name!r} here (there is {there})") from None

    def __getitem__(self, name: str) -> Any:
        return self.__getattr__(name)

    def get(self, name: str) -> Any:
        return self._values.get(name)


def views(rows: Sequence[StepRow]) -> View:
    """`steps` as templates read it, from the rows of the steps they name."""
    out: dict[str, dict[str, Any]] = {}
    items: dict[str, list[StepRow]] = {}
    for row in rows:
        if row.item is None:
            out[row.step] = _view(row)
        else:
            items.setdefault(row.step, []).append(row)
    for name, these in items.items():
        these.sort(key=lambda r: r.item or 0)
        group = out.setdefault(name, {"state": "running", "job": None, "exit_code": None})
        paths = sorted({p for r in these for p in r.outputs})
        results = [r.result for r in these]
        group.update(
            result=results,
            results=results,
            outputs={
                p: [r.outputs.get(p) if r.state == "completed" else None for r in these]
                for p in paths
            },
            items=[View(_view(r)) for r in these],
            failed=[r.item for r in these if r.state != "completed"],
        )
    return View({name: View(v) for name, v in out.items()})


def _view(row: StepRow) -> dict[str, Any]:
    return {
        "state": row.state,
        "exit_code": row.exit_code,
        "result": row.result,
        "outputs": dict(row.outputs),
        "job": row.job,
    }


def context(
    params: Mapping[str, Any],
    steps: Any,
    item: Any = None,
    index: int | None = None,
) -> dict[str, Any]:
    out = {"params": dict(params), "steps": steps}
    if index is not None:
        out.update(item=item, index=index)
    return out


def job_fields(rendered: Any) -> dict[str, Any]:
    """Rendered fields as a job's: an input given a list of digests becomes `NAME/0`,
    `NAME/1`, … (an item with no such output is left out)."""
    if not isinstance(rendered, dict):
        raise TemplateProblem("a step's fields must render to a mapping")
    fields: dict[str, Any] = dict(rendered)
    for key in _TEXT:  # `{{ item }}` of range(8) is a number: these take it as text
        if isinstance(fields.get(key), int | float):
            fields[key] = str(fields[key])
    if isinstance(fields.get("command"), list):
        fields["command"] = [_word(w) for w in fields["command"]]
    inputs = fields.get("inputs")
    if not isinstance(inputs, dict):
        return fields
    flat: dict[str, Any] = {}
    for name, value in inputs.items():
        if isinstance(value, list | tuple):
            flat.update({f"{name}/{i}": v for i, v in enumerate(value) if v is not None})
        elif value is not None:
            flat[str(name)] = value
    return {**fields, "inputs": flat}


def _word(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def items_of(value: Any) -> list[Any]:
    """A `for_each:` value as its items, or why it is none."""
    if isinstance(value, range | list | tuple):
        return list(value)
    raise TemplateProblem(f"for_each gave {type(value).__name__}, not a list or range")


def for_each_items(for_each: Any, ctx: Mapping[str, Any]) -> list[Any]:
    """A step's `for_each:` (a list, or one `{{ … }}`) as its items."""
    if isinstance(for_each, list):
        return list(for_each)
    expression = expression_of(for_each)
    assert expression is not None  # checked at submit
    return items_of(evaluate(expression, ctx))


class StandIn:
    """A value only a run gives: any attribute, item, call or sum of it is another; as
    text it reads "1"."""

    def __getattr__(self, name: str) -> StandIn:
        if name.startswith("_"):
            raise AttributeError(name)
        return self

    def __getitem__(self, key: object) -> StandIn:
        return self

    def __call__(self, *args: object, **kwargs: object) -> StandIn:
        return self

    def __str__(self) -> str:
        return "1"

    def __int__(self) -> int:
        return 1

    def __float__(self) -> float:
        return 1.0

    def __index__(self) -> int:
        return 1

    def __iter__(self) -> Any:
        return iter([self])

    def __len__(self) -> int:
        return 1

    def _same(self, *other: object) -> StandIn:
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __truediv__ = __rtruediv__ = __floordiv__ = __mod__ = __pow__ = __neg__ = _same


def stand_in(job: dict[str, Any], for_each: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """A step's job fields rendered for a check at submit."""
    item: Any = StandIn()
    if isinstance(for_each, list) and for_each:
        item = for_each[0]
    ctx = context(params, StandIn(), item, 0 if for_each is not None else None)
    return job_fields(_settled(render(job, ctx), in_inputs=False))


def _settled(value: Any, in_inputs: bool) -> Any:
    if isinstance(value, StandIn):
        return ZERO_DIGEST if in_inputs else "1"
    if isinstance(value, dict):
        return {k: _settled(v, in_inputs or k == "inputs") for k, v in value.items()}
    if isinstance(value, list | tuple | range):
        return [_settled(v, in_inputs) for v in value]
    return value
