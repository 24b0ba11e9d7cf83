"""Runs one attempt: spawn, pump logs, enforce the timeout, obey cancel, collect outputs.

The attempt's process leads its own session and process group. When it exits, whatever
it left running in its group is killed (the job is over, as in Slurm). A timeout or a
cancel sends SIGTERM to the whole tree, then SIGKILL after `kill_grace` seconds.
"""

from __future__ import annotations

import errno
import os
import resource
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sandrun.agent.control import ControlPlane
from sandrun.agent.logsink import LogSink
from sandrun.agent.outputs import collect_outputs
from sandrun.agent.proctree import signal_tree, start_time
from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import SandrunError, StaleAttempt
from sandrun.models import AttemptResult, Claim, Stream, Usage
from sandrun.spec import JobSpec
from sandrun.states import FailureReason

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_READ = 1 << 16
_DRAIN_AFTER_EXIT = 1.0  # seconds to keep reading pipes held open by escaped children


@dataclass
class AttemptControl:
    """Signals from the agent to a running attempt."""

    cancel: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)  # lease gone: stop quietly
    handback: threading.Event = field(default_factory=threading.Event)  # draining: give back


def job_env(spec: JobSpec, claim: Claim, home: Path) -> dict[str, str]:
    """Only the declared env over safe defaults: the agent's own environment never leaks."""
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",  # so a Python job's logs arrive while it runs
        "SANDRUN_JOB_ID": claim.job.id,
        "SANDRUN_JOB_NAME": claim.job.name,
        "SANDRUN_ATTEMPT": str(claim.attempt),
    }
    env.update(spec.env)
    return env


