"""An agent's sandboxing: the chosen backend, its cgroups, rlimits and job uids.

Each attempt starts behind a gate that waits on its stdin until the agent has put it in the
attempt's cgroup and set its rlimits: bubblewrap's own (`--block-fd`; it tells the pid of
the sandbox's first process on `--info-fd`), else a tiny shell that then execs the sandbox.
Everything the job later forks inherits both, and nothing runs before they hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from sandrun.agent.sandbox.base import HOST_ENV, Box, Sandbox
from sandrun.agent.sandbox.bwrap import BwrapSandbox
from sandrun.agent.sandbox.cgroups import AttemptCgroup, CgroupTree
from sandrun.agent.sandbox.enter import carried, with_env
from sandrun.agent.sandbox.plain import NoSandbox
from sandrun.agent.sandbox.seccomp import SeccompFilter
from sandrun.agent.sandbox.seccomp import build as build_seccomp
from sandrun.agent.sandbox.uids import UidPool
from sandrun.agent.sandbox.unshare import UnshareSandbox
from sandrun.agent.sandbox.view import FsView
from sandrun.errors import AgentError
from sandrun.models import SandboxReport
from sandrun.spec import JobSpec
from sandrun.states import FailureReason

log = logging.getLogger("sandrun.agent")

Kind = Literal["auto", "bwrap", "unshare", "none"]
KINDS: tuple[Kind, ...] = ("auto", "bwrap", "unshare", "none")
_BACKENDS: dict[str, type[Sandbox]] = {
    "bwrap": BwrapSandbox,
    "unshare": UnshareSandbox,
    "none": NoSandbox,
}
# The gate: wait for the agent's go (on stdin), then run the sandbox with stdin closed.
GATE = ["/bin/sh", "-c", 'read -r go || exit 125; exec "$@" </dev/null', "sandrun-gate"]
DEFAULT_DISK_MB = 20 * 1024


@dataclass(frozen=True)
class JobDefaults:
    """The operator's limits for what a spec leaves open (`sandrun agent --job-memory ...`)."""

    memory_mb: int | None = None  # a job with no `memory` gets this limit
    disk_mb: int = DEFAULT_DISK_MB  # the most a job's scratch may hold, whatever it asks


@dataclass
class Confined:
    """One attempt's sandbox: its command line, cgroup, rlimits, uid and limits in force."""

    argv: list[str]
    limits: dict[int, tuple[int, int]]
    cgroup: AttemptCgroup | None
    uid: int | None
    root: Path | None
    memory_mb: int | None = None  # the memory limit in force: the spec's or the default
    disk_mb: int = DEFAULT_DISK_MB  # the scratch's limit in force
    pass_fds: tuple[int, ...] = ()  # descriptors the sandbox must inherit (the filter)
    env: dict[str, str] = field(default_factory=lambda: dict(HOST_ENV))  # to start `argv` with

    def confine(self, pid: int) -> None:
        """Apply the cgroup and rlimits to the gated process `pid` (before it may go on)."""
        if self.cgroup is not None:
            self.cgroup.attach(pid)
        for which, value in self.limits.items():
            resource.prlimit(pid, which, value)


