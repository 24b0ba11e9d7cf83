"""GPU placement with agents that declare their GPUs (`sandrun agent --gpus 2xa100-80gb`):
jobs land where their model, count and memory fit, and get GPU indices of their own."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sandrun.client import Job
from sandrun.states import JobState
from tests.helpers import wait_for
from tests.integration.cluster import SANDRUN, Cluster


@pytest.fixture
def gpu_pool(cluster: Cluster) -> Cluster:
    cluster.start_agent("big", cpus=4, extra=("--gpus", "2xa100-80gb"))
    cluster.start_agent("small", cpus=2, extra=("--gpus", "1xt4"))
    return cluster


def _ran(job: Job) -> tuple[str, str]:
    """(the node it ran on, what it printed)."""
    done = job.wait(60)
    assert done.record.state is JobState.COMPLETED, done.log_text()
    return done.attempts[-1].node.split("/")[0], done.log_text().strip()


def test_jobs_land_where_their_gpus_fit(gpu_pool: Cluster) -> None:
    show = "echo $CUDA_VISIBLE_DEVICES"
    nodes = {n.name: n for n in gpu_pool.nodes()}
    assert (nodes["big"].capacity.gpus, nodes["big"].capacity.gpu_type) == (2, "a100")
    assert nodes["big"].capacity.gpu_memory_gb == 80
    env = {**os.environ, "SANDRUN_URL": gpu_pool.url, "SANDRUN_TOKEN": gpu_pool.tokens["alice"]}

    def cli(*args: str) -> str:
        done = subprocess.run([SANDRUN, *args], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = cli("nodes")
    assert "2xa100 80GB" in listed and "1xt4 16GB" in listed
    # What the operator declared is shown beside what the hardware showed.
    assert nodes["small"].detected is not None
    assert "small: declared" in listed and "1xt4 16GB (detected " in listed
    with gpu_pool.client() as client:
        two = client.run(show, gpus="2xa100", upload_code=False)
        t4 = client.run(show, gpus="t4", upload_code=False)
        roomy = client.run(show, gpus={"count": 1, "memory_gb": 40}, upload_code=False)
        too_big = client.run(show, gpus="8xh100", upload_code=False)
        assert _ran(two) == ("big", "0,1")
        assert _ran(t4) == ("small", "0")
        assert _ran(roomy)[0] == "big"  # a t4 has 16 GB
        assert too_big.refresh().record.state is JobState.PENDING  # fits no node
        why = client.why_pending(too_big.id)
        assert why is not None and why.startswith("fits no registered node: needs")
        assert "8xh100" in why and "the largest node (big) has" in why
        assert "fits no registered node" in cli("status", too_big.id)

        offered = {i.name: i for i in client.find_instances(min_gpu_memory_gb=40)}
        assert sorted(offered) == ["1xa100-80gb", "2xa100-80gb"]
        assert offered["2xa100-80gb"].price_per_hour == 2 * offered["1xa100-80gb"].price_per_hour
        cheap = [i.name for i in client.find_instances(max_price=1)]
        assert cheap == ["1xt4-16gb"]
        ran = cli("run", "--no-upload", "--min-gpu-memory", "40", "--json", "--", "true")
        assert client.get(json.loads(ran)["id"]).attempts[-1].node.startswith("big/")
        listed = cli("instances", "--min-gpu-memory", "40")
        assert "2xa100-80gb" in listed and "t4" not in listed


def test_two_one_gpu_jobs_share_a_two_gpu_node(gpu_pool: Cluster, tmp_path: Path) -> None:
    shared = tmp_path / "gate"
    shared.mkdir()
    shared.chmod(0o777)  # sandboxed jobs run as uids of their own when the agent is root
    held = "echo $CUDA_VISIBLE_DEVICES; while [ ! -e go ]; do sleep 0.05; done"
    with gpu_pool.client() as client:
        jobs = [
            client.run(held, gpus="a100", upload_code=False, working_dir=str(shared))
            for _ in range(2)
        ]
        # Both run at once (each holds at its gate until the other runs too).
        wait_for(lambda: all(j.refresh().is_running for j in jobs), timeout=60, what="both")
        (shared / "go").touch()
        ran = [_ran(job) for job in jobs]
    assert [node for node, _ in ran] == ["big", "big"]
    assert sorted(index for _, index in ran) == ["0", "1"]  # each its own GPU


def test_an_agent_refuses_an_unknown_gpu_model(cluster: Cluster) -> None:
    agent = subprocess.run(
        [SANDRUN, "agent", "--server", cluster.url, "--gpus", "4xtpu"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SANDRUN_TOKEN": cluster.tokens["agents"]},
    )
    assert agent.returncode == 2
    assert "GPU 'tpu' is not one sandrun knows" in agent.stderr


def test_a_job_can_require_node_labels(cluster: Cluster) -> None:
    cluster.start_agent("east", extra=("--label", "pool=gpu-east"))
    cluster.start_agent("west", extra=("--label", "pool=gpu-west"))
    env = {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": cluster.tokens["alice"]}
    for _ in range(3):
        ran = subprocess.run(
            [SANDRUN, "run", "--no-upload", "--require", "pool=gpu-east", "--json", "--", "true"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert ran.returncode == 0, ran.stderr
        with cluster.client() as client:
            assert client.get(json.loads(ran.stdout)["id"]).attempts[-1].node.startswith("east/")
    with cluster.client() as client:
        nowhere = client.run("true", requires={"pool": "gpu-north"}, upload_code=False)
        assert client.run("true", upload_code=False).wait(60).record.state is JobState.COMPLETED
        assert nowhere.refresh().record.state is JobState.PENDING
        why = client.why_pending(nowhere.id) or ""
        assert "fits no registered node: needs 1 CPUs, pool=gpu-north" in why
