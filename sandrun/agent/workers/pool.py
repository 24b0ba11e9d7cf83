"""Warm function workers, the agent's side: fork servers (`forkserver.py`) kept running in
sandboxes of their own between the calls of one owner.

A function call (a job whose `shell` is the runner's) skips the sandbox's start and the
interpreter's: a worker forks it a child that has the runner and cloudpickle imported. A
worker serves one call at a time and only one owner; it is keyed by what shapes its
sandbox (owner, network, memory limit: its tmpfs cap). Each call still gets its own process
group (killed whole at its end), scratch directory, emptied /tmp, cgroup and rlimits. A
worker retires when idle for `idle` seconds, after `max_calls` calls, when anything a call
started outlives it, or when its server dies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from sandrun.agent.jobenv import DEFAULT_PATH
from sandrun.agent.process import SANDBOX_START, Ended, InfoPipe
from sandrun.agent.proctree import signal_tree
from sandrun.agent.sandbox import Box, Confined, Sandboxing
from sandrun.agent.workers.forkserver import ISOLATED, WORKER_FD
from sandrun.agent.workspace import remove_tree
from sandrun.errors import WorkerDied
from sandrun.runner import CALL_DIR, CALL_ENV, SHELL
from sandrun.spec import JobSpec
from sandrun.spec.job import Limits

log = logging.getLogger("sandrun.agent")

PREFIX = "warm-"  # a worker's home in the runs directory: warm-<id>
IDLE = 60.0  # seconds an idle worker is kept (Modal's default container idle timeout)
MAX_CALLS = 1000  # calls one worker serves before it is replaced by a fresh one
_MESSAGE = 1 << 16


@dataclass(frozen=True)
class WarmKey:
    """What shapes a worker's sandbox: calls differing in any of these never share one."""

    owner: str
    network: bool
    memory_mb: int | None


def warm_key(spec: JobSpec, owner: str) -> WarmKey | None:
    """The key of a function call a worker can serve; None for any other job."""
    if spec.shell != SHELL or CALL_ENV not in spec.env:
        return None
    if spec.gpus is not None or spec.working_dir is not None:
        return None  # devices are bound at a sandbox's start; a host directory likewise
    return WarmKey(owner, spec.network, spec.memory)


class Worker:
    """One fork server in its sandbox, and the socket to it."""

    def __init__(self, key: WarmKey, home: Path, sock: socket.socket) -> None:
        self.key = key
        self.home = home  # bound writable in its sandbox; each call's scratch is inside
        self.proc: subprocess.Popen[bytes] | None = None  # its sandbox (once started)
        self.sock = sock
        self.confined: Confined | None = None  # its sandbox (set once started)
        self.server = 0  # the server's pid on this host
        self.calls = 0
        self.idle_since = time.monotonic()
        self.reusable = True  # False once a call left something running, or it died

    def call(self, cwd: Path, env: dict[str, str], limits: dict[int, tuple[int, int]]) -> WarmCall:
        """Fork a child for a call, under `limits` (rlimits); it waits at its gate
        (`WarmCall.open_gate`)."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        gate_r, gate_w = os.pipe()
        try:
            request = {"cwd": str(cwd), "env": env, "dir": CALL_DIR, "limits": limits}
            socket.send_fds(self.sock, [json.dumps(request).encode()], [out_w, err_w, gate_r])
        except OSError as exc:
            for fd in (out_r, err_r, gate_w):
                os.close(fd)
            raise WorkerDied(f"the warm worker is gone: {exc}") from None
        finally:
            for fd in (out_w, err_w, gate_r):
                os.close(fd)
        self.calls += 1
        try:
            pid = self._host_pid(int(self.answer(SANDBOX_START)["pid"]))
        except BaseException:
            for fd in (out_r, err_r, gate_w):
                os.close(fd)
            raise
        return WarmCall(self, pid, open(out_r, "rb", buffering=0), open(err_r, "rb"), gate_w)

    def answer(self, timeout: float | None) -> dict[str, Any]:
        """The server's next message, waiting at most `timeout` seconds."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        data = self.sock.recv(_MESSAGE) if ready else b""
        if not data:
            self.reusable = False
            raise WorkerDied("the warm worker exited" if ready else "the warm worker hung")
        message: dict[str, Any] = json.loads(data)
        return message

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
        end = self.worker.answer(0)
        if end.get("left"):
            self.worker.reusable = False  # something of the call outlived it
        return Ended(int(end["status"]), float(end["cpu"]), float(end["rss"]))

    def close(self) -> None:
        self._close_gate()  # a child never let through exits at its gate
        self.stdout.close()
        self.stderr.close()

    def _close_gate(self) -> None:
        if self._gate is not None:
            os.close(self._gate)
            self._gate = None