class Sandboxing:
    def __init__(
        self,
        backend: Sandbox,
        cgroups: CgroupTree | None,
        uids: UidPool | None,
        defaults: JobDefaults | None = None,
        seccomp: SeccompFilter | None = None,
        seccomp_note: str = "",
        owned: bool = False,
    ) -> None:
        self.backend = backend
        self.cgroups = cgroups
        self.uids = uids
        self.defaults = defaults or JobDefaults()
        self.seccomp = seccomp if backend.filters else None
        self.seccomp_note = seccomp_note or f"not loaded by the {backend.name} sandbox"
        self.owned = owned  # whether its cgroups are this agent's alone (open_sandboxing's owner)

    def end_leftovers(self) -> int:
        """Kill what a previous run of this agent left in its cgroups; how many attempts.
        Only for an agent that owns its cgroups, once it is sure to be the only one."""
        if self.cgroups is None or not self.owned:
            return 0
        return self.cgroups.sweep()

    def report(self) -> SandboxReport:
        """What this agent enforces on this machine, and how."""
        cg = self.cgroups.describe() if self.cgroups else None
        per_uid = "rlimit (one uid per attempt)" if self.uids else "not enforced (needs root)"
        memory = f"{cg} memory" if cg else "rlimit (address space)"
        if self.defaults.memory_mb is not None:
            memory += f", {self.defaults.memory_mb} MiB unless the job asks"
        capped = self.backend.caps_tmpfs()
        tmp = "tmpfs capped at the memory limit" if capped else "tmpfs, not capped"
        return SandboxReport(
            backend=self.backend.name,
            view=self.backend.view.mode if self.backend.isolates else "host",
            job_user=_job_user(self.uids),
            limits={
                "memory": memory,
                "processes": f"{cg} pids" if cg else per_uid,
                "cpu_time": "rlimit",
                "file_size": "rlimit",
                "timeout": "agent",
                "log_size": "agent",
                "output_size": "agent",
                "disk": f"agent measures the scratch, at most {self.defaults.disk_mb} MiB",
                "tmp": tmp if self.backend.isolates else "not enforced (the host's /tmp)",
                "network": "namespace" if self.backend.isolates else "not enforced",
            },
            seccomp=self.seccomp.describe() if self.seccomp else f"none: {self.seccomp_note}",
        )

    def prepare(
        self, name: str, spec: JobSpec, box: Box, env: dict[str, str] | None = None
    ) -> Confined:
        """The attempt's sandbox. Its program gets `env`, once privileges are dropped
        (`enter.with_env`); its command line must be started with `confined.env`."""
        uid = self.uids.acquire() if self.uids else None
        try:
            return self._prepare(name, spec, box, uid, env)
        except BaseException:
            if uid is not None and self.uids:
                self.uids.release(uid)
            raise

    def _prepare(
        self, name: str, spec: JobSpec, box: Box, uid: int | None, env: dict[str, str] | None
    ) -> Confined:
        if uid is not None:  # the scratch (first writable) is the agent's to hand over
            for path in (box.writable[0], *box.handed):
                hand_over(path, uid)  # and the volumes and secret files it sees
        root = box.root if self.backend.builds_root else None
        if root is not None:
            root.mkdir(exist_ok=True)
        seccomp_fd = self.seccomp.open_fd() if self.seccomp is not None else None
        if env is not None:
            box = replace(box, argv=with_env(box.argv))
        fds = (seccomp_fd,) if seccomp_fd is not None else ()
        try:
            confined = self.confinement(name, spec, uid)
            # Each tmpfs holds at most the memory limit: its pages are charged to the job's
            # memory cgroup too, but without one the size is the only bound.
            memory = confined.memory_mb
            box = replace(
                box,
                network=spec.network,
                uid=uid,
                root=root,
                tmp_size=memory << 20 if memory is not None else None,
                seccomp_fd=seccomp_fd,
            )
            command = self.backend.command(box)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        gated = box.info_fd is not None and self.backend.gates_itself
        confined.argv = command if gated else [*GATE, *command]
        confined.uid, confined.root = uid, root
        confined.pass_fds = fds
        confined.env = HOST_ENV | carried(env) if env is not None else dict(HOST_ENV)
        return confined

    def confinement(
        self, name: str, spec: JobSpec, uid: int | None = None, reused: AttemptCgroup | None = None
    ) -> Confined:
        """The cgroup and rlimits of one attempt (no command: a warm worker's call runs in
        its worker's sandbox), in the `reused` cgroup of its worker's previous attempt where
        it can be. `release` undoes it."""
        memory = spec.memory if spec.memory is not None else self.defaults.memory_mb
        disk = min(spec.limits.disk or self.defaults.disk_mb, self.defaults.disk_mb)
        limits: dict[int, tuple[int, int]] = {resource.RLIMIT_CORE: (0, 0)}
        if spec.limits.cpu_time is not None:
            seconds = max(1, int(spec.limits.cpu_time))
            limits[resource.RLIMIT_CPU] = (seconds, seconds + 5)  # SIGXCPU, then SIGKILL
        # No one file may be larger than the disk limit: the measurement between walks
        # cannot miss a single runaway file.
        size = min(spec.limits.file_size or disk, disk) << 20
        limits[resource.RLIMIT_FSIZE] = (size, size)
        cgroup = None
        if reused is not None and reused.reuse(memory, spec.limits.processes):
            cgroup = reused
        elif self.cgroups is not None:
            if reused is not None:
                self.cgroups.release(reused)
            cgroup = self.cgroups.create(name, memory, spec.limits.processes)
        else:
            # CUDA reserves far more address space than memory: only a GPU job's own
            # request limits it there.
            if memory is not None and (spec.memory is not None or spec.gpus is None):
                limits[resource.RLIMIT_AS] = (memory << 20, memory << 20)
            if uid is not None:
                limits[resource.RLIMIT_NPROC] = (spec.limits.processes,) * 2
        return Confined([], limits, cgroup, None, None, memory, disk)

    def release(self, confined: Confined, keep_cgroup: bool = False) -> None:
        """After the attempt: kill what is left in its cgroup (and remove it, unless it is
        kept for the worker's next attempt), free its uid and root."""
        for fd in confined.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        confined.pass_fds = ()
        if confined.cgroup is not None and keep_cgroup:
            confined.cgroup.kill_all()
        elif confined.cgroup is not None and self.cgroups is not None:
            self.cgroups.release(confined.cgroup)
        if confined.root is not None:
            with contextlib.suppress(OSError):
                confined.root.rmdir()
        if confined.uid is not None and self.uids is not None:
            self.uids.release(confined.uid)

    def limit_reason(
        self, confined: Confined, spec: JobSpec, signum: int | None, failed: bool, cpu: float
    ) -> tuple[FailureReason, str] | None:
        """Which limit ended a job that ended on its own, if one did."""
        group = confined.cgroup
        if group is not None and group.oom_killed():
            memory = confined.memory_mb
            asked = "" if spec.memory is not None else " (this node's default: set `memory`)"
            return FailureReason.OOM, f"used more than its memory limit of {memory} MiB{asked}"
        # A job may also set these rlimits on itself: then there is no spec limit to name.
        cpu_limit = spec.limits.cpu_time
        if signum == signal.SIGXCPU or (
            signum == signal.SIGKILL and cpu_limit is not None and cpu >= cpu_limit
        ):
            limit = f" of {cpu_limit:g} s" if cpu_limit is not None else ""
            return FailureReason.CPU_LIMIT, f"used its CPU time limit{limit}"
        file_size = spec.limits.file_size
        if signum == signal.SIGXFSZ and (file_size is None or file_size >= confined.disk_mb):
            return FailureReason.DISK_LIMIT, disk_message(confined.disk_mb, "wrote a file")
        if signum == signal.SIGXFSZ:
            size = spec.limits.file_size
            limit = f" of {size} MiB" if size is not None else ""
            return FailureReason.FILE_LIMIT, f"wrote a file past its size limit{limit}"
        if failed and group is not None and group.hit_process_limit():
            return (
                FailureReason.PROCESS_LIMIT,
                f"hit its limit of {spec.limits.processes} processes",
            )
        return None


