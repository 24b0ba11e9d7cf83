"""Runs one attempt: prepare it, spawn it, supervise it, collect its outputs (and what it
saved to be resumed from). It runs in the agent's sandbox, in a cgroup of its own where it
can have one, leading its own process group; when it exits, whatever it left running is
killed (the job is over, as in Slurm)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import subprocess
import threading
import time
from functools import partial
from pathlib import Path

from sandrun.agent import checkpoints, execs, mounts
from sandrun.agent.control import ControlPlane
from sandrun.agent.diskwatch import DiskWatch
from sandrun.agent.envbuild import Builder
from sandrun.agent.fetch import Fetcher
from sandrun.agent.freezer import Freezer
from sandrun.agent.gitcache import GitCache
from sandrun.agent.jobenv import job_env, python_dir
from sandrun.agent.logsink import LogSink
from sandrun.agent.process import InfoPipe, Running, Spawned, reap, sandbox_failed
from sandrun.agent.proctree import kill_if_same, signal_tree, start_time
from sandrun.agent.programs import find_program
from sandrun.agent.reporter import Reporter
from sandrun.agent.results import attempt_result, spawn_error, stopped_early
from sandrun.agent.sandbox import Box, Confined, FsView, Sandboxing, open_sandboxing
from sandrun.agent.sandbox.devices import GpuSlots
from sandrun.agent.sandbox.runtime import hand_over
from sandrun.agent.sandbox.view import PYTHON_DIR
from sandrun.agent.settings import RunSettings
from sandrun.agent.supervise import AttemptControl, Stop, control_stop, supervise
from sandrun.agent.workers.pool import is_call, open_pool
from sandrun.agent.workers.worker import Interrupted, Worker, exec_failed
from sandrun.agent.workspace import materialize, remove_tree, sweep_runs
from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import SandrunError, StaleAttempt, WorkerDied
from sandrun.models import AttemptResult, Claim
from sandrun.states import FailureReason

log = logging.getLogger("sandrun.agent")

# Ends that leave nothing worth looking into: the scratch goes at once.
_NOTHING_TO_SEE = (None, FailureReason.CANCELLED, FailureReason.NODE_LOST)


class Executor:
    def __init__(
        self,
        control: ControlPlane,
        reporter: Reporter,
        artifacts: LocalArtifactStore,
        runs_dir: Path,
        settings: RunSettings,
        sandboxing: Sandboxing | None = None,
        gpus: int = 0,
    ) -> None:
        self.control = control
        self.reporter = reporter  # starts go through it (logs go straight to `control`)
        self.artifacts = artifacts
        self.runs_dir = runs_dir
        self.settings = settings
        self.sandboxing = sandboxing or open_sandboxing("none", FsView(), job_uids=False)
        self.gpus = GpuSlots(gpus)
        self.repos = GitCache(runs_dir.parent / "git", allow_local=settings.allow_local_repos)
        self.python_dir = PYTHON_DIR if self.sandboxing.backend.isolates else python_dir(runs_dir)
        self._active: set[str] = set()  # the attempts whose scratch is in use
        self._lock = threading.Lock()
        self._swept = 0.0
        self.disks = DiskWatch()
        here = runs_dir.parent
        self.sources = mounts.Sources(
            volumes=here / "volumes",  # the volumes whose bytes it holds
            secrets=here / "secrets",  # secret files, per attempt, while it runs
            fetcher=Fetcher(control, artifacts, here / "data"),  # data mounts
            builder=Builder(here / "envs"),  # environments
        )
        self.workers = open_pool(self.sandboxing, runs_dir, self.python_dir, settings.warm_idle)

    def run(self, claim: Claim, ctl: AttemptControl) -> AttemptResult | None:
        """Run the attempt to its end. None means it lost its job and must not report."""
        spec = claim.job.spec
        if spec.working_dir is not None and not self.settings.host_paths:
            return spawn_error(
                f"working_dir {spec.working_dir!r}: this agent runs jobs only in what they "
                "bring (code, inputs, a repository), never in a directory of its host"
            )
        # One scratch directory per attempt: the job's HOME, and its working directory
        # unless the spec names one. It goes when the attempt ends, unless it failed.
        # It runs in a warm worker where one can be had; its scratch is then in the
        # worker's home, and leaves it (kept or removed) before the worker's next job.
        name = f"{claim.job.id}.{claim.attempt}"
        worker = self.workers.worker_for(claim.job.spec, claim.job.owner) if self.workers else None
        kept = self.runs_dir / name
        scratch = worker.home / name if worker else kept
        with self._lock:
            self._active.add(name)
        result = None
        try:
            scratch.mkdir(parents=True, exist_ok=True)
            result = self._attempt(claim, ctl, name, scratch, worker)
            return result
        finally:
            with self._lock:
                self._active.discard(name)
            self._pid_record(name).unlink(missing_ok=True)
            execs.forget(ctl.inside, self._exec_record(name))
            mounts.finish(claim, self.sources.volumes, self.sources.secrets / name)
            remove_tree(checkpoints.directory(scratch))  # packed with its end, if it saved
            nothing_to_see = result is None or result.failure_reason in _NOTHING_TO_SEE
            if nothing_to_see or not self.settings.keep_failed:
                remove_tree(scratch)
            else:
                with contextlib.suppress(OSError):
                    scratch.rename(kept)  # out of a worker's home
                    os.utime(kept)  # kept `keep_failed` seconds from now
            if worker is not None and self.workers is not None:
                self.workers.give_back(worker)
            self.sweep(every=1.0)

    def _pid_record(self, name: str) -> Path:
        """Where a running attempt's first process is recorded, for `end_leftovers`."""
        return self.runs_dir / f"{name}.pid"

    def _exec_record(self, name: str) -> Path | None:
        return self.runs_dir / f"{name}.exec.json" if self.settings.exec_records else None

    def end_leftovers(self) -> None:
        """At the agent's start: kill what a previous run of it left running (the agent was
        killed: a sandbox dies with it, a `none` job's children may not)."""
        remove_tree(self.sources.secrets)  # a killed agent's attempts' secret files
        ended = self.sandboxing.end_leftovers()
        for record in self.runs_dir.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                pid = json.loads(record.read_text())
                ended += kill_if_same(int(pid["pid"]), pid["started"])
            record.unlink(missing_ok=True)
        if ended:
            log.warning("killed what %d attempt(s) of a previous run left running", ended)

    def sweep(self, every: float = 0.0) -> None:
        """Retire idle warm workers; remove the scratch of attempts that ended over
        `keep_failed` seconds ago (and what a crash left); at most once per `every` s."""
        if self.workers is not None:
            self.workers.retire_idle()
        now = time.time()
        if now - self._swept < every:
            return
        self._swept = now
        sweep_runs(self.runs_dir, now - self.settings.keep_failed, self._in_use)

    def _in_use(self, entry: str) -> bool:
        """Whether this entry of the runs directory is a running attempt's or a worker's."""
        with self._lock:
            if entry.removesuffix(".root").removesuffix(".checkpoint") in self._active:
                return True
        return self.workers is not None and self.workers.owns(entry)

    def _attempt(
        self, claim: Claim, ctl: AttemptControl, name: str, scratch: Path, worker: Worker | None
    ) -> AttemptResult | None:
        spec = claim.job.spec
        workdir = Path(spec.working_dir) if spec.working_dir else scratch
        if not workdir.is_dir():
            return spawn_error(f"working_dir {str(workdir)!r} is not a directory on this node")
        view = self.sandboxing.backend.view
        if self.sandboxing.backend.isolates and workdir != scratch:
            inside = view.conceals(workdir.resolve())
            if inside is not None:
                return spawn_error(
                    f"working_dir {str(workdir)!r} is inside the agent's own state ({inside})"
                )
        try:
            commit = materialize(spec, workdir, self.control, self.artifacts, self.repos)
            ctl.saves = checkpoints.prepare(scratch, claim.job, self.control, self.artifacts)
        except SandrunError as exc:
            return spawn_error(f"cannot prepare the working directory: {exc.message}")
        script = scratch / ".sandrun-script"
        if spec.script is not None:
            script.write_text(spec.script)
        argv = spec.argv(str(script) if spec.script is not None else None)
        env = job_env(spec, claim, scratch, self.python_dir)
        try:
            isolates = self.sandboxing.backend.isolates
            data = mounts.prepare(claim, name, self.sources, isolates, env, workdir)
        except mounts.DataError as exc:
            ctl.end_logs = mounts.log_chunks(claim, exc.log)
            return spawn_error(str(exc)).model_copy(update={"failure_reason": exc.reason})
        ctl.env = env = env | data.env  # the exec's too, CUDA_VISIBLE_DEVICES included
        writable = [scratch, *([workdir] if workdir != scratch else []), ctl.saves]
        problem = find_program(self.sandboxing.backend, argv[0], env, workdir, writable)
        if problem is not None:
            return spawn_error(*problem)
        if worker is not None:
            run = None if is_call(spec) else argv
            return self._run_warm(claim, ctl, worker, (run, env), scratch, commit)
        with (
            self.gpus.assign(spec.gpus.count if spec.gpus else 0) as gpus,
            InfoPipe.open(self.sandboxing.backend.gates_itself) as info,
        ):
            if self.gpus.total:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
            box = Box(
                argv,
                workdir,
                writable,
                devices=tuple(self.gpus.devices(gpus)),
                root=self.runs_dir / f"{name}.root",
                info_fd=info.write_fd if info else None,
                binds=data.binds,
                handed=(*data.owned, ctl.saves),
            )
            confined = self.sandboxing.prepare(name, spec, box, env)
            try:
                cold = (confined, data)
                return self._run(claim, ctl, cold, scratch, workdir, commit, info)
            finally:
                self.sandboxing.release(confined)

    def _run(
        self,
        claim: Claim,
        ctl: AttemptControl,
        run: tuple[Confined, mounts.Data],
        scratch: Path,
        workdir: Path,
        commit: str | None,
        info: InfoPipe | None,
    ) -> AttemptResult | None:
        confined, data = run
        try:
            proc = subprocess.Popen(
                confined.argv,
                cwd=workdir,
                env=confined.env,  # the job's own only reaches its program
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=((info.write_fd,) if info else ()) + confined.pass_fds,
            )
        except OSError as exc:
            if exc.errno == errno.E2BIG:  # the job's own argv and env: no node could exec it
                return spawn_error(f"its arguments and environment are too large: {exc}")
            return AttemptResult(
                failure_reason=FailureReason.INTERNAL, message=f"cannot start the sandbox: {exc}"
            )
        try:
            if not self._start_at_gate(proc, claim, ctl, confined, commit, info):
                return sandbox_failed(proc)
            running = Spawned(proc)
            launchers = self.sandboxing.backend.launchers
            return self._supervised(
                claim, ctl, running, confined, scratch, workdir, launchers, data=data
            )
        except BaseException as exc:
            # Whatever went wrong, the job's processes must not outlive its attempt.
            if proc.returncode is None:
                signal_tree(proc.pid, signal.SIGKILL)
                reap(proc)
            if isinstance(exc, StaleAttempt):
                return None
            raise

    def _run_warm(
        self,
        claim: Claim,
        ctl: AttemptControl,
        worker: Worker,
        run: tuple[list[str] | None, dict[str, str]],
        scratch: Path,
        commit: str | None,
    ) -> AttemptResult | None:
        """Run the attempt in `worker`: a forked child that execs `run`'s argv (or runs the
        function call), in `run`'s environment, confined like a cold attempt (in a cgroup,
        the worker's for its jobs, reused; its rlimits) before it passes its gate. A class
        worker's @enter counts toward the first call's timeout."""
        assert worker.confined is not None
        uid, spec = worker.confined.uid, claim.job.spec
        name = f"{worker.home.name}.job{worker.calls}"  # made anew only where it cannot be reused
        confined = self.sandboxing.confinement(name, spec, uid, worker.cgroup)
        worker.cgroup = None  # the attempt's now; the worker's again if it stays reusable
        started = time.monotonic()
        give_up = partial(control_stop, ctl, started + spec.timeout if spec.timeout else None)
        try:
            if uid is not None:
                hand_over(scratch, uid)
                hand_over(checkpoints.directory(scratch), uid)
            argv, env = run
            call = worker.call(scratch, env, confined.limits, argv, give_up)
            try:
                if confined.cgroup is not None:
                    confined.cgroup.attach(call.pid)
                self._announce(claim, ctl, call.pid, commit)
                call.open_gate()
                # Its disk use is all of the worker's home: the scratch's parent is writable.
                result = self._supervised(
                    claim, ctl, call, confined, worker.home, scratch, started=started, uid=uid
                )
                return exec_failed(call.exec_error, argv) if call.exec_error else result
            except BaseException:
                worker.reusable = False  # whatever of the call is left goes with it
                call.close()
                raise
        except WorkerDied as exc:
            return AttemptResult(failure_reason=FailureReason.INTERNAL, message=exc.message)
        except Interrupted as exc:
            return None if exc.stop is Stop.LOST else stopped_early(exc.stop, "in its @enter")
        except StaleAttempt:
            return None
        finally:
            self.sandboxing.release(confined, keep_cgroup=worker.reusable)
            worker.cgroup = confined.cgroup if worker.reusable else None

    def _supervised(
        self,
        claim: Claim,
        ctl: AttemptControl,
        running: Running,
        confined: Confined,
        measured: Path,
        workdir: Path,
        launchers: frozenset[str] = frozenset(),
        started: float | None = None,
        data: mounts.Data | None = None,
        uid: int | None = None,
    ) -> AttemptResult:
        """Watch a started attempt to its end (its disk use is what `measured` holds, and
        the volumes in `data` it writes); its result. Its wall time and timeout count from
        `started` (default: now). `uid`: a warm call's (its worker's), else its own."""
        spec = claim.job.spec
        started = time.monotonic() if started is None else started
        sink = LogSink(self.control, claim, limit=spec.limits.log_size << 20)
        data = data or mounts.Data()
        if data.build_log:  # its environment's build: the start of its logs
            sink.add("stderr", data.build_log)
        limit = confined.disk_mb << 20
        with (
            self.disks.watch(measured, limit, checkpoints.beside(ctl.saves, measured)) as disk,
            mounts.watched(self.disks, data) as volumes,
        ):
            grace = self.settings.kill_grace
            disks = [disk, *volumes]
            fields = {"job": claim.job.id, "attempt": claim.attempt}
            freezer = Freezer(running.pid, confined.cgroup, fields)
            record = self._exec_record(f"{claim.job.id}.{claim.attempt}")
            ids = (running.pid, confined.uid if uid is None else uid, confined, ctl.env)
            ctl.inside = execs.note(*ids, self.sandboxing, record)
            reason, ended = supervise(
                running, spec, sink, ctl, started, disks, grace, launchers, freezer
            )
        ctl.end_logs = sink.rest()  # sent with the end
        result = attempt_result(
            self.sandboxing, self.artifacts, claim, confined, workdir, reason, ended, started
        )
        result = mounts.checked(data, result)
        result = checkpoints.taken(result, reason, ctl, claim, self.artifacts)
        return result.model_copy(update={"stdout_sha256": sink.stdout_sha256()})

    def _start_at_gate(
        self,
        proc: subprocess.Popen[bytes],
        claim: Claim,
        ctl: AttemptControl,
        confined: Confined,
        commit: str | None,
        info: InfoPipe | None,
    ) -> bool:
        """Confine the job's process, report its start, then open its gate (the job's code
        runs only once it is confined). False if the sandbox never got as far as its gate."""
        assert proc.stdin is not None
        gated = proc.pid
        if info is not None:  # the sandbox's first process waits at its own gate
            child = info.child_pid()
            if child is None:
                return False
            gated = child  # the job is its descendant; the launcher only watches it
        confined.confine(gated)
        self._announce(claim, ctl, proc.pid, commit)
        proc.stdin.write(b"\n")  # the gate: now it may exec the job
        proc.stdin.close()
        return True

    def _announce(self, claim: Claim, ctl: AttemptControl, pid: int, commit: str | None) -> None:
        """Record the attempt's first process (for `end_leftovers`) and report its start."""
        began = start_time(pid)
        record = {"pid": pid, "started": began}
        self._pid_record(f"{claim.job.id}.{claim.attempt}").write_text(json.dumps(record))
        # Reported on the way, not waited for: a start the server refuses (the attempt
        # lost its job meanwhile) stops the job as lost, and its end is refused too.
        self.reporter.started(claim.ref, pid, began, commit, refused=ctl.lost.set)
