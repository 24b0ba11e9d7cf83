"""Pipelines with real agents and processes: the issue's ML file as written through a
server whose agent declares 2 A100s, the example files embedded, `--after` from the CLI,
a restart and a kill -9 mid-pipeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import sandrun
from sandrun.client import App, Pipeline, connect
from sandrun.errors import JobFailedError
from sandrun.home import Home
from sandrun.states import JobState
from tests.contract.test_pipelines import ML
from tests.helpers import wait_for
from tests.integration import sdkfuncs
from tests.integration.cluster import SANDRUN, Cluster
from tests.integration.conftest import Local

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {
    "prep.py": "open('processed.parquet', 'w').write('x,y\\n1,2\\n'); print(1)\n",
    "train.py": (
        "import os, sys\n"
        "data = open(sys.argv[sys.argv.index('--data') + 1]).read()\n"
        "open('model.pt', 'w').write('model of ' + str(len(data)) + ' bytes')\n"
        "print('gpus', os.environ.get('CUDA_VISIBLE_DEVICES'))\n"
    ),
    "eval.py": "print(open('model.pt').read())\n",
    "shard.py": "import sys; print('shard', sys.argv[1])\n",
}


def _cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SANDRUN, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=180
    )


def _server_env(cluster: Cluster) -> dict[str, str]:
    return {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": cluster.tokens["alice"]}


def test_the_issues_ml_file_runs_as_written_through_a_server(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_agent("gpu", cpus=4, extra=("--gpus", "2xa100"))
    work = tmp_path / "ml"
    work.mkdir()
    (work / "ml.yaml").write_text(ML)
    for name, text in SCRIPTS.items():
        (work / name).write_text(text)
    env = _server_env(cluster)
    done = _cli(env, "pipeline", "run", "ml.yaml", "--wait", "--json", cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(done.stdout)
    assert status["state"] == "completed"
    assert {n: s["state"] for n, s in status["steps"].items()} == {
        "prep": "completed",
        "per_shard": "completed",
        "train": "completed",
        "evaluate": "completed",
    }
    assert len(status["steps"]["per_shard"]["jobs"]) == 8
    run_id = status["id"]
    train = _cli(env, "pipeline", "logs", run_id, "train")
    assert train.stdout.strip() == "gpus 0,1"  # the 2 GPUs its agent declared
    evaluate = _cli(env, "pipeline", "logs", run_id, "evaluate")
    assert evaluate.stdout.strip() == "model of 8 bytes"  # train's model.pt, by reference
    shard = _cli(env, "pipeline", "logs", run_id, "per_shard", "--item", "5")
    assert shard.stdout.strip() == "shard 5"
    again = _cli(env, "pipeline", "status", run_id, "--json")
    assert json.loads(again.stdout)["steps"]["train"]["state"] == "completed"
    # Bob sees none of it.
    bob = {**env, "SANDRUN_TOKEN": cluster.tokens["bob"]}
    hidden = _cli(bob, "pipeline", "status", run_id)
    assert hidden.returncode == 2 and "no pipeline run has id" in hidden.stderr


def test_the_example_file_runs_embedded_and_a_failed_run_exits_1(home: Home) -> None:
    env = {**os.environ, "SANDRUN_HOME": str(home.root)}
    env.pop("SANDRUN_URL", None)
    example = str(ROOT / "examples" / "pipeline.yaml")
    done = _cli(env, "pipeline", "run", example, "--set", "gpus=0", "--wait", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(done.stdout)
    steps = {n: s["state"] for n, s in status["steps"].items()}
    assert steps == {
        "prep": "completed",
        "per_shard": "completed",
        "train": "completed",
        "heavy": "skipped",
        "light": "completed",
        "evaluate": "completed",
        "summary": "completed",
    }
    assert status["steps"]["evaluate"]["result"]["good"] is True
    summary = _cli(env, "pipeline", "logs", status["id"], "summary")
    assert summary.stdout.startswith("shards: [0, 1, 4, 9] mse: ")
    # No rows: training divides by zero, evaluation is skipped, the run fails.
    failed = _cli(env, "pipeline", "run", example, "--set", "gpus=0", "--set", "rows=0", "--wait")
    assert failed.returncode == 1
    assert "train failed" in failed.stdout and "evaluate skipped" in failed.stdout


def test_run_after_a_job_from_the_cli(home: Home, tmp_path: Path) -> None:
    env = {**os.environ, "SANDRUN_HOME": str(home.root)}
    env.pop("SANDRUN_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return _cli(env, *args, cwd=tmp_path)  # embedded jobs run here: they see ./go

    first = cli("submit", "--shell", "while [ ! -e go ]; do sleep 0.05; done; exit 3")
    first_id = first.stdout.strip()
    on_fail = cli("submit", "--after", f"{first_id}:failed", "--", "echo", "cleanup")
    on_ok = cli("submit", "--json", "--after", first_id, "--", "echo", "next")
    on_ok_id = json.loads(on_ok.stdout)["id"]
    assert json.loads(on_ok.stdout)["state"] == "waiting"
    shown = cli("status", on_ok_id)
    assert "waiting for" in shown.stdout and first_id in shown.stdout
    (tmp_path / "go").touch()
    ran = cli("wait", on_fail.stdout.strip())
    assert ran.returncode == 0
    assert cli("logs", on_fail.stdout.strip()).stdout == "cleanup\n"
    skipped = cli("wait", on_ok_id, "--json")
    assert skipped.returncode == 1
    assert json.loads(skipped.stdout)["state"] == "skipped"
    bad = cli("submit", "--after", "nope:sometimes", "--", "true")
    assert bad.returncode == 2 and "after" in bad.stderr


CHAIN = {
    "name": "chain",
    "steps": {
        "a": {"shell": "sleep 1; echo a > a.txt", "outputs": ["a.txt"]},
        "b": {
            "inputs": {"a.txt": "{{ steps.a.outputs['a.txt'] }}"},
            "shell": "sleep 1; cat a.txt > b.txt; echo b >> b.txt",
            "outputs": ["b.txt"],
        },
        "fan": {
            "needs": ["b"],
            "for_each": "{{ range(6) }}",
            "max_parallel": 2,
            "shell": "sleep 0.5; echo {{ item }}",
        },
        "c": {
            "needs": ["fan"],
            "inputs": {"b.txt": "{{ steps.b.outputs['b.txt'] }}"},
            "shell": "cat b.txt",
        },
    },
}


def _every_step_ended_once(cluster: Cluster, run_id: str) -> dict[str, Any]:
    with cluster.client() as client:
        run = client.pipeline(run_id).wait(timeout=120)
        status = run.status()
        for step in status.steps.values():
            for job_id in [step.job, *step.jobs]:
                assert job_id is not None
                kinds = [e.kind for e in client.get(job_id).events]
                ends = [k for k in kinds if k in ("completed", "failed", "cancelled", "skipped")]
                assert len(ends) == 1, (step.name, kinds)
        assert run.job("c").log_text() == "a\nb\n"
        return {n: s.state for n, s in status.steps.items()}


def test_a_server_restart_mid_pipeline_loses_nothing(cluster: Cluster) -> None:
    cluster.start_agent("a1", cpus=2)
    with cluster.client() as client:
        run = client.run_pipeline(CHAIN)
        wait_for(lambda: run.steps()["a"].state == "running", timeout=30, what="a to run")
    assert cluster.server is not None
    os.killpg(cluster.server.pid, signal.SIGKILL)
    cluster.server.wait(30)
    cluster.start_server()
    states = _every_step_ended_once(cluster, run.id)
    assert set(states.values()) == {"completed"}


def test_an_agent_kill_9_mid_pipeline_retries_its_step(cluster: Cluster) -> None:
    doomed = cluster.start_agent("doomed", cpus=2)
    with cluster.client() as client:
        run = client.run_pipeline(CHAIN)
        wait_for(lambda: run.steps()["b"].state == "running", timeout=30, what="b to run")
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(30)
        cluster.start_agent("rescuer", cpus=2)
        states = _every_step_ended_once(cluster, run.id)
        assert set(states.values()) == {"completed"}
        b = run.job("b")
        assert b.attempts[0].state == "lost"
        assert b.record.state is JobState.COMPLETED


def test_the_builder_waits_on_jobs(home: Home) -> None:
    with connect(home=home.root) as client:
        first = client.job().shell("exit 4").upload_code(False).submit()
        cleanup = client.job().shell("echo cleanup").after(first, condition="failed").submit()
        following = client.job().shell("echo next").depends_on(first).submit()
        either = client.job().shell("echo any").after(first.id, condition="any").submit()
        for job in (cleanup, following, either):
            job.wait(60)
        assert cleanup.record.state is JobState.COMPLETED
        assert cleanup.log_text() == "cleanup\n"
        assert following.record.state is JobState.SKIPPED
        assert either.record.state is JobState.COMPLETED
        assert [e.kind for e in following.events][-1] == "skipped"


def test_calls_passed_to_calls_wait_for_them(local: Local) -> None:
    app = App("futures", client=local.client)
    square = app.function()(sdkfuncs.square)
    total = app.function()(sdkfuncs.total)
    pair = app.function()(sdkfuncs.pair)
    divide = app.function()(sdkfuncs.divide)
    # A reduce over a map: the sum's job waits for the 20 squares and gets their values.
    squares = square.map(range(20))
    summed = total.spawn(squares, start=square.spawn(10))
    assert summed.get(120) == sum(n * n for n in range(20)) + 100
    job = summed.job.refresh().record
    assert len(job.spec.after) == 21
    assert sorted(job.spec.inputs)[0].startswith(".sandrun/after/")
    # Futures inside containers, one future used twice.
    nine = square.spawn(3)
    assert pair.remote(4, {"x": nine, "again": [nine]}) == [4, {"x": 9, "again": [9]}]
    # A call whose future failed is skipped, and says why.
    failing = divide.spawn(1, 0)
    after_failure = square.spawn(failing)
    with pytest.raises(JobFailedError) as caught:
        after_failure.get(60)
    assert after_failure.job.refresh().record.state is JobState.SKIPPED
    assert failing.id in str(caught.value)
    # Iterating a map still yields its results in order.
    assert list(square.map([1, 2, 3])) == [1, 4, 9]


def test_function_steps_pass_values_and_branch_on_them(local: Local) -> None:
    app = App("fsteps", client=local.client)
    square = app.function(cpus=0.5)(sdkfuncs.square)
    with Pipeline("fn", client=local.client) as p:
        sq = p.call("sq", square, args=(7,))
        p.call("big", sdkfuncs.total, args=([sq, sq],), when=f"{sq.ref}.result > 40")
        p.call("small", sdkfuncs.square, args=(sq,), when=f"{sq.ref}.result <= 40")
    assert p.run is not None
    status = p.run.wait(120, check=True).status()
    assert {n: s.state for n, s in status.steps.items()} == {
        "sq": "completed",
        "big": "completed",
        "small": "skipped",
    }
    assert status.steps["sq"].result == 49  # its return value, as JSON
    assert status.steps["big"].result == 98
    assert p.run.job("big").result() == 98
    assert p.run.job("sq").record.spec.cpus == 0.5  # the @app.function's own fields


def test_two_servers_on_postgresql_release_each_step_once(pg_url: str, tmp_path: Path) -> None:
    """Agents on two servers of one database end steps at once: every step and item is
    released once and ends once, and the run ends once."""
    cluster = Cluster(tmp_path, db=pg_url)
    cluster.make_tokens()
    cluster.start_server()
    try:
        other = cluster.start_other_server()
        cluster.start_agent("one", cpus=2)
        cluster.start_agent("two", cpus=2, url=other)
        definition = {
            "name": "two",
            "steps": {
                "a": {"command": ["true"]},
                "b": {"command": ["true"]},
                "fan": {
                    "needs": ["a", "b"],
                    "for_each": "{{ range(30) }}",
                    "max_parallel": 4,
                    "command": ["true"],
                },
                "join": {"needs": ["fan", "a"], "command": ["true"]},
            },
        }
        with cluster.client() as client:
            run = client.run_pipeline(definition).wait(180, check=True)
            status = run.status()
            ids = [j for s in status.steps.values() for j in [s.job, *s.jobs] if j]
            assert len(ids) == 4 + 30
            for job_id in ids:
                kinds = [e.kind for e in client.get(job_id).events]
                assert kinds.count("released") <= 1 and kinds.count("completed") == 1, kinds
            released = [j for j in ids if "released" in [e.kind for e in client.get(j).events]]
            assert len(released) == 3 + 30  # each step but the fan-out (it fans out), each item
            assert [e.kind for e in status.events].count("completed") == 1
    finally:
        cluster.stop()


def test_the_python_example_trains_on_two_declared_gpus_through_a_server(
    cluster: Cluster,
) -> None:
    cluster.start_agent("gpu", cpus=4, extra=("--gpus", "2xa100"))
    env = _server_env(cluster)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pipeline.py"), "--gpus", "2xa100"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for line in (
        "state: completed",
        "  train: completed",
        "  heavy: skipped",
        "  light: completed",
        "metrics: {'mse': 3.5e-05, 'good': True}",
        "train log: trained on 1000 rows with GPUs 0,1",
    ):
        assert line in done.stdout, done.stdout


def test_a_function_step_fans_out_and_a_call_reduces_it(local: Local) -> None:
    with Pipeline("mapreduce", client=local.client) as p:
        squares = p.call(
            "squares", sdkfuncs.square, args=(sandrun.item,), for_each="{{ range(6) }}"
        )
        p.call("total", sdkfuncs.total, args=(squares,), kwargs={"start": 1000})
    assert p.run is not None
    status = p.run.wait(120, check=True).status()
    assert status.steps["squares"].items == {"completed": 6}
    assert status.steps["squares"].result == [0, 1, 4, 9, 16, 25]
    assert status.steps["total"].result == 1055
    assert p.run.job("squares", 4).result() == 16