def disk_message(limit_mb: int, what: str = "filled its scratch directory") -> str:
    return f"{what} past its disk limit of {limit_mb} MiB"


def open_sandboxing(
    kind: Kind,
    view: FsView,
    *,
    job_uids: bool,
    scratch: Path | None = None,
    run_as: int | None = None,
    defaults: JobDefaults | None = None,
    owner: Path | None = None,
) -> Sandboxing:
    """The sandboxing asked for, checked on this machine; `auto` takes the best that works.
    A root agent runs each attempt as a uid of its own (`job_uids`), or all as `run_as`.
    A bubblewrap sandbox loads the default seccomp filter where libseccomp can build it.
    `owner` (the agent's work directory) gives the agent cgroups of its own, so that
    `end_leftovers` can kill what a previous run of it left.

    `none` is never chosen silently: `auto` says loudly when it has to fall back to it.
    """
    backend = _backend(kind, view, scratch)
    seccomp, note = build_seccomp() if backend.filters else (None, "")
    if seccomp is not None:
        problem = probe(backend, scratch, seccomp)
        if problem is not None:
            seccomp, note = None, f"the kernel refused it ({problem})"
    if backend.filters and seccomp is None:
        log.warning("jobs run without a seccomp filter: %s", note)
    name = "sandrun"
    if owner is not None:
        name += "-" + hashlib.sha256(str(owner.absolute()).encode()).hexdigest()[:12]
    cgroups = CgroupTree.detect(name)
    uids = None
    if os.geteuid() == 0 and run_as is not None:
        uids = UidPool(shared=run_as)
    elif os.geteuid() == 0 and job_uids:
        uids = UidPool()
    return Sandboxing(backend, cgroups, uids, defaults, seccomp, note, owned=owner is not None)


