"""One sandboxed process at the OS level: where a self-gating sandbox says its first
process's pid, whether the process has exited (and killing what it left), reaping."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import subprocess
import time
from collections.abc import Iterator

from sandrun.agent.proctree import signal_tree
from sandrun.models import AttemptResult
from sandrun.states import FailureReason

SANDBOX_START = 30.0  # seconds a sandbox may take to start its first process


class InfoPipe:
    """Where a self-gating sandbox tells the pid of its first process (`Box.info_fd`)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self._open = [self.read_fd, self.write_fd]

    @classmethod
    @contextlib.contextmanager
    def open(cls, wanted: bool) -> Iterator[InfoPipe | None]:
        pipe = cls() if wanted else None
        try:
            yield pipe
        finally:
            if pipe is not None:
                for fd in pipe._open:
                    os.close(fd)

    def child_pid(self, timeout: float = SANDBOX_START) -> int | None:
        """Read to the end (the sandbox closes it once written); None if it said nothing
        (or nothing in `timeout` seconds)."""
        self._close(self.write_fd)  # the sandbox holds its own copy
        data = b""
        deadline = time.monotonic() + timeout
        while True:
            left = max(deadline - time.monotonic(), 0.0)
            ready, _, _ = select.select([self.read_fd], [], [], left)
            chunk = os.read(self.read_fd, 4096) if ready else b""
            if not chunk:
                break
            data += chunk
        try:
            return int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):
            return None

    def _close(self, fd: int) -> None:
        if fd in self._open:
            self._open.remove(fd)
            os.close(fd)


def sandbox_failed(proc: subprocess.Popen[bytes]) -> AttemptResult:
    """The sandbox exited before starting its first process: say what it said."""
    assert proc.stdin is not None and proc.stderr is not None
    signal_tree(proc.pid, signal.SIGKILL)
    text = proc.stderr.read().decode(errors="replace").strip()
    proc.stdin.close()
    reap(proc)
    return AttemptResult(
        failure_reason=FailureReason.INTERNAL,
        message=f"cannot start the sandbox: {text.splitlines()[-1] if text else 'it exited'}",
    )


def pidfd_of(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # old kernel: the 50 ms select timeout polls instead


def poll_exit(proc: subprocess.Popen[bytes]) -> tuple[int, resource.struct_rusage] | None:
    """If the leader exited: kill what it left in its group, reap it, return status+usage."""
    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None:
        return None
    # The leader is a zombie: its pid (and so its group id) cannot be reused yet.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return status, rusage


def reap(proc: subprocess.Popen[bytes]) -> None:
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None and not pipe.closed:
            pipe.close()
