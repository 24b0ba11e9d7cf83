"""The warm worker pool with real fork servers (no sandbox, so it runs anywhere): which
worker a job gets, and when idle ones go."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandrun.agent.jobenv import python_dir
from sandrun.agent.sandbox import FsView, open_sandboxing
from sandrun.agent.workers.pool import WorkerPool
from sandrun.spec import parse_spec
from tests.conftest import pid_gone

SPEC = parse_spec({"shell": "true"})


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
    assert pool.counts() == {"workers": 2, "idle": 2}


def test_idle_workers_go_after_their_time_and_at_close(pool: WorkerPool) -> None:
    worker = pool.worker_for(SPEC, "alice")
    assert worker is not None
    pool.give_back(worker)
    server = worker.server
    assert not pid_gone(server)
    pool.idle = 0
    pool.retire_idle()
    assert pid_gone(server) and pool.counts() == {"workers": 0, "idle": 0}
    again = pool.worker_for(SPEC, "alice")
    assert again is not None and again is not worker
    pool.give_back(again)
    pool.close()
    assert pid_gone(again.server)
    assert pool.counts()["workers"] == 0
