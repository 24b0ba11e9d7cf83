"""Exec and shell (`sandrun exec`, `sandrun shell`, `job.exec`, issue 25): a command runs
inside the running job — its namespaces, cgroup, uid, environment and working directory —
embedded, and through a server whose agent connects out; a shell gets a real
pseudo-terminal (resize, Ctrl-C, exit status)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandrun.client import Client, Job
from sandrun.errors import IllegalTransition, JobNotFoundError, ServerUnreachable
from sandrun.errors.lifecycle import ExecUnavailable
from sandrun.home import Home
from sandrun.states import JobState
from tests.acceptance.conftest import SANDRUN
from tests.helpers import wait_for
from tests.integration.cluster import Cluster
from tests.integration.conftest import Local

# A job that marks its own working directory and namespace, then waits.
MARKED = "echo made-by-the-job > marker; echo $$ > job.pid; sleep 60"


def _running(client: Client, shell: str = MARKED, **spec: object) -> Job:
    job = client.submit({"shell": shell, **spec})
    wait_for(lambda: job.refresh().is_running, what="the job to start")
    wait_for(lambda: job.exec("test -s job.pid").ok, what="the job to write its pid")
    return job


def _inside_checks(job: Job) -> None:
    """What an exec sees is the job's world, not the agent's."""
    seen = job.exec("cat marker; echo $SANDRUN_JOB_ID; pwd")
    assert seen.exit_code == 0, seen.stderr
    marker, job_id, cwd = seen.stdout.decode().split()
    assert (marker, job_id) == ("made-by-the-job", job.id)
    # The job's PID namespace: the job's shell has the pid it wrote, and is visible.
    same = job.exec("kill -0 $(cat job.pid) && cat /proc/$(cat job.pid)/cmdline | tr '\\0' ' '")
    assert same.ok and b"sleep 60" in same.stdout, same
    # Its cgroup is the job's (where cgroups are used at all).
    cgroups = job.exec("cat /proc/self/cgroup").stdout
    job_cgroups = job.exec("cat /proc/$(cat job.pid)/cgroup").stdout
    assert cgroups == job_cgroups
    # The job's uid, with no capabilities, under the job filter.
    ids = job.exec("id -u; grep CapEff /proc/self/status; stat -c %u marker").stdout.split()
    assert ids[0] == ids[-1]  # the uid that made the job's files
    assert ids[2] == b"0000000000000000"
    refused = job.exec("unshare -U true")
    assert refused.exit_code != 0
    assert cwd.endswith(f"{job.id}.1"), cwd
    # Exit codes and stdin come back as they are.
    assert job.exec(["sh", "-c", "exit 7"]).exit_code == 7
    echoed = job.exec(["cat"], stdin=b"fed through\n")
    assert echoed.stdout == b"fed through\n"
    both = job.exec("echo out; echo err >&2")
    assert (both.stdout, both.stderr) == (b"out\n", b"err\n")


def test_exec_runs_inside_an_embedded_job(local: Local, home: Home) -> None:
    job = _running(local.client)
    # Where an exec joins the job holds its environment: the agent's user's alone.
    record = home.runs / f"{job.id}.1.exec.json"
    assert record.stat().st_mode & 0o777 == 0o600
    _inside_checks(job)
    kinds = [e.kind for e in job.events]
    assert kinds.count("exec") >= 6 and "exec_ended" in kinds
    ran = next(e for e in job.events if e.kind == "exec")
    assert "ran sh -c" in ran.message and ran.data["argv"][0] == "sh"
    job.cancel().wait(30)
    wait_for(lambda: not record.exists(), what="the record to go with the attempt")


def test_exec_runs_inside_a_remote_agent_s_job(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    with cluster.client("alice") as alice:
        job = _running(alice)
        _inside_checks(job)
        ran = next(e for e in job.events if e.kind == "exec")
        assert ran.data["by"] == "alice" and ran.attempt == 1
        job.cancel().wait(30)


def test_only_a_running_job_s_owner_or_an_admin_may_exec(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    with (
        cluster.client("alice") as alice,
        cluster.client("bob") as bob,
        cluster.client("admin") as admin,
    ):
        job = _running(alice)
        with pytest.raises(JobNotFoundError):
            bob.get(job.id)
        their = Job(bob.transport, job.record)  # bob knows the id, not the job
        with pytest.raises(JobNotFoundError):
            their.exec("cat marker")
        assert admin.get(job.id).exec("cat marker").stdout == b"made-by-the-job\n"
        assert [e.data["by"] for e in job.events if e.kind == "exec"][-1] == "admin"
        job.pause()
        with pytest.raises(IllegalTransition, match="resume it first"):
            job.exec("true")
        job.resume()
        job.cancel().wait(30)
        with pytest.raises(IllegalTransition, match="cancelled"):
            job.exec("true")


def test_an_exec_ends_with_its_job(cluster: Cluster) -> None:
    """What an exec started is the job's: cancelling the job ends it, and the exec's
    caller hears how it ended."""
    cluster.start_agent("n1")
    with cluster.client("alice") as alice:
        job = _running(alice)
        stream = job.open_exec(["sh", "-c", "echo started; sleep 300"])
        assert stream.read() == (1, b"started\n")
        job.cancel()
        ended = stream.read()
        assert isinstance(ended, int) and ended != 0
        stream.close()


def _cli_env(cluster: Cluster, who: str = "alice") -> dict[str, str]:
    return {**os.environ, "SANDRUN_URL": cluster.url, "SANDRUN_TOKEN": cluster.tokens[who]}


def test_sandrun_exec_streams_and_exits_with_the_command_s_code(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_agent("n1")
    with cluster.client("alice") as alice:
        job = _running(alice)
        done = subprocess.run(
            [SANDRUN, "exec", job.id, "--", "sh", "-c", "cat marker; echo oops >&2; exit 3"],
            capture_output=True,
            env=_cli_env(cluster),
            cwd=tmp_path,
            timeout=60,
        )
        assert done.returncode == 3
        assert (done.stdout, done.stderr) == (b"made-by-the-job\n", b"oops\n")
        fed = subprocess.run(
            [SANDRUN, "exec", "-i", job.id, "--", "wc", "-l"],
            input=b"a\nb\nc\n",
            capture_output=True,
            env=_cli_env(cluster),
            timeout=60,
        )
        assert fed.returncode == 0 and fed.stdout.strip() == b"3"
        as_json = subprocess.run(
            [SANDRUN, "exec", "--json", job.id, "--", "sh", "-c", "echo hi; exit 2"],
            capture_output=True,
            env=_cli_env(cluster),
            timeout=60,
        )
        assert as_json.returncode == 2
        assert json.loads(as_json.stdout) == {"exit_code": 2, "stdout": "hi\n", "stderr": ""}
        job.cancel().wait(30)


class Terminal:
    """A real pseudo-terminal with `sandrun shell` on its far side, as a user's would be."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the CLI, with the pty as its terminal
            self.resize(0, 33, 101)
            os.execve(argv[0], argv, env)
        self.seen = b""

    def resize(self, fd: int, rows: int, cols: int) -> None:
        """As a terminal window does: the kernel tells its foreground (SIGWINCH)."""
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect(self, wanted: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {wanted!r}; saw {self.seen[-500:]!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:  # the far side closed
                    assert wanted in self.seen, f"ended without {wanted!r}: {self.seen!r}"

    def read_for(self, seconds: float) -> bytes:
        """What arrives within `seconds` (all seen so far)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.fd], [], [], left)[0]:
                self.seen += os.read(self.fd, 4096)
        return self.seen

    def expect_prompt(self, timeout: float = 30.0) -> None:
        """The shell's first prompt (root's `# ` or a user's `$ `)."""
        deadline = time.monotonic() + timeout
        while not self.seen.rstrip(b" ").endswith((b"#", b"$")):
            left = deadline - time.monotonic()
            assert left > 0, f"no prompt; saw {self.seen[-500:]!r}"
            if select.select([self.fd], [], [], min(left, 0.5))[0]:
                self.seen += os.read(self.fd, 4096)

    def exit_status(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    pass
        raise AssertionError(f"the CLI did not exit; it showed {self.seen[-500:]!r}")


def _shell_session(job: Job, open_terminal: Callable[[], Terminal]) -> None:
    term = open_terminal()
    term.expect_prompt()  # a shell drops what is typed before it reads its terminal
    term.send(b"echo $((6 * 7)); test -t 0 && echo on-a-terminal; stty size\n")
    term.expect(b"42")
    term.expect(b"on-a-terminal")
    term.expect(b"33 101")  # the size of the user's terminal
    term.resize(term.fd, 45, 123)  # the user's window changes size
    wait_for(
        lambda: term.send(b"stty size\n") or b"45 123" in term.read_for(0.2),
        what="the shell's terminal to follow the resize",
    )
    term.send(b"sleep 300\n")
    # Ctrl-C goes to the terminal's foreground group: wait until the sleep is it (bash
    # hands the terminal over after the fork, so merely running is not enough).
    foreground = (
        "for p in $(pgrep -x sleep); do set -- $(cat /proc/$p/stat); "
        '[ "$5" = "$8" ] && exit 0; done; exit 1'
    )
    wait_for(lambda: job.exec(foreground).ok, what="the sleep to hold the terminal")
    term.send(b"\x03")  # Ctrl-C: the far side's terminal interrupts its foreground
    term.expect(b"^C")
    term.send(b"echo the-sleep-ended-with $?\n")
    term.expect(b"the-sleep-ended-with 130")
    term.send(b"cat marker; exit 4\n")
    term.expect(b"made-by-the-job")
    assert term.exit_status() == 4


def test_sandrun_shell_is_a_real_terminal_through_a_server(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    with cluster.client("alice") as alice:
        job = _running(alice)
        env = _cli_env(cluster)
        _shell_session(job, lambda: Terminal([SANDRUN, "shell", job.id], env))
        assert any(e.kind == "exec" and e.data["tty"] for e in job.events)
        assert job.refresh().status is JobState.RUNNING  # the job never noticed
        job.cancel().wait(30)


def test_sandrun_shell_embedded(local: Local, home: Home) -> None:
    job = _running(local.client)
    env = {**os.environ, "SANDRUN_HOME": str(home.root)}
    env.pop("SANDRUN_URL", None)
    _shell_session(job, lambda: Terminal([SANDRUN, "shell", job.id], env))
    job.cancel().wait(30)


def test_an_agent_s_channel_comes_back_after_its_server_restarts(cluster: Cluster) -> None:
    """The agent reopens its channel when the server is back: execs work again, with no
    restart of the agent or the job."""
    cluster.start_agent("n1")
    with cluster.client("alice") as alice:
        job = _running(alice)
        assert cluster.server is not None
        cluster.server.send_signal(signal.SIGKILL)
        cluster.server.wait(30)
        cluster.start_server()
        wait_for(
            lambda: _exec_or_none(job) == b"made-by-the-job\n",
            timeout=60,
            what="an exec through the restarted server",
        )
        assert job.refresh().status is JobState.RUNNING and len(job.attempts) == 1
        job.cancel().wait(30)


def _exec_or_none(job: Job) -> bytes | None:
    try:
        return job.exec("cat marker").stdout
    except (ExecUnavailable, ServerUnreachable):
        return None  # the channel is not back yet
