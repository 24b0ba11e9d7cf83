"""The `sandrun` command, as typed by a user, against the embedded default."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.conftest import SANDRUN, Cli, as_json
from tests.helpers import make_git_repo, wait_for


def test_run_streams_output_and_exits_zero(cli: Cli) -> None:
    proc = cli("run", "--", "sh", "-c", "echo hello; echo oops >&2")
    assert proc.returncode == 0
    assert proc.stdout == "hello\n"
    assert "oops" in proc.stderr and "completed" in proc.stderr


@pytest.mark.parametrize("code", [1, 7, 200])
def test_run_exits_with_the_jobs_exit_code(cli: Cli, code: int) -> None:
    proc = cli("run", "--", "sh", "-c", f"exit {code}")
    assert proc.returncode == code
    assert f"exited with code {code}" in proc.stderr


def test_run_exits_124_on_timeout(cli: Cli) -> None:
    proc = cli("run", "--timeout", "1", "--", "sleep", "30")
    assert proc.returncode == 124
    assert "timed out after 1.0s" in proc.stderr


def test_ctrl_c_cancels_the_job_and_exits_130(cli: Cli, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [SANDRUN, "run", "--", "sh", "-c", "echo started; exec sleep 1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background ignores SIGINT, and
        # its children would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "started\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    [job] = as_json(cli("jobs", "--json"))
    assert job["state"] == "cancelled"


def test_run_in_the_current_directory_with_the_callers_path(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "cwd" / "train.py").write_text("import os; print('trained in', os.getcwd())")
    proc = cli("run", "--", "python3", "train.py")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"trained in {tmp_path / 'cwd'}\n"


def test_run_a_yaml_spec_and_download_its_outputs(cli: Cli, tmp_path: Path) -> None:
    spec = tmp_path / "cwd" / "job.yaml"
    spec.write_text(
        "name: report\n"
        'shell: mkdir -p out && echo "$GREETING" > out/report.txt && echo done\n'
        "env: {GREETING: hi there}\n"
        "outputs: [out]\n"
        "timeout: 1m\n"
    )
    proc = cli("run", "-f", "job.yaml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    [job] = as_json(cli("jobs", "--json"))
    assert job["name"] == "report"
    listed = as_json(cli("outputs", job["id"], "--json"))
    assert [f["path"] for f in listed] == ["out/report.txt"]
    dest = tmp_path / "dl"
    assert cli("outputs", job["id"], "--download", str(dest)).returncode == 0
    assert (dest / "out" / "report.txt").read_text() == "hi there\n"


def test_submit_then_watch_with_every_command(cli: Cli, tmp_path: Path) -> None:
    gate = tmp_path / "cwd" / "gate"  # in the job's working directory: all it may see
    job_id = cli(
        "submit",
        "--name",
        "watched",
        "--label",
        "team=ml",
        "--",
        "sh",
        "-c",
        f"echo first; while [ ! -e {gate} ]; do sleep 0.01; done; echo second",
    ).stdout.strip()
    wait_for(
        lambda: as_json(cli("status", job_id, "--json"))["state"] == "running",
        what="the job to run",
    )
    with subprocess.Popen(
        [SANDRUN, "logs", "-f", job_id], stdout=subprocess.PIPE, text=True
    ) as follower:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "first\n"
        gate.touch()
        assert follower.stdout.read() == "second\n"
        assert follower.wait(30) == 0

    assert cli("wait", job_id).returncode == 0
    status = as_json(cli("status", job_id, "--json"))
    assert (status["state"], status["exit_code"], status["name"]) == ("completed", 0, "watched")
    assert status["attempt_list"][0]["usage"]["wall_seconds"] > 0
    assert cli("logs", job_id).stdout == "first\nsecond\n"
    table = cli("jobs").stdout
    assert job_id in table and "watched" in table and "completed" in table
    assert [j["id"] for j in as_json(cli("jobs", "--label", "team=ml", "--json"))] == [job_id]
    assert as_json(cli("jobs", "--state", "failed", "--json")) == []
    human = cli("status", job_id).stdout
    assert "completed" in human and job_id in human


def test_cancel_a_submitted_job(cli: Cli) -> None:
    job_id = cli("submit", "--", "sleep", "1000").stdout.strip()
    wait_for(
        lambda: as_json(cli("status", job_id, "--json"))["state"] == "running",
        what="the job to run",
    )
    assert cli("cancel", job_id).returncode == 0
    assert cli("wait", job_id, "--timeout", "30").returncode == 130
    assert as_json(cli("status", job_id, "--json"))["state"] == "cancelled"


def test_retries_are_visible_in_status(cli: Cli) -> None:
    proc = cli("run", "--retries", "2", "--", "sh", "-c", "echo try; exit 5")
    assert proc.returncode == 5
    assert proc.stdout == "try\n" * 3
    assert "attempt 2" in proc.stderr and "attempt 3" in proc.stderr
    [job] = as_json(cli("jobs", "--json"))
    attempts = as_json(cli("status", job["id"], "--json"))["attempt_list"]
    assert [a["exit_code"] for a in attempts] == [5, 5, 5]


def test_env_can_be_copied_from_the_callers_environment(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "abc123")
    proc = cli(
        "run", "--env", "HF_TOKEN", "--env", "MODE=fast", "--", "sh", "-c", 'echo "$HF_TOKEN $MODE"'
    )
    assert proc.stdout == "abc123 fast\n"


# --- bad input: one clear line, a non-zero exit, and nothing changed -----------------


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr
    return proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run"], "no command given"),
        (["run", "--timeout", "-5", "--", "true"], "timeout: duration '-5' is not valid"),
        (["run", "--memory", "lots", "--", "true"], "memory 'lots' is not a size"),
        (["run", "--name", "bad name", "--", "true"], "name 'bad name' is not valid"),
        (["run", "--env", "NOT_SET_ANYWHERE_X", "--", "true"], "it is not set"),
        (["run", "--cpus", "1000", "--", "true"], "this machine has"),
        (
            ["run", "--require", "pool=gpu", "--", "true"],
            "requires: the job needs 1 CPUs, pool=gpu",
        ),
        (["run", "--gpus", "4xa100", "--", "true"], "gpus: the job needs 1 CPUs, 4xa100"),
        (["run", "--gpus", "4xa1000", "--", "true"], "did you mean a100"),
        (["submit", "-f", "missing.yaml"], "cannot read spec file"),
        (["jobs", "--state", "runing"], "did you mean 'running'?"),
    ],
)
def test_bad_input_gets_one_clear_error_and_changes_nothing(
    cli: Cli, args: list[str], message: str
) -> None:
    proc = cli(*args)
    assert proc.returncode != 0
    assert message in _no_traceback(proc)
    assert proc.stderr.startswith("error:")
    assert as_json(cli("jobs", "--json")) == []


def test_a_misspelled_yaml_field_is_named_with_a_suggestion(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "cwd" / "job.yaml").write_text("comand: [echo, hi]\ntimout: 5\n")
    proc = cli("run", "-f", "job.yaml")
    assert proc.returncode == 2
    assert "unknown field 'comand'" in _no_traceback(proc)
    assert "did you mean 'command'" in proc.stderr
    assert as_json(cli("jobs", "--json")) == []


def test_yaml_that_does_not_parse_is_refused(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "cwd" / "job.yaml").write_text("command: [echo\n  name: : x\n")
    proc = cli("submit", "-f", "job.yaml")
    assert proc.returncode == 2
    assert "is not valid YAML at line" in _no_traceback(proc)
    assert as_json(cli("jobs", "--json")) == []


@pytest.mark.parametrize("command", ["status", "logs", "wait", "cancel", "outputs"])
def test_an_unknown_job_id_is_an_error(cli: Cli, command: str) -> None:
    proc = cli(command, "0000-not-a-job")
    assert proc.returncode == 2
    assert "no job has id '0000-not-a-job'" in _no_traceback(proc)


def test_cancel_of_a_finished_job_says_so(cli: Cli) -> None:
    job_id = cli("submit", "--", "true").stdout.strip()
    assert cli("wait", job_id).returncode == 0
    proc = cli("cancel", job_id)
    assert proc.returncode == 2
    assert "already completed" in proc.stderr
    assert as_json(cli("status", job_id, "--json"))["state"] == "completed"


def test_state_lives_under_sandrun_home(cli: Cli, tmp_path: Path) -> None:
    assert cli("run", "--", "true").returncode == 0
    assert (Path(os.environ["SANDRUN_HOME"]) / "sandrun.db").is_file()


def test_priority_takes_a_class_or_a_number(cli: Cli) -> None:
    high = as_json(cli("submit", "--priority", "high", "--json", "--", "true"))
    low = as_json(cli("submit", "--priority", "-5", "--json", "--", "true"))
    assert (high["priority"], low["priority"]) == (10, -5)


def test_an_agent_that_cannot_sandbox_says_so_instead_of_leaving_jobs_waiting(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDRUN_SANDBOX", "bogus")
    bad = cli("run", "--", "true")
    assert bad.returncode != 0
    assert "SANDRUN_SANDBOX='bogus' is not a sandbox" in bad.stderr
    assert "auto, bwrap, unshare, none" in bad.stderr
    monkeypatch.setenv("SANDRUN_SANDBOX", "none")  # chosen knowingly: runs, no warning
    assert cli("run", "--", "true").returncode == 0


def test_run_a_repository_at_a_tag(cli: Cli, tmp_path: Path) -> None:
    url, commits = make_git_repo(tmp_path / "repo")
    proc = cli("run", "--repo", url, "--ref", "v1", "--", "sh", "run.sh", "now")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "running v1 now\n"
    [job] = as_json(cli("jobs", "--json"))
    status = cli("status", job["id"])
    assert f"attempt 1 ran commit {commits['v1']}" in status.stdout
    assert "--ref needs --repo" in cli("run", "--ref", "v1", "--", "true").stderr
