"""Real subprocesses through the real local agent: exit codes, logs, env, scripts."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from sandrun.states import AttemptState, FailureReason, JobState
from tests.integration.conftest import Local

PY = sys.executable


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_exit_codes_pass_through(local: Local, code: int) -> None:
    job = local.client.run(f"exit {code}").wait(30)
    assert job.exit_code == code
    assert job.record.state is (JobState.COMPLETED if code == 0 else JobState.FAILED)
    if code:
        assert job.record.failure_reason is FailureReason.EXIT_CODE


def test_each_stream_arrives_complete_and_in_order(local: Local) -> None:
    program = (
        "import sys\n"
        "for i in range(2000):\n"
        "    sys.stdout.write(f'out {i}\\n'); sys.stdout.flush()\n"
        "    if i % 3 == 0: sys.stderr.write(f'err {i}\\n'); sys.stderr.flush()\n"
    )
    job = local.client.run([PY, "-c", program]).wait(60)
    assert job.record.state is JobState.COMPLETED
    assert job.log_text("stdout") == "".join(f"out {i}\n" for i in range(2000))
    assert job.log_text("stderr") == "".join(f"err {i}\n" for i in range(0, 2000, 3))
    seqs = [c.seq for c in job.chunks()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_a_job_printing_50_mb_arrives_whole(local: Local) -> None:
    line = b"x" * 1023 + b"\n"
    count = 50 * 1024  # 50 MiB
    program = (
        "import sys\n"
        f"line = b'x' * 1023 + b'\\n'\n"
        f"for i in range({count}): sys.stdout.buffer.write(line)\n"
    )
    job = local.client.run([PY, "-c", program]).wait(120)
    assert job.record.state is JobState.COMPLETED
    digest = hashlib.sha256()
    size = 0
    for chunk in job.chunks():
        assert chunk.stream == "stdout"
        digest.update(chunk.data)
        size += len(chunk.data)
    assert size == len(line) * count
    assert digest.hexdigest() == hashlib.sha256(line * count).hexdigest()


def test_logs_can_be_followed_while_the_job_runs(local: Local, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    program = (
        "import os, time\n"
        "print('before', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
        "print('after', flush=True)\n"
    )
    job = local.client.run([PY, "-c", program], working_dir=str(tmp_path))
    lines = job.logs(follow=True)
    assert next(lines) == "before"  # arrives while the job still waits on the gate
    assert job.is_running and not job.is_terminal
    gate.touch()
    assert list(lines) == ["after"]
    assert job.wait(30).record.state is JobState.COMPLETED


def test_the_job_sees_only_its_declared_environment(
    local: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_SECRET", "do-not-leak")
    job = local.client.run("env; test -d $HOME && echo HOME_IS_DIR=1", env={"MINE": "yes"})
    env = dict(line.split("=", 1) for line in job.wait(30).log_text().splitlines())
    assert "AGENT_SECRET" not in env
    assert env["MINE"] == "yes"
    assert env["SANDRUN_JOB_ID"] == job.id
    assert env["SANDRUN_ATTEMPT"] == "1"
    assert env["HOME_IS_DIR"] == "1"
    assert not Path(env["HOME"]).exists()  # the attempt's scratch went when it ended


def test_jobs_run_in_their_working_dir(local: Local, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("hello from the workdir")
    job = local.client.run("cat data.txt", working_dir=str(tmp_path)).wait(30)
    assert job.log_text() == "hello from the workdir"


def test_scripts_run_with_their_interpreter(local: Local) -> None:
    job = local.client.run({"script": "echo $0 $((6 * 7))", "interpreter": "bash"}).wait(30)
    assert job.log_text().split()[-1] == "42"
    py = local.client.run({"script": "import sys\nprint(sys.version_info[0])"}).wait(30)
    assert py.log_text() == "3\n"


def test_a_missing_program_is_a_spawn_error(local: Local) -> None:
    job = local.client.run(["no-such-program-anywhere"]).wait(30)
    assert job.record.state is JobState.FAILED
    assert job.record.failure_reason is FailureReason.SPAWN_ERROR
    assert job.record.exit_code == 127
    assert "no-such-program-anywhere" in (job.record.message or "")


def test_a_missing_working_dir_fails_clearly(local: Local, tmp_path: Path) -> None:
    job = local.client.run("true", working_dir=str(tmp_path / "gone")).wait(30)
    assert job.record.failure_reason is FailureReason.SPAWN_ERROR
    assert "is not a directory" in (job.record.message or "")


def test_resource_use_is_recorded(local: Local) -> None:
    program = "x = bytearray(64 * 1024 * 1024); sum(range(3_000_000))"
    job = local.client.run([PY, "-c", program]).wait(60)
    [attempt] = job.attempts
    assert attempt.state is AttemptState.COMPLETED
    usage = attempt.usage
    assert usage.max_rss_mb is not None and usage.max_rss_mb >= 64
    assert usage.cpu_seconds is not None and usage.cpu_seconds > 0
    assert usage.wall_seconds is not None and usage.wall_seconds >= usage.cpu_seconds * 0.5


def test_a_killed_job_reports_the_signal(local: Local) -> None:
    job = local.client.run("kill -9 $$").wait(30)
    assert job.record.failure_reason is FailureReason.SIGNALED
    assert job.record.exit_code == 137
    assert "SIGKILL" in (job.record.message or "")
