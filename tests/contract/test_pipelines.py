"""Pipelines in the store and service, with jobs run by hand: outputs passed by digest,
branches, fan-out and fan-in under each failure policy, retry and cache — both backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandrun.errors import ArtifactNotFound, InvalidSpec, PipelineNotFound
from sandrun.models import JobRecord
from sandrun.service import Service
from sandrun.states import FailureReason, JobState
from sandrun.store import Store
from tests.contract.flow import Outcome, run_next, run_queued, service_over

ML = """
name: ml
steps:
  prep:
    shell: "python3 prep.py > rows.txt"
    outputs: [processed.parquet, rows.txt]
  train:
    needs: [prep]
    inputs: {data.parquet: "{{ steps.prep.outputs['processed.parquet'] }}"}
    gpus: 2xa100
    command: [python3, train.py, --data, data.parquet]
    outputs: [model.pt]
  evaluate:
    needs: [train]
    when: "steps.train.state == 'completed'"
    inputs: {model.pt: "{{ steps.train.outputs['model.pt'] }}"}
    command: [python3, eval.py]
  per_shard:
    for_each: "{{ range(8) }}"          # or a list, or steps.X.result
    shell: "python3 shard.py {{ item }}"
"""


@pytest.fixture
def service(store: Store, tmp_path: Path) -> Service:
    return service_over(store, tmp_path)


def _steps(service: Service, run_id: str) -> dict[str, str]:
    return {n: s.state for n, s in service.pipeline_status(run_id).steps.items()}


def _files(job: JobRecord) -> Outcome:
    """Each job writes its declared outputs, their content naming the job's step."""
    return Outcome(outputs={p: f"{job.step}:{p}".encode() for p in job.spec.outputs})


def test_the_ml_pipeline_runs_as_written(service: Service) -> None:
    run = service.run_pipeline(yaml.safe_load(ML))
    ran = run_queued(service, _files)
    status = service.pipeline_status(run.id)
    assert status.state == "completed"
    assert _steps(service, run.id) == {
        "prep": "completed",
        "per_shard": "completed",
        "train": "completed",
        "evaluate": "completed",
    }
    by_step = {j.step: j for j in ran if j.item is None}
    prep_out = {o.path: o.digest for o in service.outputs(by_step["prep"].id)}
    train = service.get(by_step["train"].id)
    # train got prep's output by digest: the client never downloaded it.
    assert train.spec.inputs == {"data.parquet": prep_out["processed.parquet"]}
    assert train.spec.gpus is not None and train.spec.gpus.count == 2
    shards = sorted((j for j in ran if j.step == "per_shard"), key=lambda j: j.item or 0)
    assert [j.spec.shell for j in shards] == [f"python3 shard.py {i}" for i in range(8)]
    assert len(status.steps["per_shard"].jobs) == 8
    assert status.steps["per_shard"].items == {"completed": 8}
    assert [e.kind for e in status.events] == ["started", "completed"]


def test_when_false_skips_the_step_and_what_needs_only_it(service: Service) -> None:
    definition = yaml.safe_load(ML)
    run = service.run_pipeline(definition)
    run_queued(service, lambda j: Outcome(exit_code=1) if j.step == "train" else _files(j))
    steps = _steps(service, run.id)
    assert steps["train"] == "failed"
    assert steps["evaluate"] == "skipped"
    assert service.pipeline_status(run.id).state == "failed"


BRANCH = {
    "name": "branch",
    "steps": {
        "prep": {"shell": "count", "result": "stats.json"},
        "heavy": {"when": "steps.prep.result.rows > 1e6", "shell": "big"},
        "light": {"when": "steps.prep.result.rows <= 1e6", "shell": "small"},
        "report": {"needs": ["heavy", "light"], "when": "true", "shell": "report"},
        "only_heavy": {"needs": ["heavy"], "shell": "after-heavy"},
    },
}


@pytest.mark.parametrize("rows", [5_000_000, 10])
def test_a_branch_on_a_steps_result(service: Service, rows: int) -> None:
    run = service.run_pipeline(BRANCH)
    ran = run_queued(service, lambda j: Outcome.result({"rows": rows}, "stats.json"))
    heavy = rows > 1e6
    steps = _steps(service, run.id)
    assert steps["heavy"] == ("completed" if heavy else "skipped")
    assert steps["light"] == ("skipped" if heavy else "completed")
    assert steps["only_heavy"] == ("completed" if heavy else "skipped")
    assert steps["report"] == "completed"
    assert {j.step for j in ran} == {"prep", "report", "heavy" if heavy else "light"} | (
        {"only_heavy"} if heavy else set()
    )
    assert service.pipeline_status(run.id).steps["prep"].result == {"rows": rows}
    assert service.pipeline_status(run.id).state == "completed"


