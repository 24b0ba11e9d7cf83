"""Crashes lose nothing: accepted jobs survive kill -9, and a restarted agent finishes them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sandrun.agent.capacity import detect_capacity
from sandrun.client import connect
from sandrun.embedded import agent_running
from sandrun.home import Home
from sandrun.states import AttemptState, FailureReason, JobState
from tests.conftest import pid_gone
from tests.helpers import wait_for


def _start_agent(home: Home) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandrun.agent.local", "--home", str(home.root), "--idle-exit", "0"]
    )
    wait_for(lambda: agent_running(home), what="the agent to take its lock")
    return proc


def test_an_accepted_job_survives_kill_9_of_the_submitter(home: Home) -> None:
    program = (
        "import os, signal, sandrun\n"
        "from sandrun.embedded import open_service\n"
        "from sandrun.home import Home\n"
        f"service = open_service(Home.resolve({str(home.root)!r}))\n"
        "job = service.submit({'shell': 'echo survived'})\n"
        "print(job.id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    job_id = proc.stdout.strip()
    with connect(home=home.root) as client:
        job = client.get(job_id)
        assert job.record.state is JobState.PENDING
        # Nothing ran it yet; the next start of any sandrun process that needs an agent does.
        client.submit({"shell": "true"})
        assert job.wait(30).log_text() == "survived\n"


def test_jobs_accepted_before_kill_9_of_the_runner_finish_on_the_next_start(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unsandboxed, a job's first process dies with its agent (parent-death signal); what
    # it forked is the next agent's to kill (test_robustness). In a sandbox all of it dies
    # with the agent: see test_sandbox.
    monkeypatch.setenv("SANDRUN_SANDBOX", "none")
    agent = _start_agent(home)
    all_cpus = detect_capacity().cpus
    with connect(home=home.root) as client:
        # The first attempt hangs; a retry (attempt 2) finishes at once.
        running = client.submit(
            {
                "shell": '[ "$SANDRUN_ATTEMPT" = 1 ] && { echo $$ > pid; exec sleep 1000; }; '
                "echo done",
                "working_dir": str(tmp_path),
                "cpus": all_cpus,
            }
        )
        queued = client.submit({"shell": "echo queued", "cpus": all_cpus})
        wait_for(
            lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text(),
            what="the first job to start",
        )
        orphan = int((tmp_path / "pid").read_text())
        # Its start is reported on the way (with its end, for a short job): soon, not at once.
        wait_for(lambda: running.status is JobState.RUNNING, what="its start to be recorded")
        assert queued.status is JobState.PENDING

        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        assert running.status is JobState.RUNNING  # nothing reported it yet
        wait_for(lambda: pid_gone(orphan), what="the job to die with its agent")

        restarted = _start_agent(home)
        try:
            assert running.wait(30).record.state is JobState.COMPLETED
            assert queued.wait(30).log_text() == "queued\n"
            first, second = running.attempts
            assert (first.state, first.failure_reason) == (
                AttemptState.LOST,
                FailureReason.NODE_LOST,
            )
            assert second.state is AttemptState.COMPLETED
            assert running.record.retries_used == 0  # a lost node does not use up retries
            assert running.log_text() == "done\n"
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(30)


def test_sigterm_drains_running_jobs(home: Home, tmp_path: Path) -> None:
    agent = _start_agent(home)
    with connect(home=home.root) as client:
        gate = tmp_path / "gate"
        job = client.submit(
            {
                "shell": f"while [ ! -e {gate} ]; do sleep 0.01; done; echo drained",
                "working_dir": str(tmp_path),  # a sandboxed job sees only its own directories
            }
        )
        wait_for(lambda: job.status is JobState.RUNNING, what="the job to start")
        agent.send_signal(signal.SIGTERM)
        gate.touch()
        assert agent.wait(30) == 0
        assert job.refresh().record.state is JobState.COMPLETED
        assert job.log_text() == "drained\n"
    assert os.path.exists(home.db)
