"""One warm worker, the agent's side: its fork server's sandbox and the socket to it
(`forkserver.py` is the other end), and a job running in it as the supervisor watches it."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil

from sandrun.agent.process import SANDBOX_START, Ended
from sandrun.agent.proctree import signal_tree
from sandrun.agent.results import spawn_error
from sandrun.agent.sandbox import Confined
from sandrun.agent.sandbox.cgroups import AttemptCgroup
from sandrun.agent.supervise import Stop
from sandrun.errors import WorkerDied
from sandrun.models import AttemptResult
from sandrun.runner import CALL_DIR

_MESSAGE = 1 << 16
_ENTER_POLL = 0.1  # seconds between looks at a job's cancel and timeout during its @enter
T = TypeVar("T")


class Interrupted(Exception):
    """A class worker's first call stopped (cancelled, timed out...) in its @enter."""

    def __init__(self, stop: Stop) -> None:
        super().__init__(stop.value)
        self.stop = stop


@dataclass(frozen=True)
class WarmKey:
    """What shapes a worker's sandbox: calls differing in any of these never share one."""

    owner: str
    network: bool
    memory_mb: int | None
    # A class worker's: the digest of its instance's recipe (the class, its constructor's
    # arguments, and the code, inputs and environment its @enter sees). None: plain calls.
    instance: str | None = None