def _fan(policy: str, count: int = 100) -> dict[str, Any]:
    return {
        "name": "fan",
        "steps": {
            "each": {
                "for_each": f"{{{{ range({count}) }}}}",
                "on_item_failure": policy,
                "shell": "work {{ item }}",
                "result": "out.json",
            },
            "merge": {
                "needs": ["each"],
                "shell": "merge",
                "inputs": {"parts": "{{ steps.each.outputs['out.json'] }}"},
                "env": {"RESULTS": "{{ steps.each.result | tojson }}"},
            },
        },
    }


def _item_outcome(failing: set[int]) -> Any:
    def outcome(job: JobRecord) -> Outcome:
        if job.step == "each" and job.item in failing:
            return Outcome(exit_code=3)
        if job.step == "each":
            return Outcome.result({"n": job.item}, "out.json")
        return Outcome()

    return outcome


def test_a_fan_out_of_100_with_2_failures_fails_fast(service: Service) -> None:
    run = service.run_pipeline(_fan("fail"))
    ran = run_queued(service, _item_outcome({10, 20}))
    status = service.pipeline_status(run.id)
    each = status.steps["each"]
    assert each.state == "failed"
    assert "item 10" in (each.message or "")
    assert service.get(each.job or "").failure_reason is FailureReason.ITEMS_FAILED
    # Items after the first failure never ran: they were cancelled with the fan-out.
    assert each.items.get("cancelled", 0) > 0
    assert max(j.item or 0 for j in ran if j.step == "each") == 10
    assert status.steps["merge"].state == "skipped"
    assert status.state == "failed"


def test_a_fan_out_of_100_with_2_failures_continues_and_collects(service: Service) -> None:
    run = service.run_pipeline(_fan("continue"))
    ran = run_queued(service, _item_outcome({10, 20}))
    status = service.pipeline_status(run.id)
    each = status.steps["each"]
    assert each.state == "completed"
    assert each.items == {"completed": 98, "failed": 2}
    assert "failed: 10, 20" in (each.message or "")
    assert status.state == "completed"
    merge = service.get(next(j.id for j in ran if j.step == "merge"))
    # The fan-in got every item's output in order (none for the failed ones) and results.
    assert len(merge.spec.inputs) == 98
    assert "parts/0" in merge.spec.inputs and "parts/10" not in merge.spec.inputs
    results = json.loads(merge.spec.env["RESULTS"])
    assert results[9] == {"n": 9} and results[10] is None and len(results) == 100


def test_a_fan_out_over_a_steps_result_with_a_bound(service: Service) -> None:
    definition = {
        "name": "dyn",
        "steps": {
            "list": {"shell": "ls", "result": "r.json"},
            "each": {
                "for_each": "{{ steps.list.result }}",
                "max_parallel": 3,
                "shell": "do {{ item }} {{ index }}",
            },
        },
    }
    run = service.run_pipeline(definition)
    most = 0

    def outcome(job: JobRecord) -> Outcome:
        nonlocal most
        live = service.list_jobs(state=JobState.PENDING, limit=100).jobs
        most = max(most, 1 + sum(1 for j in live if j.step == "each"))
        return Outcome.result(["a", "b", "c", "d", "e", "f", "g"], "r.json")

    ran = run_queued(service, outcome)
    assert sorted(j.spec.shell or "" for j in ran if j.step == "each") == [
        f"do {x} {i}" for i, x in enumerate("abcdefg")
    ]
    assert most <= 3
    assert service.pipeline_status(run.id).state == "completed"


def test_an_empty_fan_out_completes_at_once(service: Service) -> None:
    run = service.run_pipeline(
        {
            "name": "e",
            "steps": {
                "each": {"for_each": [], "shell": "x"},
                "then": {"needs": ["each"], "shell": "y"},
            },
        }
    )
    run_queued(service)
    assert _steps(service, run.id) == {"each": "completed", "then": "completed"}


