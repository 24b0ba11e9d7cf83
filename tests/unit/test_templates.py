"""Pipeline templates: what they give, what they read, and what the sandbox refuses."""

from __future__ import annotations

import pytest

from sandrun.pipeline.render import StepRow, View, job_fields, views
from sandrun.pipeline.template import TemplateProblem, condition_refs, evaluate, render, step_refs


def _steps() -> View:
    return views(
        [
            StepRow("prep", None, "j1", "completed", 0, {"rows": 2_000_000}, {"a.csv": "d1"}),
            StepRow("fan", None, "j2", "completed"),
            StepRow("fan", 1, "j4", "failed", 3, None, {}),
            StepRow("fan", 0, "j3", "completed", 0, {"n": 0}, {"o.txt": "d3"}),
            StepRow("items", None, "j5", "skipped"),
        ]
    )


def test_one_expression_gives_its_value_and_text_around_it_a_string() -> None:
    ctx = {"steps": _steps(), "params": {"n": 3}}
    assert render("{{ steps.prep.outputs['a.csv'] }}", ctx) == "d1"
    assert render("{{ range(params.n) }}", ctx) == range(3)
    assert render("n={{ params.n }}", ctx) == "n=3"
    assert render({"k": ["{{ steps.prep.result.rows }}"]}, ctx) == {"k": [2_000_000]}
    assert evaluate("steps.prep.result.rows > 1e6", ctx) is True


def test_a_fan_out_reads_as_lists_in_item_order() -> None:
    fan = _steps().fan
    assert fan.result == [{"n": 0}, None]
    assert fan.outputs == {"o.txt": ["d3", None]}
    assert fan.failed == [1]
    assert [i.job for i in fan.items] == ["j3", "j4"]
    # A step named like a dict's method is still a step.
    assert _steps().items.state == "skipped"


def test_a_list_of_digests_becomes_numbered_inputs_and_numbers_become_words() -> None:
    fields = job_fields({"inputs": {"parts": ["d1", None, "d3"]}, "command": ["x", 1, 2.5]})
    assert fields["inputs"] == {"parts/0": "d1", "parts/2": "d3"}
    assert fields["command"] == ["x", "1", "2.5"]


def test_the_steps_a_template_reads_are_found() -> None:
    assert step_refs({"a": "{{ steps.x.outputs['f'] }} {{ steps['y'].state }}"}) == {"x", "y"}
    assert condition_refs("steps.z.result > 1 and params.k") == {"z"}


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__",
        "steps.__init__",
        "lipsum",
        "cycler",
        "range(10 ** 9)",
        "7 ** 9999999",
        "'x' * 10 ** 9",
        "[0] * 10 ** 8",
        "2 ** 3000 * 2 ** 3000 * 2 ** 3000",
        "params.pop('n')",
        "steps.nope.state",
    ],
)
def test_the_sandbox_refuses(expression: str) -> None:
    with pytest.raises(TemplateProblem):
        evaluate(expression, {"steps": _steps(), "params": {"n": 1}})
