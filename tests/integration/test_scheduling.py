"""Scheduling policy through a real server and agent: priorities, fair share between
owners, per-owner limits from `sandrun server --policy`, reservations that keep a stream of
small GPU jobs from starving a big one, and the server's price table."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandrun.client import Client, Job
from sandrun.errors import OverOwnerLimit
from sandrun.states import JobState
from tests.helpers import wait_for
from tests.integration.cluster import SANDRUN, Cluster
from tests.integration.conftest import Local

POLICY = """
limits:
  bob: {max_running_jobs: 1, max_gpus: 2}
prices:
  a100: 1.5
"""
HOLD = "sleep 60"  # jobs that hold their slot until the test cancels them


@pytest.fixture
def pool(tmp_path: Path, backend_db: str) -> Iterator[Cluster]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    policy = ("--policy", str(tmp_path / "policy.yaml"))
    cluster = Cluster(tmp_path, db=backend_db, server_args=policy)
    cluster.make_tokens()
    cluster.start_server()
    yield cluster
    cluster.stop()


def _running(jobs: dict[str, Job], count: int) -> set[str]:
    """The names of the jobs running once `count` of them are."""

    def started() -> set[str]:
        return {n for n, job in jobs.items() if job.refresh().record.state is JobState.RUNNING}

    wait_for(lambda: len(started()) >= count, timeout=60, what=f"{count} jobs to run")
    return started()


def _submit(client: Client, name: str, **fields: object) -> Job:
    return client.run(HOLD, name=name, upload_code=False, **fields)


def test_priority_then_fair_share_then_limits_pick_who_runs(pool: Cluster) -> None:
    with pool.client("alice") as alice, pool.client("bob") as bob:
        jobs = {name: _submit(alice, name) for name in ("a0", "a1", "a2", "a3")}
        jobs |= {name: _submit(bob, name) for name in ("b0", "b1")}
        jobs["urgent"] = _submit(alice, "urgent", priority="high")
        pool.start_agent("four", cpus=4)  # four one-CPU slots for seven jobs
        # urgent first (priority); then bob, who runs nothing, before alice (fair share);
        # then alice's oldest, since bob may run one job at a time (his limit).
        assert _running(jobs, 4) == {"urgent", "b0", "a0", "a1"}
        why = bob.why_pending(jobs["b1"].id)
        assert why is not None and "max_running_jobs 1" in why
        why = alice.why_pending(jobs["a2"].id)
        assert why is not None and why.startswith("waiting for room")
        jobs["b0"].cancel()  # bob's slot frees: his next job takes it, ahead of alice's
        _running({"b1": jobs["b1"]}, 1)
        assert jobs["a2"].refresh().record.state is JobState.PENDING


def test_a_big_gpu_job_is_not_starved_by_small_ones(pool: Cluster) -> None:
    pool.start_agent("gpus", cpus=8, extra=("--gpus", "2xa100-80gb"))
    with pool.client("alice") as alice:
        first = _submit(alice, "first", gpus="a100")
        _running({"first": first}, 1)
        (gpus,) = pool.nodes()
        assert (gpus.running, gpus.used_gpus, gpus.used_cpus) == (1, 1, 1)
        env = {**os.environ, "SANDRUN_URL": pool.url, "SANDRUN_TOKEN": pool.tokens["admin"]}
        listed = subprocess.run(
            [SANDRUN, "nodes", "--wide"], capture_output=True, text=True, env=env
        )
        assert "1/8" in listed.stdout and "1/2xa100 80GB" in listed.stdout
        assert "7 CPU" in listed.stdout and "1 GPU" in listed.stdout  # free
        big = alice.run("echo $CUDA_VISIBLE_DEVICES", name="big", gpus="2xa100", upload_code=False)
        small = [_submit(alice, f"small{i}", gpus="a100") for i in range(3)]
        wait_for(
            lambda: "kept for it" in (alice.why_pending(big.id) or ""),
            timeout=30,
            what="the node to reserve itself for the big job",
        )
        # The node backfills a CPU job (it fits beside the big one), not the GPU jobs that
        # came before it: each would delay the big job.
        cpu = _submit(alice, "cpu", cpus=2)
        _running({"cpu": cpu}, 1)
        assert [s.refresh().record.state for s in small] == [JobState.PENDING] * 3
        first.cancel()
        done = big.wait(60)
        assert done.record.state is JobState.COMPLETED
        assert done.log_text().strip() == "0,1"


def test_limits_and_prices_come_from_the_policy_file(pool: Cluster) -> None:
    pool.start_agent("gpus", cpus=2, extra=("--gpus", "2xa100-80gb"))
    with pool.client("bob") as bob:
        before = len(bob.jobs(limit=1000).jobs)
        with pytest.raises(OverOwnerLimit) as refused:
            bob.run("true", gpus="4xa100", upload_code=False)
        assert refused.value.field == "gpus" and "at most 2" in refused.value.message
        assert len(bob.jobs(limit=1000).jobs) == before
        prices = {i.name: i.price_per_hour for i in bob.find_instances()}
        assert prices == {"1xa100-80gb": 1.5, "2xa100-80gb": 3.0}


def test_a_bad_policy_file_stops_the_server_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("limits:\n  alice: {max_gpu: 2}\n")
    done = subprocess.run(
        [SANDRUN, "server", "--db", str(tmp_path / "s.db"), "--policy", str(bad)],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=60,
    )
    assert done.returncode != 0
    assert "limits.alice.max_gpu" in done.stderr and "max_gpus" in done.stderr


def test_embedded_mode_says_why_a_job_waits(local: Local) -> None:
    every_cpu = float(len(os.sched_getaffinity(0)))
    first = local.client.run(HOLD, cpus=every_cpu, upload_code=False)
    second = local.client.run(HOLD, cpus=every_cpu, upload_code=False)
    _running({"first": first}, 1)
    why = local.client.why_pending(second.id)
    assert why is not None and why.startswith("waiting for room on a node that can hold it")
    assert local.client.why_pending(first.id) is None
    for job in (first, second):
        job.cancel()