def test_retry_reuses_completed_steps_and_reruns_the_rest(service: Service) -> None:
    definition = {
        "name": "r",
        "steps": {
            "a": {"shell": "a", "outputs": ["a.txt"]},
            "b": {"inputs": {"a.txt": "{{ steps.a.outputs['a.txt'] }}"}, "shell": "b"},
            "c": {"needs": ["b"], "shell": "c"},
        },
    }
    first = service.run_pipeline(definition)
    run_queued(service, lambda j: Outcome(exit_code=1) if j.step == "b" else _files(j))
    assert service.pipeline_status(first.id).state == "failed"
    again = service.retry_pipeline(first.id)
    ran = run_queued(service, _files)
    assert [j.step for j in ran] == ["b", "c"]  # a did not run again
    status = service.pipeline_status(again.id)
    assert status.state == "completed"
    old_a = service.pipeline_status(first.id).steps["a"].job
    assert status.steps["a"].cached_from == old_a
    assert status.run.retry_of == first.id
    # The reused step's outputs are its own to read.
    a_job = status.steps["a"].job or ""
    assert [o.path for o in service.outputs(a_job)] == ["a.txt"]


def test_a_cached_step_hits_with_the_same_inputs_and_misses_with_others(
    service: Service,
) -> None:
    definition = {
        "name": "c",
        "params": {"n": 1},
        "steps": {"s": {"shell": "echo {{ params.n }}", "cache": True, "result": "r.json"}},
    }
    first = service.run_pipeline(definition)
    assert len(run_queued(service, lambda j: Outcome.result(7, "r.json"))) == 1
    second = service.run_pipeline(definition)
    assert run_queued(service) == []  # a hit: nothing ran
    hit = service.pipeline_status(second.id).steps["s"]
    assert hit.state == "completed" and hit.result == 7
    assert hit.cached_from == service.pipeline_status(first.id).steps["s"].job
    third = service.run_pipeline(definition, {"n": 2})
    assert len(run_queued(service)) == 1  # another input: a miss
    assert service.pipeline_status(third.id).steps["s"].cached_from is None


@pytest.mark.parametrize(
    ("steps", "field", "words"),
    [
        (
            {"a": {"shell": "x", "needs": ["b"]}, "b": {"shell": "y", "needs": ["a"]}},
            "steps.a",
            "cycle",
        ),
        ({"a": {"shell": "x", "needs": ["nope"]}}, "steps.a.needs", "no step named 'nope'"),
        ({"a": {"shell": "{{ steps.ghost.result }}"}}, "steps.a.needs", "ghost"),
        ({"a": {"shell": "x", "cpus": 0}}, "steps.a.cpus", "greater than 0"),
        ({"a": {"shell": "x", "for_each": "range(3)"}}, "steps.a.for_each", "list"),
        ({"a": {"shell": "{{ ''.__class__.__mro__ }}"}}, "steps.a", "not allowed"),
    ],
)
def test_a_bad_pipeline_is_refused_naming_the_step_and_nothing_is_recorded(
    service: Service, steps: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidSpec) as caught:
        service.run_pipeline({"name": "bad", "steps": steps})
    assert caught.value.field == field
    assert words in caught.value.message
    assert service.pipelines() == []
    assert service.list_jobs(limit=10).jobs == []


def test_cancel_ends_every_unfinished_step(service: Service) -> None:
    run = service.run_pipeline(yaml.safe_load(ML))
    service.cancel_pipeline(run.id)
    assert run_queued(service) == []
    status = service.pipeline_status(run.id)
    assert status.state == "cancelled"
    assert set(_steps(service, run.id).values()) == {"cancelled"}


def test_another_tenant_sees_no_run_and_cannot_pass_anothers_blob(service: Service) -> None:
    digest, _ = service.upload(b"bob's secret", "bob")
    steal = {
        "name": "steal",
        "params": {"d": "x"},
        "steps": {
            "a": {"shell": "ls", "result": "r.json"},
            "b": {"shell": "cat f", "inputs": {"f": "{{ params.d }}"}},
            "c": {"shell": "cat f", "inputs": {"f": "{{ steps.a.result.d }}"}},
        },
    }
    # A digest in params is known at submit: refused then, naming the step.
    with pytest.raises(ArtifactNotFound) as caught:
        service.run_pipeline(steal, {"d": digest}, owner="alice")
    assert caught.value.field == "steps.b.inputs.f"
    assert service.pipelines(viewer="alice") == []
    # One that a step's result gives is known only at run time: that step fails.
    del steal["steps"]["b"]
    run = service.run_pipeline(steal, owner="alice")
    with pytest.raises(PipelineNotFound):
        service.pipeline_status(run.id, viewer="bob")
    assert service.pipelines(viewer="bob") == []
    assert [
        j.step for j in run_queued(service, lambda j: Outcome.result({"d": digest}, "r.json"))
    ] == ["a"]
    c = service.pipeline_status(run.id).steps["c"]
    assert c.state == "failed" and "nothing its owner uploaded" in (c.message or "")
    assert service.get(c.job or "").failure_reason is FailureReason.STEP_ERROR
    assert service.pipeline_status(run.id).state == "failed"


