"""Timeouts, cancel, retries and outputs, through the real local agent."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from sandrun.agent.local import LocalAgent
from sandrun.client import connect
from sandrun.errors import ServerUnreachable
from sandrun.home import Home
from sandrun.models import Capacity, Claim, JobRecord
from sandrun.service import Service
from sandrun.spec import JobSpec
from sandrun.spec.base import STORED
from sandrun.states import AttemptState, FailureReason, JobState
from tests.helpers import wait_for
from tests.integration.conftest import Local

# A job that ignores SIGTERM and leaves children behind: one in its process group that
# also ignores SIGTERM, and one that moved to a session of its own (setsid).
# The children are found on the host by their command lines (inside its PID namespace
# the job's own pids mean nothing out here).
MARK = f"{os.getpid() % 100000}"  # this run's own: a concurrent run's are not ours
STUBBORN = f"""
trap '' TERM
sh -c 'trap "" TERM; exec sleep 1001.{MARK}' &
setsid sleep 1002.{MARK} &
echo ready
sleep 1000
"""
CHILDREN = (["sleep", f"1001.{MARK}"], ["sleep", f"1002.{MARK}"])


def _children() -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] in CHILDREN and p.status() != psutil.STATUS_ZOMBIE
    ]


def test_a_timeout_kills_the_whole_tree_even_if_it_ignores_sigterm(
    local: Local, tmp_path: Path
) -> None:
    job = local.client.run(STUBBORN, timeout=1, working_dir=str(tmp_path)).wait(30)
    assert job.record.state is JobState.FAILED
    assert job.record.failure_reason is FailureReason.TIMEOUT
    assert job.record.exit_code == 137  # it took the SIGKILL
    assert "timed out after 1.0s" in (job.record.message or "")
    wait_for(lambda: not _children(), timeout=10, what="its children to die")


def test_cancel_kills_a_running_jobs_children(local: Local, tmp_path: Path) -> None:
    job = local.client.run(STUBBORN, working_dir=str(tmp_path))
    wait_for(lambda: len(_children()) == 2, what="the job to start its children")
    wait_for(lambda: job.status is JobState.RUNNING, what="its start to be recorded")
    job.cancel()
    job.wait(30)
    assert job.record.state is JobState.CANCELLED
    assert job.record.failure_reason is FailureReason.CANCELLED
    assert [a.state for a in job.attempts] == [AttemptState.CANCELLED]
    wait_for(lambda: not _children(), timeout=10, what="its children to die")
    assert "cancel_requested" in [e.kind for e in job.events]


def test_cancel_of_a_pending_job_is_immediate(local: Local) -> None:
    # Fails once, then waits an hour for its retry: pending, with no agent involved.
    job = local.client.run("exit 1", retries={"limit": 1, "backoff": 3600})
    wait_for(lambda: job.refresh().record.retries_used == 1, what="the first attempt to fail")
    assert job.record.state is JobState.PENDING
    assert job.cancel().record.state is JobState.CANCELLED
    assert [e.kind for e in job.events][-1] == "cancelled"


def test_retries_happen_with_backoff_and_each_attempt_is_visible(local: Local) -> None:
    job = local.client.run("exit 3", retries={"limit": 2, "backoff": 0.2, "factor": 2})
    job.wait(30)
    assert job.record.state is JobState.FAILED and job.record.exit_code == 3
    attempts = job.attempts
    assert [a.number for a in attempts] == [1, 2, 3]
    assert all(a.state is AttemptState.FAILED and a.exit_code == 3 for a in attempts)
    gaps = [
        b.scheduled_at - a.finished_at  # type: ignore[operator]
        for a, b in itertools.pairwise(attempts)
    ]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # exponential backoff
    kinds = [e.kind for e in job.events]
    assert kinds.count("retrying") == 2 and kinds[-1] == "failed"


def test_a_retry_that_succeeds_completes_the_job(local: Local) -> None:
    job = local.client.run(
        '[ "$SANDRUN_ATTEMPT" = 2 ] && echo ok || exit 9', retries={"limit": 3, "backoff": 0.05}
    ).wait(30)
    assert job.record.state is JobState.COMPLETED and job.record.attempts == 2
    assert job.log_text() == "ok\n"


def test_outputs_are_collected_and_downloaded_byte_identical(local: Local, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "secret").write_text("outside the workdir")
    program = (
        "import os\n"
        "os.makedirs('results/deep', exist_ok=True)\n"
        "open('model.pt', 'wb').write(os.urandom(300_000))\n"
        "open('results/a.csv', 'w').write('a,b\\n1,2\\n')\n"
        "open('results/deep/b.bin', 'wb').write(bytes(range(256)) * 99)\n"
        "open('ignored.log', 'w').write('not an output')\n"
        "os.symlink('../secret', 'leak.pt')\n"
    )
    job = local.client.run(
        [sys.executable, "-c", program],
        working_dir=str(work),
        outputs=["*.pt", "results", "../secret"],
    ).wait(30)
    assert job.record.state is JobState.COMPLETED
    paths = sorted(o.path for o in job.outputs)
    assert paths == ["model.pt", "results/a.csv", "results/deep/b.bin"]
    assert job.read_text("results/a.csv") == "a,b\n1,2\n"
    dest = tmp_path / "downloaded"
    job.download(dest)
    for path in paths:
        assert (dest / path).read_bytes() == (work / path).read_bytes()
    assert not (dest / "leak.pt").exists()


def test_outputs_are_kept_for_failed_attempts_too(local: Local, tmp_path: Path) -> None:
    job = local.client.run(
        "echo partial > out.txt; exit 1", working_dir=str(tmp_path), outputs=["out.txt"]
    ).wait(30)
    assert job.record.state is JobState.FAILED
    assert job.read_text("out.txt") == "partial\n"


def test_concurrent_jobs_each_get_their_own_scratch_dir(local: Local) -> None:
    script = "pwd; echo $HOME; touch mine && ls mine"
    jobs = [local.client.run(script, cpus=0.25) for _ in range(4)]
    dirs = set()
    for job in jobs:
        job.wait(30)
        work, home, mine = job.log_text().split()
        assert mine == "mine"
        assert home == work  # the scratch dir is the job's HOME too
        assert not os.path.exists(work)  # and it went when the attempt ended
        dirs.add(work)
    assert len(dirs) == 4


def test_heartbeats_keep_a_job_that_outlives_its_lease(home: Home, tmp_path: Path) -> None:
    agent = LocalAgent(home, idle_exit=None, kill_grace=0.5, lease_seconds=0.6)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        with connect(home=home.root) as client:
            job = client.run("sleep 2; echo still mine")
            # Reap expired leases from outside the agent, as another server would.
            wait_for(
                lambda: agent.service.expire_leases() == [] and job.is_terminal,
                timeout=30,
                what="the job to end",
            )
            assert job.record.state is JobState.COMPLETED
            assert [a.state for a in job.attempts] == [AttemptState.COMPLETED]
            assert job.log_text() == "still mine\n"
    finally:
        agent.stop()
        thread.join(30)


class _LosesFirstClaimReply:
    """The embedded control plane, except that the first claim's reply is lost after the
    claim was committed (as when a server is killed between the two)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.lost: list[Claim] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service, name)

    def claim(self, node: str, free: Capacity, wait: float = 0.0) -> Claim | None:
        got = self.service.claim(node, free, wait)
        if got is not None and not self.lost:
            self.lost.append(got)
            raise ServerUnreachable("the reply was lost")
        return got


