"""An agent's sandboxing: the chosen backend, its cgroups, rlimits and job uids.

Each attempt starts behind a gate that waits on its stdin until the agent has put it in the
attempt's cgroup and set its rlimits: bubblewrap's own (`--block-fd`; it tells the pid of
the sandbox's first process on `--info-fd`), else a tiny shell that then execs the sandbox.
Everything the job later forks inherits both, and nothing runs before they hold.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from sandrun.agent.sandbox.base import Box, Sandbox
from sandrun.agent.sandbox.bwrap import BwrapSandbox
from sandrun.agent.sandbox.cgroups import AttemptCgroup, CgroupTree
from sandrun.agent.sandbox.plain import NoSandbox
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
JOB_UID_BASE = 2_000_000_000  # root agents run each attempt as its own uid from here


class UidPool:
    """Distinct unprivileged uids for the attempts running at once on a root agent; or,
    `shared`, one uid for all (the user who started an embedded agent through sudo)."""

    def __init__(
        self, base: int = JOB_UID_BASE, size: int = 4096, shared: int | None = None
    ) -> None:
        self.shared = shared
        self._free = [] if shared is not None else list(range(base + size - 1, base - 1, -1))
        self._lock = threading.Lock()

    def acquire(self) -> int:
        if self.shared is not None:
            return self.shared
        with self._lock:
            return self._free.pop()

    def release(self, uid: int) -> None:
        if self.shared is not None:
            return
        with self._lock:
            self._free.append(uid)


@dataclass
class Confined:
    """One attempt's sandbox: its command line, cgroup, rlimits and uid."""

    argv: list[str]
    limits: dict[int, tuple[int, int]]
    cgroup: AttemptCgroup | None
    uid: int | None
    root: Path | None

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
    ) -> None:
        self.backend = backend
        self.cgroups = cgroups
        self.uids = uids

    def report(self) -> SandboxReport:
        """What this agent enforces on this machine, and how."""
        cg = self.cgroups.describe() if self.cgroups else None
        per_uid = "rlimit (one uid per attempt)" if self.uids else "not enforced (needs root)"
        return SandboxReport(
            backend=self.backend.name,
            view=self.backend.view.mode if self.backend.isolates else "host",
            job_user=_job_user(self.uids),
            limits={
                "memory": f"{cg} memory" if cg else "rlimit (address space)",
                "processes": f"{cg} pids" if cg else per_uid,
                "cpu_time": "rlimit",
                "file_size": "rlimit",
                "timeout": "agent",
                "log_size": "agent",
                "output_size": "agent",
                "network": "namespace" if self.backend.isolates else "not enforced",
            },
        )

    def prepare(self, name: str, spec: JobSpec, box: Box) -> Confined:
        uid = self.uids.acquire() if self.uids else None
        try:
            return self._prepare(name, spec, box, uid)
        except BaseException:
            if uid is not None and self.uids:
                self.uids.release(uid)
            raise

    def _prepare(self, name: str, spec: JobSpec, box: Box, uid: int | None) -> Confined:
        if uid is not None:  # the scratch (first writable) is the agent's to hand over
            _chown_tree(box.writable[0], uid)
        root = box.root if self.backend.builds_root else None
        if root is not None:
            root.mkdir(exist_ok=True)
        box = replace(box, network=spec.network, uid=uid, root=root)
        limits: dict[int, tuple[int, int]] = {resource.RLIMIT_CORE: (0, 0)}
        if spec.limits.cpu_time is not None:
            seconds = max(1, int(spec.limits.cpu_time))
            limits[resource.RLIMIT_CPU] = (seconds, seconds + 5)  # SIGXCPU, then SIGKILL
        if spec.limits.file_size is not None:
            size = spec.limits.file_size << 20
            limits[resource.RLIMIT_FSIZE] = (size, size)
        cgroup = None
        if self.cgroups is not None:
            cgroup = self.cgroups.create(name, spec.memory, spec.limits.processes)
        else:
            if spec.memory is not None:
                size = spec.memory << 20
                limits[resource.RLIMIT_AS] = (size, size)
            if uid is not None:
                limits[resource.RLIMIT_NPROC] = (spec.limits.processes,) * 2
        command = self.backend.command(box)
        gated = box.info_fd is not None and self.backend.gates_itself
        return Confined(command if gated else [*GATE, *command], limits, cgroup, uid, root)

    def release(self, confined: Confined) -> None:
        """After the attempt: kill what is left in its cgroup, free its uid and root."""
        if confined.cgroup is not None and self.cgroups is not None:
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
            return FailureReason.OOM, f"used more than its memory limit of {spec.memory} MiB"
        # A job may also set these rlimits on itself: then there is no spec limit to name.
        cpu_limit = spec.limits.cpu_time
        if signum == signal.SIGXCPU or (
            signum == signal.SIGKILL and cpu_limit is not None and cpu >= cpu_limit
        ):
            limit = f" of {cpu_limit:g} s" if cpu_limit is not None else ""
            return FailureReason.CPU_LIMIT, f"used its CPU time limit{limit}"
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


def open_sandboxing(
    kind: Kind,
    view: FsView,
    *,
    job_uids: bool,
    scratch: Path | None = None,
    run_as: int | None = None,
) -> Sandboxing:
    """The sandboxing asked for, checked on this machine; `auto` takes the best that works.
    A root agent runs each attempt as a uid of its own (`job_uids`), or all as `run_as`.

    `none` is never chosen silently: `auto` says loudly when it has to fall back to it.
    """
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
    cgroups = CgroupTree.detect()
    uids = None
    if os.geteuid() == 0 and run_as is not None:
        uids = UidPool(shared=run_as)
    elif os.geteuid() == 0 and job_uids:
        uids = UidPool()
    return Sandboxing(backend, cgroups, uids)


def _job_user(uids: UidPool | None) -> str:
    if uids is None:
        return "the agent's user"
    return f"uid {uids.shared}" if uids.shared is not None else "per-attempt uid"


def probe(backend: Sandbox, scratch: Path | None = None) -> str | None:
    """None if `backend` can run a job here, else why not."""
    if backend.name == "none":
        return None
    if shutil.which(backend.name) is None:  # each backend is named for its tool
        return f"{backend.name} is not installed"
    with tempfile.TemporaryDirectory(dir=scratch, prefix="probe-") as tmp:
        box = Box(["true"], Path(tmp), [Path(tmp)], root=Path(tmp) / ".root")
        if box.root is not None:
            box.root.mkdir()
        try:
            done = subprocess.run(
                backend.command(box),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
    if done.returncode != 0:
        text = done.stderr.decode(errors="replace").strip().splitlines()
        return text[-1] if text else f"it exited with code {done.returncode}"
    return None


def _chown_tree(root: Path, uid: int) -> None:
    """Hand the scratch, and what the agent put in it (code, inputs), to the job's uid."""
    os.chown(root, uid, uid)
    for parent, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.lchown(os.path.join(parent, name), uid, uid)