def test_retention_keeps_a_running_runs_steps_and_purges_an_ended_run(
    service: Service,
) -> None:
    definition = {
        "name": "keep",
        "steps": {"a": {"shell": "a"}, "b": {"needs": ["a"], "shell": "b"}},
    }
    ended = service.run_pipeline(definition)
    also_ended = service.run_pipeline({"name": "gone", "steps": {"x": {"shell": "x"}}})
    ran = run_queued(service, lambda j: Outcome(exit_code=0))
    assert {j.step for j in ran} == {"a", "b", "x"}
    # A run still going: its first step ended (by hand), its second waits.
    waiting = service.run_pipeline(
        {"name": "wait", "steps": {"a": {"shell": "a"}, "b": {"needs": ["a"], "shell": "b"}}}
    )
    first = run_next(service)
    assert first is not None and first.step == "a"
    report = service.collect_garbage(older_than=-3600, purge_jobs=True)
    assert report.jobs_purged == 3  # the ended runs' a, b and x
    assert service.pipeline_status(waiting.id).steps["a"].state == "completed"  # kept
    for gone in (ended, also_ended):
        with pytest.raises(PipelineNotFound):
            service.pipeline(gone.id)


def test_defaults_apply_to_every_step_and_a_step_overrides_them(service: Service) -> None:
    run = service.run_pipeline(
        {
            "name": "d",
            "defaults": {"cpus": 2, "env": {"A": "1"}, "retries": 1, "labels": {"team": "ml"}},
            "steps": {
                "a": {"shell": "a"},
                "b": {"shell": "b", "cpus": 0.5, "env": {"B": "2"}, "labels": {"x": "y"}},
            },
        }
    )
    ran = {j.step: j for j in run_queued(service)}
    assert ran["a"].spec.cpus == 2 and ran["a"].spec.env == {"A": "1"}
    assert ran["b"].spec.cpus == 0.5 and ran["b"].spec.env == {"A": "1", "B": "2"}
    assert ran["b"].spec.labels == {"team": "ml", "x": "y"}
    assert ran["a"].spec.retries.limit == ran["b"].spec.retries.limit == 1
    assert ran["a"].name == "d-a"
    assert service.pipeline_status(run.id).state == "completed"


def test_a_fan_in_over_too_many_results_fails_saying_so(service: Service) -> None:
    """Results are small values: 300 items of 60 KiB each are more than one step's
    templates may read (16 MiB), so the step that reads them fails; the items stand."""
    run = service.run_pipeline(
        {
            "name": "big",
            "steps": {
                "each": {"for_each": "{{ range(300) }}", "shell": "x", "result": "r.json"},
                "merge": {"shell": "echo {{ steps.each.result | length }}"},
            },
        }
    )
    big = "x" * (60 << 10)
    run_queued(service, lambda j: Outcome.result(big, "r.json") if j.step == "each" else Outcome())
    status = service.pipeline_status(run.id)
    assert status.steps["each"].state == "completed"
    assert status.steps["each"].result is None  # too large to keep whole: its items hold it
    merge = status.steps["merge"]
    assert merge.state == "failed" and "over 16 MiB" in (merge.message or "")


def test_a_misspelled_key_is_refused_with_the_closest_valid_one(service: Service) -> None:
    with pytest.raises(InvalidSpec) as caught:
        service.run_pipeline({"name": "t", "steps": {"a": {"shel": "x", "neds": ["b"]}}})
    assert caught.value.field == "steps.a.shel"
    assert caught.value.suggestions == ["did you mean 'shell'?"]
    with pytest.raises(InvalidSpec) as caught:
        service.run_pipeline({"nam": "t", "steps": {"a": {"shell": "x"}}})
    assert caught.value.suggestions == ["did you mean 'name'?"]