def test_an_agent_gives_back_a_claim_whose_reply_it_never_got(home: Home) -> None:
    """Not after a lease as node_lost: at its next heartbeat, with no retry counted."""
    agent = LocalAgent(home, idle_exit=None, kill_grace=0.5, lease_seconds=6.0)
    control = _LosesFirstClaimReply(agent.service)
    agent.agent.control = control
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        with connect(home=home.root) as client:
            job = client.submit({"shell": "echo second try"}).wait(60)
            attempts = job.attempts
            assert job.log_text() == "second try\n"
    finally:
        agent.stop()
        thread.join(30)
    assert [c.job.id for c in control.lost] == [job.id]
    assert job.record.state is JobState.COMPLETED
    assert (job.record.retries_used, job.record.infra_retries) == (0, 0)
    assert [a.state for a in attempts] == [AttemptState.LOST, AttemptState.COMPLETED]
    assert attempts[0].message == "handed back unstarted: node local never received the claim"


def test_a_job_the_kernel_cannot_exec_fails_once_as_a_spawn_error(home: Home) -> None:
    """Submit refuses such a job; one stored before that rule fails as the job's own
    spawn error, not as an internal fault retried on every node."""
    agent = LocalAgent(home, idle_exit=None, kill_grace=0.5)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        env = {"BIG": "x" * (200 << 10)}  # past the kernel's 128 KiB for one variable
        spec = JobSpec.model_validate({"shell": "true", "env": env}, context=STORED)
        plain = JobRecord.submitted(JobSpec(shell="true"), "local", time.time())
        record = plain.model_copy(update={"spec": spec})  # as stored before the rule
        agent.service.store.insert_job(record)
        agent.waker.wake("submitted")
        with connect(home=home.root) as client:
            job = client.get(record.id).wait(60)
            attempts = job.attempts
    finally:
        agent.stop()
        thread.join(30)
    assert job.record.state is JobState.FAILED
    assert job.record.infra_retries == 0 and len(attempts) == 1
    assert attempts[0].failure_reason is FailureReason.SPAWN_ERROR
    assert "too large" in (attempts[0].message or "")
