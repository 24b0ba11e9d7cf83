"""The pieces of an exec that need no job: its request's checks, the helper that confines
it, what it joins for an unsandboxed attempt, and the address it is reached at."""

from __future__ import annotations

import resource
import signal
import subprocess

import pytest
from pydantic import ValidationError

from sandrun.agent.execs import Exec, Inside, command, pump, target
from sandrun.agent.sandbox.base import memfd
from sandrun.agent.sandbox.enter import HELPER, carried, with_env
from sandrun.agent.sandbox.seccomp import exec_program
from sandrun.exec_models import ExecControl, ExecRequest
from sandrun.httpjson import ws_url


def test_a_request_names_a_program_and_nothing_it_cannot_pass() -> None:
    assert ExecRequest(argv=["ls", "-la"]).tty is False
    for bad in ([], [""], ["sh", "a\x00b"], ["x" * 40_000]):
        with pytest.raises(ValidationError):
            ExecRequest(argv=bad)
    with pytest.raises(ValidationError):
        ExecRequest(argv=["true"], term="xterm; rm -rf /")
    with pytest.raises(ValidationError):
        ExecRequest.model_validate({"argv": ["true"], "uid": 0})  # no such field
    assert ExecControl.model_validate_json('{"resize": [40, 120]}').resize == (40, 120)


def test_server_addresses_become_websocket_addresses() -> None:
    assert ws_url("http://h:8765", "/v1/x?node=a") == "ws://h:8765/v1/x?node=a"
    assert ws_url("https://h/base/", "/v1/x") == "wss://h/base/v1/x"


def test_the_helper_confines_itself_before_it_runs_the_command() -> None:
    """Its rlimits and the exec filter hold for what it execs, and the job's environment,
    carried past it under other names, is the command's again at the last step."""
    core = f"--limit={resource.RLIMIT_CORE}=0,0"
    fsize = f"--limit={resource.RLIMIT_FSIZE}=4096,4096"
    script = "ulimit -c; ulimit -f; echo ${STARTED-unset} $HANDED; unshare --user true || echo no"
    handed = carried({"HANDED": "it's handed", "PATH": "/usr/bin:/bin"})
    filter_fd = memfd("filter", exec_program())
    last = with_env(["/bin/sh", "-c", script])
    done = subprocess.run(
        [*HELPER, core, fsize, f"--seccomp-fd={filter_fd}", "--", *last],
        capture_output=True,
        text=True,
        timeout=60,
        env={"STARTED": "started", "PYTHONPATH": "/nonexistent", **handed},
        pass_fds=(filter_fd,),
    )
    assert done.returncode == 0, done.stderr
    # 4096 bytes: 8 blocks of 512; unshare refused by the filter.
    assert done.stdout.split() == ["0", "8", "started", "it's", "handed", "no"]


def test_the_helper_says_why_it_cannot_enter() -> None:
    done = subprocess.run(
        [*HELPER, "--procs=/nonexistent/procs", "--", "/bin/true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 126 and "cannot enter the job's sandbox" in done.stderr


def test_an_unsandboxed_attempt_is_joined_in_its_directory(tmp_path: object) -> None:
    """With no sandbox (the `none` backend) there are no namespaces to join: the exec runs
    in the job's working directory with the job's environment."""
    job = subprocess.Popen(["sleep", "30"], cwd=str(tmp_path))
    try:
        assert target(job.pid) == (job.pid, [])
        inside = Inside(job.pid, None, [], {}, {"PATH": "/usr/bin:/bin", "MARK": "m1"}, False)
        argv, cwd = command(inside, ["pwd"], False, None)
        assert str(cwd) == str(tmp_path) and argv[-1] == "pwd"
        again = Inside.from_json(inside.to_json())
        assert (again.pid, again.env) == (inside.pid, inside.env)
        seen: list[bytes] = []
        process = Exec(inside, ExecRequest(argv=["sh", "-c", "pwd; echo $MARK"]))
        assert pump(process, lambda _stream, data: seen.append(data)) == 0
        assert b"".join(seen).split() == [str(tmp_path).encode(), b"m1"]
        assert inside.running == []  # ended: no longer the attempt's to kill
    finally:
        job.kill()
        job.wait()


def test_the_helper_hands_on_no_ignored_or_blocked_signal() -> None:
    """A caller started in the background ignores SIGINT; an exec's command (a shell a
    user will press Ctrl-C in) must not inherit that."""
    done = subprocess.run(
        [*HELPER, "--", "/bin/sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert done.returncode == 0, done.stderr
    masks = dict(line.split(":") for line in done.stdout.splitlines())
    assert {k: int(v, 16) for k, v in masks.items()} == {"SigBlk": 0, "SigIgn": 0}
