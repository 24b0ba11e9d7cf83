"""One sandboxed process at the OS level: where a self-gating sandbox says its first
process's pid, whether the process has exited (and killing what it left), reaping.

`Running` is what the supervisor watches: a job spawned cold (`Spawned`, a child of the
agent) or a call forked by a warm worker (`workers.pool.WarmCall`).
"""

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
from dataclasses import dataclass
from typing import IO, Protocol

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


@dataclass(frozen=True)
class Ended:
    """How a job's first process ended."""

    status: int  # its wait status
    cpu_seconds: float  # its own and its reaped children's
    max_rss_kb: float

    @classmethod
    def of(cls, status: int, usage: resource.struct_rusage) -> Ended:
        return cls(status, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


class Running(Protocol):
    """A job's first process, as the supervisor watches it."""

    @property
    def pid(self) -> int: ...  # on this host: its tree gets the signals

    @property
    def stdout(self) -> IO[bytes]: ...

    @property
    def stderr(self) -> IO[bytes]: ...

    def exit_fd(self) -> int | None:
        """Readable once it may have ended (else the supervisor polls)."""

    def poll_exit(self) -> Ended | None:
        """If it ended: kill what it left in its group, reap it, say how it ended."""

    def close(self) -> None:
        """Close its pipes and descriptors (it has ended, or been killed)."""


class Spawned:
    """A job the agent spawned itself: its child, the leader of its own session."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.pid = proc.pid
        self.stdout: IO[bytes] = proc.stdout
        self.stderr: IO[bytes] = proc.stderr
        self._pidfd = pidfd_of(proc.pid)

    def exit_fd(self) -> int | None:
        return self._pidfd

    def poll_exit(self) -> Ended | None:
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is None:
            return None
        # The leader is a zombie: its pid (and so its group id) cannot be reused yet.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _, status, usage = os.wait4(self.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return Ended.of(status, usage)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self.stdout.close()
        self.stderr.close()


def pidfd_of(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # old kernel: the 50 ms select timeout polls instead


def reap(proc: subprocess.Popen[bytes]) -> None:
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None and not pipe.closed:
            pipe.close()
