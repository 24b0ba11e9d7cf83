"""Pause and resume (`sandrun pause` / `resume`, issue 25): a paused job's processes are
frozen on its node and use no CPU, its timeout stops counting, and it runs on once
resumed; embedded, and through a server with a remote agent and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from sandrun.client import Job
from sandrun.errors import IllegalTransition, JobNotFoundError
from sandrun.states import AttemptState, FailureReason, JobState
from tests.acceptance.conftest import SANDRUN
from tests.helpers import wait_for
from tests.integration.cluster import Cluster
from tests.integration.conftest import Local

BUSY = "while :; do :; done"  # a shell spinning on a CPU until stopped


def _cpu_seconds(job: Job) -> float:
    """CPU time used so far by the job's processes (its attempt's tree, seen from here)."""
    pid = job.attempts[-1].pid
    assert pid is not None
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _kinds(job: Job) -> list[str]:
    return [e.kind for e in job.events]


def _paused_and_frozen(job: Job) -> None:
    record = job.pause().record
    assert record.state is JobState.PAUSED
    assert "stays held until it is resumed or cancelled" in (record.message or "")
    wait_for(lambda: "frozen" in _kinds(job), timeout=30, what="its agent to freeze it")
    before = _cpu_seconds(job)
    time.sleep(0.5)  # a window to measure in, not a wait for anything
    assert _cpu_seconds(job) - before < 0.05  # it spun for none of it


def test_a_paused_job_uses_no_cpu_and_runs_on_when_resumed(local: Local) -> None:
    job = local.client.run(BUSY)
    wait_for(lambda: job.refresh().is_running, what="the job to start")
    wait_for(lambda: _cpu_seconds(job) > 0.2, what="it to spin")
    _paused_and_frozen(job)
    assert job.refresh().status is JobState.PAUSED

    assert job.resume().record.state is JobState.RUNNING
    wait_for(lambda: "thawed" in _kinds(job), timeout=30, what="its agent to thaw it")
    spun = _cpu_seconds(job)
    wait_for(lambda: _cpu_seconds(job) > spun + 0.2, what="it to spin again")
    kinds = _kinds(job)
    assert kinds.index("paused") < kinds.index("frozen") < kinds.index("resumed")

    # Paused again, then cancelled: a frozen tree is thawed to take its kill.
    _paused_and_frozen(job)
    job.cancel().wait(30)
    assert job.record.state is JobState.CANCELLED
    assert [a.state for a in job.attempts] == [AttemptState.CANCELLED]


def test_time_spent_paused_does_not_count_toward_the_timeout(local: Local, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = local.client.run(
        f"while [ ! -e {gate} ]; do sleep 0.05; done; echo finished",
        timeout=3,
        working_dir=str(tmp_path),
    )
    wait_for(lambda: job.refresh().is_running, what="the job to start")
    job.pause()
    wait_for(lambda: "frozen" in _kinds(job), timeout=30, what="its agent to freeze it")
    time.sleep(3.5)  # paused past its whole timeout: that time is not the job's
    gate.touch()
    job.resume().wait(30)
    assert job.record.state is JobState.COMPLETED, job.record.message
    assert job.log_text() == "finished\n"


def test_only_a_running_job_pauses_and_only_a_paused_one_resumes(local: Local) -> None:
    waiting = local.client.run("exit 1", retries={"limit": 1, "backoff": 3600})
    wait_for(lambda: waiting.refresh().record.retries_used == 1, what="its first attempt")
    with pytest.raises(IllegalTransition, match="only a running job can be paused") as refused:
        waiting.pause()
    assert refused.value.field == "job_id"
    assert waiting.refresh().status is JobState.PENDING  # refused: nothing changed
    assert "paused" not in _kinds(waiting)

    running = local.client.run(BUSY)
    wait_for(lambda: running.refresh().is_running, what="the job to start")
    with pytest.raises(IllegalTransition, match="not paused; there is nothing to resume"):
        running.resume()
    running.pause()
    with pytest.raises(IllegalTransition, match="paused already"):
        running.pause()
    assert _kinds(running).count("paused") == 1
    running.cancel().wait(30)

    ended = local.client.run("true").wait(30)
    with pytest.raises(IllegalTransition, match="it has ended"):
        ended.pause()
    waiting.cancel()


def test_pause_through_a_server_and_its_cli(cluster: Cluster, tmp_path: Path) -> None:
    """A remote agent freezes and thaws on its heartbeat; the CLI pauses and resumes; the
    job's events say what happened on which node."""
    cluster.start_agent("n1")
    env = {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": cluster.tokens["alice"]}

    def sandrun(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SANDRUN, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
        )

    with cluster.client() as client:
        job = client.run(BUSY)
        wait_for(lambda: job.refresh().is_running, what="the job to start")
        paused = sandrun("pause", job.id)
        assert paused.returncode == 0, paused.stderr
        assert "stays held" in paused.stderr and "n1" in paused.stderr
        wait_for(lambda: "frozen" in _kinds(job), timeout=30, what="the agent to freeze it")
        frozen = next(e for e in job.events if e.kind == "frozen")
        assert frozen.message.startswith("its processes are frozen on n1")
        status = json.loads(sandrun("status", job.id, "--json").stdout)
        assert status["state"] == "paused"

        resumed = sandrun("resume", job.id)
        assert resumed.returncode == 0 and "resumed" in resumed.stderr
        wait_for(lambda: "thawed" in _kinds(job), timeout=30, what="the agent to thaw it")
        again = sandrun("resume", job.id)
        assert again.returncode != 0 and "nothing to resume" in again.stderr
        job.cancel().wait(30)
        assert job.record.failure_reason is FailureReason.CANCELLED


def test_another_tenant_cannot_pause_or_resume_a_job(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    with cluster.client("alice") as alice, cluster.client("bob") as bob:
        job = alice.run(BUSY)
        wait_for(lambda: job.refresh().is_running, what="the job to start")
        for call in (bob.transport.pause, bob.transport.resume):
            with pytest.raises(JobNotFoundError):
                call(job.id)
        assert "paused" not in _kinds(job) and job.refresh().status is JobState.RUNNING
        job.cancel().wait(30)
