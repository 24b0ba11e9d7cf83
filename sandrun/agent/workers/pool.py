"""Warm workers, the agent's side: fork servers (`forkserver.py`) kept running in
sandboxes of their own between the jobs of one owner.

A job skips the sandbox's start: a worker forks it a child, which execs its program or, for
a function call (a job whose `shell` is the runner's), runs it in the warm interpreter,
where the runner and cloudpickle are already imported. A worker serves one job at a time
and only one owner; it is keyed by what shapes its sandbox (owner, network, memory limit:
its tmpfs cap). Each job still gets its own process group (killed whole at its end),
scratch directory, emptied /tmp, cgroup and rlimits. A worker retires when idle for `idle`
seconds, after `max_calls` jobs, when anything a job started outlives it, or when its
server dies.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sandrun.agent.jobenv import DEFAULT_PATH
from sandrun.agent.process import SANDBOX_START, InfoPipe
from sandrun.agent.sandbox import Box, Sandboxing
from sandrun.agent.workers.forkserver import ISOLATED, WORKER_FD
from sandrun.agent.workers.keep import KeepPolicy
from sandrun.agent.workers.worker import WarmKey, Worker, find_server, said_pid
from sandrun.agent.workspace import remove_tree
from sandrun.errors import SandrunError, WorkerDied
from sandrun.models import WarmGroup, WarmReport
from sandrun.runner import AFTER_DIR, ARGS_INPUT, CALL_ENV, SHELL
from sandrun.spec import JobSpec
from sandrun.spec.policies import Limits

log = logging.getLogger("sandrun.agent")

PREFIX = "warm-"  # a worker's home in the runs directory: warm-<id>
IDLE = 60.0  # seconds an idle worker is kept (Modal's default container idle timeout)
MAX_CALLS = 1000  # calls one worker serves before it is replaced by a fresh one
# Idle workers kept at most (each a sandbox and a Python of some 15 MB): past it the one
# idle longest goes, so a node seeing many owners keeps the recent ones warm.
MAX_IDLE = 16


def warm_key(spec: JobSpec, owner: str) -> WarmKey | None:
    """The key of a job a worker can serve; None for one that needs a sandbox of its own:
    devices are bound at a sandbox's start, and so are a host working directory, volumes,
    data mounts, environments and secret files (and a secret must not stay in a worker
    another job may use)."""
    mounts = spec.volumes or spec.secrets or spec.data_mounts or spec.environment
    if spec.gpus is not None or spec.working_dir is not None or mounts:
        return None
    return WarmKey(owner, spec.network, spec.memory, instance_of(spec))


def instance_of(spec: JobSpec) -> str | None:
    """For a method call of an `@app.cls` class, what its worker's entered instance is
    made of: the class and its constructor's arguments (`function.pkl`), and the code,
    repository, inputs and environment its @enter sees. Calls that differ in any of these
    never share an instance (only each call's own arguments may differ)."""
    try:
        call = json.loads(spec.env.get(CALL_ENV, "{}"))
    except ValueError:
        return None
    if not isinstance(call, dict) or "method" not in call:
        return None
    seen = {
        "python": call.get("python"),
        "inputs": {  # a call's own arguments, and the values it waited for, may differ
            k: v
            for k, v in spec.inputs.items()
            if k != ARGS_INPUT and not k.startswith(AFTER_DIR + "/")
        },
        "env": {k: v for k, v in spec.env.items() if k != CALL_ENV},
        "code": spec.code,
        "repository": spec.repository.model_dump() if spec.repository else None,
    }
    return hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()


def is_call(spec: JobSpec) -> bool:
    """Whether the job is a function call a worker can run in its warm interpreter. Not
    one that sets what a Python reads only as it starts (PYTHONPATH, PYTHONHASHSEED...):
    that one gets a fresh interpreter, exec'd in the warm sandbox."""
    startup = [k for k in spec.env if k.startswith("PYTHON") and k != "PYTHONUNBUFFERED"]
    return spec.shell == SHELL and CALL_ENV in spec.env and not startup


def open_pool(
    sandboxing: Sandboxing, runs_dir: Path, python_dir: str, idle: float
) -> WorkerPool | None:
    """The agent's warm workers; None if it keeps none (`idle` 0), or if it is a root agent
    without a sandbox: a job started by a worker runs as its uid from the start, and the
    host's paths need not let that uid through to the program (a cold job is started by
    setpriv, as root to the last step)."""
    if idle <= 0 or (not sandboxing.backend.isolates and sandboxing.uids is not None):
        return None
    return WorkerPool(sandboxing, runs_dir, python_dir, idle)


class WorkerPool:
    """The agent's warm workers: idle ones by key, and every live one."""

    def __init__(
        self,
        sandboxing: Sandboxing,
        runs_dir: Path,
        python_dir: str,
        idle: float = IDLE,
        max_calls: int = MAX_CALLS,
        max_idle: int = MAX_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sandboxing = sandboxing
        self.runs_dir = runs_dir
        self.python_dir = python_dir
        self.idle = idle
        self.max_calls = max_calls
        self.max_idle = max_idle
        self.clock = clock
        self._idle: dict[WarmKey, list[Worker]] = {}
        self._live: dict[str, WarmKey] = {}  # the homes of the workers that exist
        self._kept = KeepPolicy(lambda: self.idle, max_idle)
        self._lock = threading.Lock()
        self._closed = False

    def owns(self, name: str) -> bool:
        """Whether `name` in the runs directory (a home or its root) is a live worker's."""
        with self._lock:
            return name.removesuffix(".root") in self._live

    def worker_for(self, spec: JobSpec, owner: str) -> Worker | None:
        """A worker for the job, if it can run in one and one starts (else it runs cold)."""
        key = warm_key(spec, owner)
        if key is None:
            return None
        try:
            return self.take(key, spec)
        except (SandrunError, OSError) as exc:
            log.warning("a warm worker did not start (%s): the job runs cold", exc)
            return None

    def take(self, key: WarmKey, spec: JobSpec) -> Worker:
        """An idle worker for `key`, or a new one (raises AgentError if it cannot start)."""
        with self._lock:
            self._kept.note(key, spec, self.clock())
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        return self._start(key, spec)

    def give_back(self, worker: Worker) -> None:
        """After a call: keep the worker warm, or retire it."""
        retire = not worker.reusable or worker.calls >= self.max_calls
        if not retire:  # what a call wrote beside its scratch goes too
            with contextlib.suppress(OSError):
                os.chmod(worker.home, 0o700)  # as it was, whatever the job made it
            for entry in os.scandir(worker.home):
                if entry.is_dir(follow_symlinks=False):
                    remove_tree(Path(entry.path))
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        evicted = None
        with self._lock:
            if not retire and not self._closed:
                worker.idle_since = self.clock()
                self._idle.setdefault(worker.key, []).append(worker)
                idle = [w for workers in self._idle.values() for w in workers]
                if len(idle) <= self.max_idle:
                    return
                now = self.clock()
                evicted = min(
                    (w for w in idle if not self._protected(w.key, now)) or idle,
                    key=lambda w: w.idle_since,
                )
                self._idle[evicted.key].remove(evicted)
        self._retire(evicted or worker)

    def retire_idle(self) -> None:
        """Retire the workers idle for longer than their key's idle timeout, but for the
        `min_workers` a key keeps while its calls come."""
        now = self.clock()
        stale: list[Worker] = []
        with self._lock:
            for key, workers in self._idle.items():
                for worker in sorted(workers, key=lambda w: w.idle_since):
                    if now - worker.idle_since >= self._kept.idle_for(key):
                        if not self._protected(key, now):
                            stale.append(worker)
                            workers.remove(worker)
                            self._live.pop(worker.home.name, None)  # counted gone already
            self._idle = {key: workers for key, workers in self._idle.items() if workers}
            self._kept.forget(now, set(self._live.values()))
        for worker in stale:
            self._retire(worker)

    def keep_warm(self) -> None:
        """Start workers for the keys that keep more (`min_workers`) than they have, while
        their calls come; never past the idle cap. Slow (each starts a sandbox): called
        from the agent's heartbeat loop, not from an attempt's."""
        now = self.clock()
        with self._lock:
            if self._closed:
                return
            have = Counter(self._live.values())
            room = self.max_idle - sum(len(w) for w in self._idle.values())
            wanted = []
            for key, spec, keep in self._kept.wanted(now):
                more = max(min(keep - have[key], room), 0)
                wanted += [(key, spec)] * more
                room -= more
        for key, spec in wanted:
            try:
                worker = self._start(key, spec)
            except (SandrunError, OSError) as exc:
                log.warning("a warm worker kept for %s did not start (%s)", key.owner, exc)
                return
            self.give_back(worker)

    def _protected(self, key: WarmKey, now: float) -> bool:
        """Whether `key`'s workers are all among the `min_workers` it keeps now."""
        keep = self._kept.minimum(key, now)
        return keep > 0 and sum(1 for k in self._live.values() if k == key) <= keep

    def close(self) -> None:
        """Retire every idle worker; busy ones retire when their call ends."""
        with self._lock:
            self._closed = True
            idle = [w for workers in self._idle.values() for w in workers]
            self._idle.clear()
        for worker in idle:
            self._retire(worker)

    def report(self) -> WarmReport:
        """The workers, and by key, as `sandrun nodes --json` shows them (a key's group to
        its owner only)."""
        now = self.clock()
        with self._lock:
            live = Counter(self._live.values())
            idle = sum(len(w) for w in self._idle.values())
            groups = [
                WarmGroup(
                    owner=key.owner,
                    functions=self._kept.functions(key)[:16],
                    instance=key.instance is not None,
                    workers=count,
                    idle=len(self._idle.get(key, [])),
                    min_workers=self._kept.minimum(key, now),
                    idle_timeout=min(self._kept.idle_for(key), 1e9),
                )
                for key, count in live.items()
            ]
            return WarmReport(workers=len(self._live), idle=idle, groups=groups[:64])

    def _start(self, key: WarmKey, spec: JobSpec) -> Worker:
        name = f"{PREFIX}{uuid.uuid4().hex[:12]}"
        home = self.runs_dir / name
        home.mkdir(parents=True)
        with self._lock:
            self._live[name] = key
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker = Worker(key, home, ours, self.sandboxing.backend.isolates)
        try:
            proc = self._launch(worker, spec, theirs)
            inner = worker.answer(SANDBOX_START, said_pid)  # its hello, once warm
            worker.server = find_server(proc.pid, inner)
            log.info("warm worker %s started for %s", worker.home.name, key.owner)
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
            "PYTHONUNBUFFERED": "1",  # as a job's Python starts: its calls' logs arrive live
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
        log.info(
            "warm worker %s retired after %d job(s)%s",
            worker.home.name,
            worker.calls,
            "" if worker.reusable else ": a job left something behind, or it died",
        )
        worker.stop()
        if worker.confined is not None:
            self.sandboxing.release(worker.confined)
        if worker.cgroup is not None and self.sandboxing.cgroups is not None:
            self.sandboxing.cgroups.release(worker.cgroup)  # its jobs' cgroup
            worker.cgroup = None
        remove_tree(worker.home)
        with self._lock:
            self._live.pop(worker.home.name, None)
