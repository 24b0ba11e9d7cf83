"""Preemption through a server (issue 25): a pending job of higher priority that fits no
node's free room has `preemptible` jobs of lower priority asked to checkpoint and stopped
to make room; they are queued again without using a retry and resume from what they
saved. A job that is not preemptible is never stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandrun.client import Job
from sandrun.errors import IllegalTransition
from sandrun.states import AttemptState, FailureReason, JobState
from tests.helpers import wait_for
from tests.integration.cluster import Cluster
from tests.integration.programs import COUNTER


@pytest.fixture
def pool(tmp_path: Path, backend_db: str) -> Iterator[Cluster]:
    (tmp_path / "policy.yaml").write_text("preempt_after: 0\n")
    policy = ("--policy", str(tmp_path / "policy.yaml"))
    cluster = Cluster(tmp_path, db=backend_db, server_args=policy, host_paths=True)
    cluster.make_tokens()
    cluster.start_server()
    cluster.start_agent("n1", cpus=2)
    yield cluster
    cluster.stop()


def _kinds(job: Job) -> list[str]:
    return [e.kind for e in job.events]


def test_a_preemptible_job_makes_room_and_resumes_from_its_checkpoint(
    pool: Cluster, tmp_path: Path
) -> None:
    progress = tmp_path / "progress"
    tmp_path.chmod(0o777)  # sandboxed jobs run as uids of their own when the agent is root
    with pool.client() as client:
        low = client.run(
            COUNTER,
            cpus=2,
            preemptible=True,
            env={"PROGRESS": str(progress)},
            working_dir=str(tmp_path),
        )
        wait_for(lambda: progress.exists() and int(progress.read_text() or 0) >= 3, what="steps")
        # First in line, but no node could ever hold it: it must not block the next one.
        huge = client.run("true", cpus=64, priority=20, upload_code=False)
        high = client.run("echo urgent", cpus=2, priority="high", upload_code=False)
        assert high.wait(60).record.state is JobState.COMPLETED
        assert low.wait(60).record.state is JobState.COMPLETED, low.record.message
        assert [a.state for a in low.attempts] == [
            AttemptState.CHECKPOINTED,  # it saved and left when asked
            AttemptState.COMPLETED,
        ]
        assert low.record.preemptions == 1 and low.record.retries_used == 0
        lines = low.log_text("stdout").splitlines()
        resumed_at = int(lines[1].split()[-1])
        assert lines[0] == "attempt 1 starts at 0" and resumed_at >= 3
        assert lines[-1] == f"count={resumed_at + 10}"
        assert "preempting" in _kinds(low) and "preempting" in _kinds(high)
        preempted = next(e for e in low.events if e.kind == "preempting")
        assert high.id in preempted.message and "n1" in preempted.message
        assert huge.refresh().status is JobState.PENDING and "preempting" not in _kinds(huge)
        huge.cancel()
        # high ran before low's second attempt started: the node was kept for it.
        started = high.attempts[0].started_at
        assert started is not None and started <= (low.attempts[1].started_at or 0)


def test_a_job_that_does_not_checkpoint_in_its_grace_is_stopped_and_queued_again(
    pool: Cluster,
) -> None:
    with pool.client() as client:
        low = client.run(
            "trap '' USR1; echo up; sleep 1000",
            cpus=2,
            preemptible=True,
            checkpoint={"grace": 5},
            upload_code=False,
        )
        wait_for(lambda: low.refresh().is_running, what="the low job to start")
        high = client.run("echo urgent", cpus=2, priority=10, upload_code=False)
        wait_for(lambda: "preempting" in _kinds(low), what="the low job to be asked")
        with pytest.raises(IllegalTransition, match="being preempted"):
            low.pause()  # it is leaving: no freezing it in place
        assert high.wait(60).record.state is JobState.COMPLETED
        first = low.attempts[0]
        assert first.state is AttemptState.PREEMPTED
        assert first.failure_reason is FailureReason.PREEMPTED
        assert "did not checkpoint" in (first.message or "")
        assert low.refresh().record.retries_used == 0  # queued again, nothing counted
        wait_for(lambda: len(low.attempts) == 2, what="its next attempt")
        low.cancel().wait(30)


def test_only_a_preemptible_job_is_stopped(pool: Cluster, tmp_path: Path) -> None:
    """Two full nodes, one running a job that is not preemptible and one a job that is: the
    job of higher priority has the second stopped, never the first."""
    gate = tmp_path / "gate"
    tmp_path.chmod(0o777)
    pool.start_agent("n2", cpus=2)
    with pool.client() as client:
        kept = client.run(
            f"while [ ! -e {gate} ]; do sleep 0.05; done; echo finished",
            cpus=2,
            working_dir=str(tmp_path),
        )
        wait_for(lambda: kept.refresh().is_running, what="the job that is not preemptible")
        yielding = client.run(
            "trap 'exit 85' USR1; while :; do sleep 0.05; done",
            cpus=2,
            preemptible=True,
            upload_code=False,
        )
        wait_for(lambda: yielding.refresh().is_running, what="the preemptible job")
        high = client.run("echo urgent", cpus=2, priority="high", upload_code=False)
        assert high.wait(60).record.state is JobState.COMPLETED
        assert high.attempts[0].node == yielding.attempts[0].node  # where room was made
        assert yielding.attempts[0].state is AttemptState.CHECKPOINTED
        gate.touch()
        assert kept.wait(30).record.state is JobState.COMPLETED
        assert [a.state for a in kept.attempts] == [AttemptState.COMPLETED]
        assert "preempting" not in _kinds(kept) and kept.record.preemptions == 0
        yielding.cancel().wait(30)