class Worker:
    """One fork server in its sandbox, and the socket to it."""

    def __init__(self, key: WarmKey, home: Path, sock: socket.socket, isolated: bool) -> None:
        self.key = key
        self.isolated = isolated  # in a sandbox with its own view of the filesystem
        self.home = home  # bound writable in its sandbox; each call's scratch is inside
        self.proc: subprocess.Popen[bytes] | None = None  # its sandbox (once started)
        self.sock = sock
        self.confined: Confined | None = None  # its sandbox (set once started)
        self.server = 0  # the server's pid on this host
        self.calls = 0
        self.idle_since = time.monotonic()
        self.reusable = True  # False once a call left something running, or it died
        self.entered = False  # a class worker: whether its instance is made
        self.cgroup: AttemptCgroup | None = None  # its jobs' cgroup, kept between them

    def call(
        self,
        cwd: Path,
        env: dict[str, str],
        limits: dict[int, tuple[int, int]],
        argv: list[str] | None,
        give_up: Callable[[], Stop | None] = lambda: None,
    ) -> WarmCall:
        """Fork a child for a job, under `limits` (rlimits), to exec `argv` or, if None,
        to run the function call in `cwd`; it waits at its gate (`WarmCall.open_gate`).
        A class worker's first call waits for its @enter, however long, unless `give_up`
        says why not (then the worker retires: `Interrupted`)."""
        enter = argv is None and self.key.instance is not None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        gate_r, gate_w = os.pipe()
        theirs = [out_w, err_w, gate_r]
        try:
            if not self.isolated:  # see forkserver._child
                theirs.append(os.open(cwd, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            request: dict[str, object] = {"cwd": str(cwd), "env": env, "limits": limits}
            request |= {"argv": argv} if argv is not None else {"dir": CALL_DIR, "enter": enter}
            socket.send_fds(self.sock, [json.dumps(request).encode()], theirs)
        except OSError as exc:
            for fd in (out_r, err_r, gate_w):
                os.close(fd)
            raise WorkerDied(f"the warm worker is gone: {exc}") from None
        finally:
            for fd in theirs:
                os.close(fd)
        self.calls += 1
        try:
            if enter and not self.entered:
                self._entering(give_up)
                self.entered = True
            pid = self._host_pid(self.answer(SANDBOX_START, said_pid))
        except BaseException:
            for fd in (out_r, err_r, gate_w):
                os.close(fd)
            raise
        return WarmCall(self, pid, open(out_r, "rb", buffering=0), open(err_r, "rb"), gate_w)

    def _entering(self, give_up: Callable[[], Stop | None]) -> None:
        """Wait while the server runs the class's @enter (it answers once it has forked)."""
        while not select.select([self.sock], [], [], _ENTER_POLL)[0]:
            stop = give_up()
            if stop is not None:
                self.reusable = False  # stopped in its @enter: gone with its sandbox
                raise Interrupted(stop)

    def answer(self, timeout: float | None, read: Callable[[Any], T]) -> T:
        """The server's next message, waiting at most `timeout` seconds, as `read` reads
        it. The server shares its sandbox with its owner's jobs: what it says is checked."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        data = self.sock.recv(_MESSAGE) if ready else b""
        if not data:
            self.reusable = False
            raise WorkerDied("the warm worker exited" if ready else "the warm worker hung")
        try:
            return read(json.loads(data))
        except (ValueError, TypeError, KeyError, AttributeError):
            self.reusable = False
            raise WorkerDied(f"the warm worker answered nonsense: {data[:80]!r}") from None

    def _host_pid(self, inner: int) -> int:
        """The host pid of the server's child whose pid in the sandbox is `inner`."""
        path = f"/proc/{self.server}/task/{self.server}/children"
        try:
            with open(path) as f:
                children = [int(p) for p in f.read().split()]
        except OSError:  # a kernel without it: ask psutil (a slower walk)
            children = [p.pid for p in psutil.Process(self.server).children()]
        for pid in children:
            if _inner_pid(pid) == inner:
                return pid
        self.reusable = False
        raise WorkerDied(f"the warm worker's child {inner} is not to be found")

    def stop(self) -> None:
        """End the server and everything in its sandbox."""
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.proc is not None and self.proc.returncode is None:
            signal_tree(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)


class WarmCall:
    """A call running in a worker, as the supervisor watches it (`process.Running`)."""

    def __init__(
        self, worker: Worker, pid: int, stdout: IO[bytes], stderr: IO[bytes], gate: int
    ) -> None:
        self.worker = worker
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self._gate: int | None = gate
        self.exec_error: str | None = None  # why its program could not be exec'd

    def open_gate(self) -> None:
        assert self._gate is not None
        os.write(self._gate, b"\n")
        self._close_gate()

    def exit_fd(self) -> int | None:
        return self.worker.sock.fileno()

    def poll_exit(self) -> Ended | None:
        ready, _, _ = select.select([self.worker.sock], [], [], 0)
        if not ready:
            return None
        ended, left, self.exec_error = self.worker.answer(0, _said_end)
        if left:
            self.worker.reusable = False  # something of the job outlived it
        return ended

    def close(self) -> None:
        self._close_gate()  # a child never let through exits at its gate
        self.stdout.close()
        self.stderr.close()

    def _close_gate(self) -> None:
        if self._gate is not None:
            os.close(self._gate)
            self._gate = None


def _inner_pid(pid: int) -> int | None:
    """`pid`'s pid in its own (innermost) PID namespace."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def exec_failed(said: str, argv: list[str] | None) -> AttemptResult:
    """A job whose program could not be exec'd (`said`: the errno's name and text), read as
    a cold start would read it: a spawn error, never the job's own exit code."""
    name, _, text = said.partition(" ")
    program = argv[0] if argv else "the job"
    if name == "E2BIG":  # the job's own argv and env: no node could exec it
        return spawn_error(f"its arguments and environment are too large: {text}")
    return spawn_error(f"cannot run {program!r}: {text}", 126 if name == "EACCES" else 127)


def said_pid(message: dict[str, Any]) -> int:
    return int(message["pid"])


def _said_end(message: dict[str, Any]) -> tuple[Ended, bool, str | None]:
    status = int(message["status"])
    os.waitstatus_to_exitcode(status)  # a status a process can end with, or ValueError
    ended = Ended(status, float(message["cpu"]), float(message["rss"]))
    exec_error = message.get("exec_error")
    return ended, message["left"] is not False, None if exec_error is None else str(exec_error)


def find_server(root: int, inner: int) -> int:
    """The host pid of the descendant of `root` whose pid in its namespace is `inner`."""
    try:
        tree = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        tree = []
    for process in tree:
        if _inner_pid(process.pid) == inner:
            return process.pid
    raise WorkerDied("the warm worker's server is not to be found")