def _backend(kind: Kind, view: FsView, scratch: Path | None) -> Sandbox:
    """The backend `kind` names, if it works here; `auto`: the best that does, or none
    (said loudly)."""
    if kind not in KINDS:
        raise AgentError(
            f"sandbox {kind!r} is not known", suggestions=[f"use one of {', '.join(KINDS)}"]
        )
    candidates = ["bwrap", "unshare"] if kind == "auto" else [kind]
    why: dict[str, str] = {}
    backend: Sandbox | None = None
    for name in candidates:
        candidate = _BACKENDS[name](view)
        problem = probe(candidate, scratch)
        if problem is None:
            backend = candidate
            break
        why[name] = problem
    if backend is None:
        if kind != "auto":
            raise AgentError(
                f"the {kind} sandbox does not work here: {why[kind]}",
                suggestions=["install bubblewrap (apt install bubblewrap)", "--sandbox auto"],
            )
        backend = NoSandbox(view)
        log.warning(
            "!!! NO SANDBOX: jobs run unconfined (no filesystem, process or network "
            "isolation) because %s. Install bubblewrap, or pass --sandbox none to "
            "choose this knowingly.",
            "; ".join(f"{k}: {v}" for k, v in why.items()),
        )
    return backend


def _job_user(uids: UidPool | None) -> str:
    if uids is None:
        return "the agent's user"
    return f"uid {uids.shared}" if uids.shared is not None else "per-attempt uid"


def probe(
    backend: Sandbox, scratch: Path | None = None, seccomp: SeccompFilter | None = None
) -> str | None:
    """None if `backend` can run a job here (under `seccomp`, if given), else why not."""
    if backend.name == "none":
        return None
    if shutil.which(backend.name) is None:  # each backend is named for its tool
        return f"{backend.name} is not installed"
    fd = seccomp.open_fd() if seccomp is not None else None
    with tempfile.TemporaryDirectory(dir=scratch, prefix="probe-") as tmp:
        box = Box(["true"], Path(tmp), [Path(tmp)], root=Path(tmp) / ".root", seccomp_fd=fd)
        if box.root is not None:
            box.root.mkdir()
        try:
            done = subprocess.run(
                backend.command(box),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                check=False,
                pass_fds=(fd,) if fd is not None else (),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        finally:
            if fd is not None:
                os.close(fd)
    if done.returncode != 0:
        text = done.stderr.decode(errors="replace").strip().splitlines()
        return text[-1] if text else f"it exited with code {done.returncode}"
    return None


def hand_over(root: Path, uid: int) -> None:
    """Hand the scratch, and what the agent put in it (code, inputs), to the job's uid."""
    os.chown(root, uid, uid)
    for parent, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.lchown(os.path.join(parent, name), uid, uid)