class Executor:
    def __init__(
        self,
        control: ControlPlane,
        artifacts: LocalArtifactStore,
        runs_dir: Path,
        kill_grace: float = 5.0,
    ) -> None:
        self.control = control
        self.artifacts = artifacts
        self.runs_dir = runs_dir
        self.kill_grace = kill_grace

    def run(self, claim: Claim, ctl: AttemptControl) -> AttemptResult | None:
        """Run the attempt to its end. None means it lost its job and must not report."""
        spec = claim.job.spec
        # One scratch directory per attempt: the job's HOME, and its working directory
        # unless the spec names one.
        scratch = self.runs_dir / f"{claim.job.id}.{claim.attempt}"
        scratch.mkdir(parents=True, exist_ok=True)
        workdir = Path(spec.working_dir) if spec.working_dir else scratch
        if not workdir.is_dir():
            return _spawn_error(f"working_dir {str(workdir)!r} is not a directory on this node")
        script_path = None
        if spec.script is not None:
            script_path = scratch / ".sandrun-script"
            script_path.write_text(spec.script)
        argv = spec.argv(str(script_path) if script_path else None)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=job_env(spec, claim, scratch),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            code = 127 if exc.errno == errno.ENOENT else 126
            return _spawn_error(f"cannot run {argv[0]!r}: {exc.strerror}", code)
        started = time.monotonic()
        try:
            self.control.start(claim.ref, proc.pid, start_time(proc.pid))
            sink = LogSink(self.control, claim)
            reason, status, rusage = self._supervise(proc, spec, sink, ctl, started)
            sink.flush()
        except BaseException as exc:
            # Whatever went wrong, the job's processes must not outlive its attempt.
            if proc.returncode is None:
                signal_tree(proc.pid, signal.SIGKILL)
                _reap(proc)
            if isinstance(exc, StaleAttempt):
                return None
            raise
        if reason == "lost":
            return None
        usage = Usage(
            wall_seconds=time.monotonic() - started,
            cpu_seconds=rusage.ru_utime + rusage.ru_stime,
            max_rss_mb=rusage.ru_maxrss / 1024,
        )
        result = _result(reason, status, usage)
        if spec.outputs and result.failure_reason is not FailureReason.CANCELLED:
            try:
                outputs = collect_outputs(workdir, spec.outputs, self.artifacts, claim.attempt)
            except (OSError, SandrunError) as exc:
                if result.failure_reason is None:
                    result = result.model_copy(
                        update={
                            "failure_reason": FailureReason.OUTPUT_ERROR,
                            "message": f"collecting outputs failed: {exc}",
                        }
                    )
            else:
                result = result.model_copy(update={"outputs": outputs})
        return result

    def _supervise(
        self,
        proc: subprocess.Popen[bytes],
        spec: JobSpec,
        sink: LogSink,
        ctl: AttemptControl,
        started: float,
    ) -> tuple[str | None, int, resource.struct_rusage]:
        """Pump output until the process ends; return (why we stopped it, status, rusage)."""
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        streams_by_fd: dict[int, Stream] = {
            proc.stdout.fileno(): "stdout",
            proc.stderr.fileno(): "stderr",
        }
        sel.register(proc.stdout, selectors.EVENT_READ, "pipe")
        sel.register(proc.stderr, selectors.EVENT_READ, "pipe")
        pidfd = _pidfd(proc.pid)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ, "exit")
        deadline = started + spec.timeout if spec.timeout else None
        reason: str | None = None
        kill_at: float | None = None
        exited: tuple[int, resource.struct_rusage] | None = None
        drain_until: float | None = None
        streams = 2
        try:
            while streams or exited is None:
                for key, _ in sel.select(0.05):
                    if key.data == "exit":
                        sel.unregister(key.fileobj)
                        continue
                    chunk = os.read(key.fd, _READ)
                    if chunk:
                        sink.add(streams_by_fd[key.fd], chunk)
                    else:
                        sel.unregister(key.fileobj)
                        streams -= 1
                if exited is None:
                    exited = _poll_exit(proc)
                    if exited is not None:
                        drain_until = time.monotonic() + _DRAIN_AFTER_EXIT
                if drain_until is not None and time.monotonic() > drain_until:
                    break  # an escaped child holds the pipes open; the job is over
                sink.maybe_flush()
                now = time.monotonic()
                if reason is None and exited is None:
                    if ctl.cancel.is_set():
                        reason = "cancelled"
                    elif ctl.lost.is_set():
                        reason = "lost"
                    elif ctl.handback.is_set():
                        reason = "handback"
                    elif deadline is not None and now >= deadline:
                        reason = "timeout"
                    if reason is not None:
                        signal_tree(proc.pid, signal.SIGTERM)
                        kill_at = now + (0 if reason == "lost" else self.kill_grace)
                if kill_at is not None and now >= kill_at and exited is None:
                    signal_tree(proc.pid, signal.SIGKILL)
                    kill_at = None
        finally:
            sel.close()
            if pidfd is not None:
                os.close(pidfd)
            proc.stdout.close()
            proc.stderr.close()
        assert exited is not None
        return reason, exited[0], exited[1]


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # old kernel: the 50 ms select timeout polls instead


def _poll_exit(proc: subprocess.Popen[bytes]) -> tuple[int, resource.struct_rusage] | None:
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


def _reap(proc: subprocess.Popen[bytes]) -> None:
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None and not pipe.closed:
            pipe.close()


def _spawn_error(message: str, exit_code: int = 127) -> AttemptResult:
    return AttemptResult(
        exit_code=exit_code, failure_reason=FailureReason.SPAWN_ERROR, message=message
    )


def _result(reason: str | None, status: int, usage: Usage) -> AttemptResult:
    code = os.waitstatus_to_exitcode(status)
    exit_code = 128 - code if code < 0 else code  # a signal N reads as 128+N, as in shells
    if reason == "timeout":
        return AttemptResult(exit_code=exit_code, failure_reason=FailureReason.TIMEOUT, usage=usage)
    if reason == "cancelled":
        return AttemptResult(
            exit_code=exit_code, failure_reason=FailureReason.CANCELLED, usage=usage
        )
    if reason == "handback":  # an infrastructure event: retried without using retries
        return AttemptResult(
            exit_code=exit_code,
            failure_reason=FailureReason.NODE_LOST,
            message="handed back: the agent was drained",
            usage=usage,
        )
    if code < 0:
        name = signal.Signals(-code).name
        return AttemptResult(
            exit_code=exit_code,
            failure_reason=FailureReason.SIGNALED,
            message=f"killed by {name}",
            usage=usage,
        )
    failure = FailureReason.EXIT_CODE if code else None
    return AttemptResult(exit_code=exit_code, failure_reason=failure, usage=usage)
