"""The warm worker pool with real fork servers (no sandbox, so it runs anywhere): which
worker a job gets, and when idle ones go."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandrun.agent.jobenv import python_dir
from sandrun.agent.sandbox import FsView, open_sandboxing
from sandrun.agent.sandbox.cgroups import CgroupTree
from sandrun.agent.workers.pool import WorkerPool
from sandrun.spec import parse_spec
from tests.conftest import pid_gone
from tests.helpers import wait_for

SPEC = parse_spec({"shell": "true"})


def _counts(pool: WorkerPool) -> dict[str, int]:
    """How many workers exist, and how many of them are idle."""
    report = pool.report()
    return {"workers": report.workers, "idle": report.idle}


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[WorkerPool]:
    runs = tmp_path / "runs"
    runs.mkdir()
    sandboxing = open_sandboxing("none", FsView(), job_uids=False)
    workers = WorkerPool(sandboxing, runs, python_dir(runs), idle=60, max_idle=2)
    yield workers
    workers.close()


def test_an_owner_gets_back_its_own_idle_worker_and_no_one_elses(pool: WorkerPool) -> None:
    alice = pool.worker_for(SPEC, "alice")
    assert alice is not None
    pool.give_back(alice)
    bob = pool.worker_for(SPEC, "bob")
    assert bob is not None and bob is not alice
    assert pool.worker_for(SPEC, "alice") is alice
    networked = pool.worker_for(SPEC.model_copy(update={"network": True}), "alice")
    assert networked is not None and networked is not alice  # another sandbox shape
    for worker in (alice, bob, networked):
        pool.give_back(worker)


def test_a_job_needing_a_sandbox_of_its_own_gets_no_worker(pool: WorkerPool) -> None:
    gpu = parse_spec({"shell": "true", "gpus": 1})
    assert pool.worker_for(gpu, "alice") is None


def test_past_the_idle_cap_the_longest_idle_worker_goes(pool: WorkerPool) -> None:
    workers = [pool.worker_for(SPEC, owner) for owner in ("a", "b", "c")]
    assert all(workers)
    for worker in workers:
        assert worker is not None
        pool.give_back(worker)
    first = workers[0]
    assert first is not None
    assert not first.home.exists() and first.proc is not None
    first.proc.wait(10)
    assert _counts(pool) == {"workers": 2, "idle": 2}


def test_idle_workers_go_after_their_time_and_at_close(pool: WorkerPool) -> None:
    worker = pool.worker_for(SPEC, "alice")
    assert worker is not None
    pool.give_back(worker)
    server = worker.server
    assert not pid_gone(server)
    pool.idle = 0
    pool.retire_idle()
    assert pid_gone(server) and _counts(pool) == {"workers": 0, "idle": 0}
    again = pool.worker_for(SPEC, "alice")
    assert again is not None and again is not worker
    pool.give_back(again)
    pool.close()
    assert pid_gone(again.server)
    assert _counts(pool)["workers"] == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def timed(tmp_path: Path) -> Iterator[tuple[WorkerPool, Clock]]:
    runs = tmp_path / "runs"
    runs.mkdir()
    sandboxing = open_sandboxing("none", FsView(), job_uids=False)
    clock = Clock()
    workers = WorkerPool(sandboxing, runs, python_dir(runs), idle=60, max_idle=4, clock=clock)
    yield workers, clock
    workers.close()


def test_a_function_keeps_its_min_workers_while_its_calls_come_then_lets_them_go(
    timed: tuple[WorkerPool, Clock],
) -> None:
    pool, clock = timed
    kept = parse_spec({"shell": "true", "warm": {"min_workers": 2, "idle_timeout": 10}})
    worker = pool.worker_for(kept, "alice")
    assert worker is not None
    pool.give_back(worker)
    pool.keep_warm()  # one more, started ahead of the next call
    assert _counts(pool) == {"workers": 2, "idle": 2}
    [group] = pool.report().groups
    assert (group.owner, group.workers, group.min_workers, group.idle_timeout) == (
        "alice",
        2,
        2,
        10,
    )
    assert group.functions == [""]  # (a job with no name or `function` label)
    clock.now += 9  # a call comes before the idle timeout: both stay, past their idle time
    again = pool.worker_for(kept, "alice")
    assert again is not None
    pool.give_back(again)
    clock.now += 9
    pool.retire_idle()
    assert _counts(pool)["workers"] == 2
    clock.now += 2  # no call for 10 s: both go
    pool.retire_idle()
    assert _counts(pool) == {"workers": 0, "idle": 0} and pool.report().groups == []
    pool.keep_warm()  # and none is started again
    assert _counts(pool)["workers"] == 0


def test_past_its_min_workers_a_function_s_idle_workers_go_after_its_idle_timeout(
    timed: tuple[WorkerPool, Clock],
) -> None:
    pool, clock = timed
    kept = parse_spec({"shell": "true", "warm": {"min_workers": 1, "idle_timeout": 5}})
    first, second = pool.worker_for(kept, "alice"), pool.worker_for(kept, "alice")
    assert first is not None and second is not None
    pool.give_back(first)
    clock.now += 4
    pool.give_back(second)
    clock.now += 1  # the first idle for 5 s: past the one kept, it goes
    pool.retire_idle()
    assert _counts(pool) == {"workers": 1, "idle": 1}
    plain = pool.worker_for(SPEC, "bob")  # the agent's idle time (60 s) for the rest
    assert plain is not None
    pool.give_back(plain)
    clock.now += 30
    pool.retire_idle()
    assert [g.owner for g in pool.report().groups] == ["bob"]


def test_min_workers_never_start_past_the_idle_cap(timed: tuple[WorkerPool, Clock]) -> None:
    pool, _ = timed
    greedy = parse_spec({"shell": "true", "warm": {"min_workers": 8}})
    worker = pool.worker_for(greedy, "mallory")
    assert worker is not None
    pool.give_back(worker)
    pool.keep_warm()
    assert _counts(pool) == {"workers": 4, "idle": 4}  # max_idle


def test_a_key_keeps_what_any_of_its_functions_asks(timed: tuple[WorkerPool, Clock]) -> None:
    pool, clock = timed
    kept = {"warm": {"min_workers": 2, "idle_timeout": 30}, "labels": {"function": "embed"}}
    embed = parse_spec({"shell": "true"} | kept)
    other = parse_spec({"shell": "true", "labels": {"function": "other"}})
    for spec in (embed, other):  # one sandbox shape: their calls share workers
        worker = pool.worker_for(spec, "alice")
        assert worker is not None
        pool.give_back(worker)
    pool.keep_warm()
    [group] = pool.report().groups
    assert (group.functions, group.workers, group.min_workers) == (["embed", "other"], 2, 2)
    clock.now += 29  # `other` asks the agent's 60 s; `embed` keeps 2 for 30 s after its call
    pool.retire_idle()
    assert _counts(pool)["workers"] == 2


def test_an_idle_timeout_past_an_hour_is_kept_an_hour(timed: tuple[WorkerPool, Clock]) -> None:
    pool, _ = timed
    greedy = parse_spec({"shell": "true", "warm": {"idle_timeout": "3h"}})
    worker = pool.worker_for(greedy, "mallory")
    assert worker is not None
    pool.give_back(worker)
    [group] = pool.report().groups
    assert group.idle_timeout == 3600


def test_a_job_cgroup_with_a_task_still_in_it_is_not_reused() -> None:
    """A task of the last job, killed but not yet reaped, would count against the next
    job's process limit: such a cgroup is not reused (the job gets one of its own)."""
    tree = CgroupTree.detect(f"sandrun-reuse-{os.getpid()}")
    if tree is None:
        pytest.skip("this machine lets this process make no cgroup")
    group = tree.create("job", None, 10)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        group.attach(sleeper.pid)
        assert not group.reuse(None, 10)
    finally:
        sleeper.kill()
        sleeper.wait()
    wait_for(lambda: group.reuse(None, 10), what="the cgroup, empty, to be reusable")
    tree.release(group)
