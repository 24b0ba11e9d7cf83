"""Checkpoints (issue 25): a job saves into $SANDRUN_CHECKPOINT_DIR and exits 85; it is
queued again without using a retry, and its next attempt — on any node — starts with what
it saved. `sandrun checkpoint` asks for one now; `restore_from` starts a new job from
another's; the last `checkpoint.keep` are kept."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from sandrun.client import Job
from sandrun.errors import IllegalTransition, JobNotFoundError, NoCheckpoint
from sandrun.states import AttemptState, FailureReason, JobState
from tests.acceptance.conftest import SANDRUN
from tests.helpers import wait_for
from tests.integration.cluster import Cluster
from tests.integration.conftest import Local
from tests.integration.programs import COUNTER

# One step per attempt: it saves its count and exits 85 until the count is 5. At step 3
# it waits for `go` in the shared directory $W (the first time: the test kills its agent).
STEPPER = """
D="$SANDRUN_CHECKPOINT_DIR"
n=$(cat "$D/count" 2>/dev/null || echo 0)
n=$((n+1))
echo "attempt $SANDRUN_ATTEMPT step $n"
if [ "$n" -eq 3 ]; then touch "$W/at3"; while [ ! -e "$W/go" ]; do sleep 0.05; done; fi
echo "$n" > "$D/count"
if [ "$n" -lt 5 ]; then exit 85; fi
echo "count=$n"
"""


def _states(job: Job) -> list[AttemptState]:
    return [a.state for a in job.attempts]


def test_a_job_asked_to_checkpoint_saves_and_is_resumed_where_it_stopped(
    local: Local, tmp_path: Path
) -> None:
    job = local.client.run(COUNTER, working_dir=str(tmp_path))
    progress = tmp_path / "progress"  # where COUNTER says how far it got
    wait_for(lambda: progress.exists() and int(progress.read_text() or 0) >= 5, what="5 steps")
    assert job.checkpoint().record.state is JobState.RUNNING
    job.wait(60)
    assert job.record.state is JobState.COMPLETED, job.record.message
    assert _states(job) == [AttemptState.CHECKPOINTED, AttemptState.COMPLETED]
    first = job.attempts[0]
    assert first.failure_reason is FailureReason.CHECKPOINTED and first.exit_code == 85
    assert job.record.retries_used == 0 and job.record.infra_retries == 0
    lines = job.log_text("stdout").splitlines()
    resumed_at = int(lines[1].split()[-1])
    assert lines[0] == "attempt 1 starts at 0" and resumed_at >= 5
    assert lines[1] == f"attempt 2 starts at {resumed_at}"
    assert lines[-1] == f"count={resumed_at + 10}"
    [kept] = job.checkpoints()
    assert kept.attempt == 1 and kept.size > 0 and job.record.checkpoint == kept.digest
    kinds = [e.kind for e in job.events]
    assert kinds.index("checkpoint_requested") < kinds.index("checkpointed")

    # A new job starts from its checkpoint; another tenant's or a made-up job is no source.
    again = local.client.run(COUNTER, working_dir=str(tmp_path), restore_from=job.id).wait(60)
    assert again.log_text("stdout").splitlines()[0] == f"attempt 1 starts at {resumed_at}"
    assert [c.attempt for c in again.checkpoints()] == [0]
    with pytest.raises(JobNotFoundError, match="no job has id") as refused:
        local.client.run("true", restore_from="j-nope")
    assert refused.value.field == "restore_from"
    ended = local.client.run("true").wait(30)
    with pytest.raises(NoCheckpoint, match="has no checkpoint to restore from"):
        local.client.run("true", restore_from=ended.id)


def test_only_a_running_job_is_asked_to_checkpoint(local: Local) -> None:
    ended = local.client.run("true").wait(30)
    with pytest.raises(IllegalTransition, match="only a running job can checkpoint"):
        ended.checkpoint()
    assert "checkpoint_requested" not in [e.kind for e in ended.events]


def test_the_last_n_checkpoints_are_kept(local: Local) -> None:
    """A job that checkpoints by itself (exits 85 each step) five times keeps the last 2."""
    job = local.client.run(
        'D="$SANDRUN_CHECKPOINT_DIR"; n=$(cat "$D/n" 2>/dev/null || echo 0); n=$((n+1)); '
        'echo $n > "$D/n"; [ "$n" -lt 6 ] && exit 85; echo "done at $n"',
        checkpoint={"keep": 2},
    ).wait(60)
    assert job.record.state is JobState.COMPLETED
    assert _states(job) == [AttemptState.CHECKPOINTED] * 5 + [AttemptState.COMPLETED]
    assert job.log_text("stdout") == "done at 6\n"
    assert [c.attempt for c in job.checkpoints()] == [4, 5]


def test_a_checkpoint_holds_plain_files_only(local: Local) -> None:
    """A link the job leaves in its checkpoint directory is not saved: the next attempt
    finds only what the job wrote, never what a link pointed at."""
    job = local.client.run(
        'D="$SANDRUN_CHECKPOINT_DIR"; if [ "$SANDRUN_ATTEMPT" = 1 ]; then '
        'echo mine > "$D/own"; ln -s /etc/passwd "$D/link"; mkdir "$D/sub"; exit 85; fi; '
        'ls -A "$D"; cat "$D/own"'
    ).wait(60)
    assert job.record.state is JobState.COMPLETED, job.record.message
    assert job.log_text("stdout") == "own\nsub\nmine\n"


def test_a_job_resumes_from_its_checkpoint_on_another_agent_after_kill_9(
    cluster: Cluster, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # sandboxed jobs run as uids of their own when the agent is root
    agent_a = cluster.start_agent("a")
    with cluster.client() as client:
        job = client.run(STEPPER, env={"W": str(shared)}, working_dir=str(shared))
        wait_for(lambda: (shared / "at3").exists(), timeout=60, what="step 3 on agent a")
        os.killpg(agent_a.pid, signal.SIGKILL)
        agent_a.wait(30)
        (shared / "go").touch()
        cluster.start_agent("b")
        job.wait(120)
        assert job.record.state is JobState.COMPLETED, job.record.message
        assert job.log_text("stdout").splitlines()[-1] == "count=5"
        attempts = job.attempts
        assert [a.state for a in attempts] == [
            AttemptState.CHECKPOINTED,
            AttemptState.CHECKPOINTED,
            AttemptState.LOST,  # agent a, killed at step 3
            AttemptState.CHECKPOINTED,  # agent b, from a's checkpoint of step 2
            AttemptState.CHECKPOINTED,
            AttemptState.COMPLETED,
        ]
        assert [a.node.split("/")[0] for a in attempts] == ["a", "a", "a", "b", "b", "b"]
        # From step 2's checkpoint, not from scratch (attempt 3's log may have died with a).
        assert "attempt 4 step 3\n" in job.log_text("stdout")
        assert job.record.retries_used == 0 and job.record.infra_retries == 1


def test_checkpoint_through_a_server_and_its_cli(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agent("n1")
    env = {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": cluster.tokens["alice"]}

    def sandrun(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SANDRUN, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
        )

    tmp_path.chmod(0o777)
    with cluster.client() as client:
        job = client.run(COUNTER, working_dir=str(tmp_path))
        progress = tmp_path / "progress"
        wait_for(lambda: progress.exists() and int(progress.read_text() or 0) >= 3, what="steps")
        asked = sandrun("checkpoint", job.id)
        assert asked.returncode == 0 and "SIGUSR1" in asked.stderr, asked.stderr
        job.wait(60)
        assert job.record.state is JobState.COMPLETED
        listed = sandrun("checkpoints", job.id)
        assert listed.returncode == 0
        [row] = listed.stdout.splitlines()[1:]
        assert row.split()[0] == "1" and job.record.checkpoint in row
        again = sandrun(
            "submit", "--restore-from", job.id, "--preemptible", "--no-upload", "--", "true"
        )
        assert again.returncode == 0, again.stderr
        spec = client.get(again.stdout.strip()).record.spec
        assert (spec.restore_from, spec.preemptible) == (job.id, True)
        with cluster.client("bob") as bob:  # another tenant's job is no job at all
            with pytest.raises(JobNotFoundError):
                bob.transport.checkpoints(job.id)
            with pytest.raises(JobNotFoundError):
                bob.transport.checkpoint(job.id)
            with pytest.raises(JobNotFoundError, match="no job has id") as refused:
                bob.run("true", restore_from=job.id, upload_code=False)
            assert refused.value.field == "restore_from"
            assert bob.jobs().jobs == []  # nothing was recorded


def test_the_checkpoint_directory_is_not_in_the_scratch_but_counts_on_its_disk(
    local: Local, tmp_path: Path
) -> None:
    """It sits beside the scratch (its HOME, and often its working directory: no `ls -A`
    or `**` output finds it there), and what a job writes in it counts against
    `limits.disk` as its scratch does."""
    seen = local.client.run(
        'ls -A "$HOME"; case "$SANDRUN_CHECKPOINT_DIR" in "$HOME"/*) exit 3;; esac',
        working_dir=str(tmp_path),
    )
    assert seen.wait(30).record.state is JobState.COMPLETED
    assert seen.log_text("stdout") == ""
    full = local.client.run(
        'for f in a b; do head -c 12582912 /dev/zero > "$SANDRUN_CHECKPOINT_DIR/$f"; done; '
        "sleep 30",  # 24 MB in two files, each under the file-size limit the disk sets
        limits={"disk": "16MB"},
        working_dir=str(tmp_path),
    ).wait(60)
    assert full.record.failure_reason is FailureReason.DISK_LIMIT


def test_a_batch_names_the_job_whose_restore_from_is_refused(local: Local) -> None:
    with pytest.raises(JobNotFoundError) as refused:
        local.client.submit_many([{"shell": "true"}, {"shell": "true", "restore_from": "nope"}])
    assert refused.value.field == "jobs.1.restore_from"
    assert local.client.jobs().jobs == []  # nothing was recorded