class WorkerPool:
    """The agent's warm workers: idle ones by key, and every live one."""

    def __init__(
        self,
        sandboxing: Sandboxing,
        runs_dir: Path,
        python_dir: str,
        idle: float = IDLE,
        max_calls: int = MAX_CALLS,
    ) -> None:
        self.sandboxing = sandboxing
        self.runs_dir = runs_dir
        self.python_dir = python_dir
        self.idle = idle
        self.max_calls = max_calls
        self._idle: dict[WarmKey, list[Worker]] = {}
        self._live: set[str] = set()  # homes of the workers that exist
        self._lock = threading.Lock()
        self._closed = False

    def owns(self, name: str) -> bool:
        """Whether `name` in the runs directory (a home or its root) is a live worker's."""
        with self._lock:
            return name.removesuffix(".root") in self._live

    def take(self, key: WarmKey, spec: JobSpec) -> Worker:
        """An idle worker for `key`, or a new one (raises AgentError if it cannot start)."""
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        return self._start(key, spec)

    def give_back(self, worker: Worker) -> None:
        """After a call: keep the worker warm, or retire it."""
        retire = not worker.reusable or worker.calls >= self.max_calls
        if not retire:  # what a call wrote beside its scratch goes too
            for entry in os.scandir(worker.home):
                if entry.is_dir(follow_symlinks=False):
                    remove_tree(Path(entry.path))
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        with self._lock:
            if not retire and not self._closed:
                worker.idle_since = time.monotonic()
                self._idle.setdefault(worker.key, []).append(worker)
                return
        self._retire(worker)

    def retire_idle(self) -> None:
        """Retire the workers idle for longer than `idle` seconds."""
        now = time.monotonic()
        stale: list[Worker] = []
        with self._lock:
            for workers in self._idle.values():
                stale += [w for w in workers if now - w.idle_since >= self.idle]
                workers[:] = [w for w in workers if now - w.idle_since < self.idle]
        for worker in stale:
            self._retire(worker)

    def close(self) -> None:
        """Retire every idle worker; busy ones retire when their call ends."""
        with self._lock:
            self._closed = True
            idle = [w for workers in self._idle.values() for w in workers]
            self._idle.clear()
        for worker in idle:
            self._retire(worker)

    def counts(self) -> dict[str, int]:
        """How many workers exist, and how many of them are idle."""
        with self._lock:
            idle = sum(len(w) for w in self._idle.values())
            return {"workers": len(self._live), "idle": idle}

    def _start(self, key: WarmKey, spec: JobSpec) -> Worker:
        name = f"{PREFIX}{uuid.uuid4().hex[:12]}"
        home = self.runs_dir / name
        home.mkdir(parents=True)
        with self._lock:
            self._live.add(name)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker = Worker(key, home, ours)
        try:
            proc = self._launch(worker, spec, theirs)
            inner = int(worker.answer(SANDBOX_START)["pid"])  # its hello, once warm
            worker.server = _find(proc.pid, inner)
            return worker
        except BaseException:
            self._retire(worker)
            raise
        finally:
            theirs.close()

    def _launch(
        self, worker: Worker, spec: JobSpec, theirs: socket.socket
    ) -> subprocess.Popen[bytes]:
        """Start the worker's sandbox, its server in it, through the sandbox's gate."""
        # The server's own sandbox: the call's network and memory (its tmpfs cap); none
        # of the call's other limits, which each call gets for itself.
        shape = spec.model_copy(update={"limits": Limits(), "timeout": None})
        backend = self.sandboxing.backend
        env = {
            "PATH": f"{self.python_dir}:{DEFAULT_PATH}",
            "HOME": str(worker.home),
            "LANG": "C.UTF-8",
            WORKER_FD: str(theirs.fileno()),
            ISOLATED: "1" if backend.isolates else "0",
        }
        with InfoPipe.open(backend.gates_itself) as info:
            box = Box(
                [sys.executable, "-m", "sandrun.agent.workers.forkserver"],  # as calls run
                worker.home,
                [worker.home],
                root=self.runs_dir / f"{worker.home.name}.root",
                info_fd=info.write_fd if info else None,
            )
            confined = worker.confined = self.sandboxing.prepare(worker.home.name, shape, box)
            fds = ((info.write_fd,) if info else ()) + confined.pass_fds + (theirs.fileno(),)
            proc = worker.proc = subprocess.Popen(
                confined.argv,
                cwd=worker.home,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=fds,
            )
            first = info.child_pid() if info is not None else proc.pid
            if first is None:
                raise WorkerDied("the warm worker's sandbox did not start")
            confined.confine(first)
            assert proc.stdin is not None
            proc.stdin.write(b"\n")  # its gate
            proc.stdin.close()
        return proc

    def _retire(self, worker: Worker) -> None:
        worker.stop()
        if worker.confined is not None:
            self.sandboxing.release(worker.confined)
        remove_tree(worker.home)
        with self._lock:
            self._live.discard(worker.home.name)


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


def _find(root: int, inner: int) -> int:
    """The host pid of the descendant of `root` whose pid in its namespace is `inner`."""
    try:
        tree = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        tree = []
    for process in tree:
        if _inner_pid(process.pid) == inner:
            return process.pid
    raise WorkerDied("the warm worker's server is not to be found")
