"""One cgroup per attempt, for the memory and process-count limits, a sure kill and a
freezer (`sandrun pause`).

cgroup v2 where its memory and pids controllers can be enabled below the agent (the agent
moves itself into a leaf first, as delegated services do); else the v1 memory and pids
hierarchies (and v1's freezer where it is mounted); else nothing, and the limits fall back
to rlimits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from sandrun.errors import AgentError

_CONTROLLERS = ("memory", "pids")


@dataclass(frozen=True)
class _Mount:
    root: str  # the hierarchy path mounted there (not "/" inside containers)
    point: Path
    fstype: str
    options: frozenset[str]


def _mounts() -> list[_Mount]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append(_Mount(fields[3], Path(fields[4]), tail[0], frozenset(tail[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup per v1 controller, and "" -> its v2 cgroup."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _under(mount: _Mount, path: str) -> Path:
    rel = os.path.relpath(path, mount.root) if mount.root != "/" else path.lstrip("/")
    return mount.point if rel in (".", "") else mount.point / rel


class CgroupTree:
    """Where this agent makes its attempts' cgroups: one parent directory per hierarchy."""

    def __init__(self, version: int, parents: dict[str, Path]) -> None:
        self.version = version
        self.parents = parents  # controller -> directory ("" for v2)
        self._leftovers: list[AttemptCgroup] = []  # not removable yet: tasks still exiting
        self._lock = threading.Lock()

    def release(self, group: AttemptCgroup) -> None:
        """Remove an attempt's cgroup, now or (off the job's critical path) later."""
        with self._lock:
            pending, self._leftovers = [*self._leftovers, group], []
        left = [g for g in pending if not g.remove()]
        with self._lock:
            self._leftovers += left

    def sweep(self) -> int:
        """Kill and remove every attempt cgroup left here (by this agent's previous run:
        the parent is this agent's own); how many there were."""
        names: set[str] = set()
        for parent in self.parents.values():
            with contextlib.suppress(OSError):
                names |= {p.name for p in parent.iterdir() if p.is_dir()}
        for name in names:
            dirs = {c: p / name for c, p in self.parents.items() if (p / name).is_dir()}
            self.release(AttemptCgroup(self.version, dirs))
        return len(names)

    @classmethod
    def detect(cls, name: str = "sandrun") -> CgroupTree | None:
        """The usable hierarchy, or None where this agent may not make cgroups."""
        try:
            tree = _v2(name) or _v1(name)
            if tree is not None:  # the parent may exist yet belong to someone else
                for parent in tree.parents.values():
                    trial = parent / f"probe-{os.getpid()}"
                    trial.mkdir()
                    trial.rmdir()
            return tree
        except OSError:
            return None

    def describe(self) -> str:
        return f"cgroup v{self.version}"

    def create(self, name: str, memory_mb: int | None, processes: int) -> AttemptCgroup:
        dirs = {}
        try:
            for controller, parent in self.parents.items():
                path = parent / name
                path.mkdir(exist_ok=True)
                dirs[controller] = path
            group = AttemptCgroup(self.version, dirs)
            group.limit(memory_mb, processes)
        except OSError as exc:
            for path in dirs.values():
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise AgentError(f"cannot make the attempt's cgroup: {exc}") from exc
        return group


def _v2(name: str) -> CgroupTree | None:
    mount = next((m for m in _mounts() if m.fstype == "cgroup2"), None)
    own = _own_paths().get("")
    if mount is None or own is None:
        return None
    home = _under(mount, own)
    if not set(_CONTROLLERS) <= set((home / "cgroup.controllers").read_text().split()):
        return None
    enabled = set((home / "cgroup.subtree_control").read_text().split())
    parent = home / name
    if not set(_CONTROLLERS) <= enabled:
        # No processes may sit in a cgroup that hands controllers down: move into a leaf.
        leaf = home / f"{name}-agent"
        leaf.mkdir(exist_ok=True)
        (leaf / "cgroup.procs").write_text(str(os.getpid()))
        (home / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in _CONTROLLERS))
    parent.mkdir(exist_ok=True)
    (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in _CONTROLLERS))
    return CgroupTree(2, {"": parent})


def _v1(name: str) -> CgroupTree | None:
    own = _own_paths()
    parents = {}
    for controller in _CONTROLLERS:
        mount = next(
            (m for m in _mounts() if m.fstype == "cgroup" and controller in m.options), None
        )
        if mount is None or controller not in own:
            return None
        parent = _under(mount, own[controller]) / name
        parent.mkdir(exist_ok=True)
        parents[controller] = parent
    freezer = next((m for m in _mounts() if m.fstype == "cgroup" and "freezer" in m.options), None)
    if freezer is not None and "freezer" in own:  # optional: pausing falls back to SIGSTOP
        with contextlib.suppress(OSError):
            parent = _under(freezer, own["freezer"]) / name
            parent.mkdir(exist_ok=True)
            (parent / f"probe-{os.getpid()}").mkdir()
            (parent / f"probe-{os.getpid()}").rmdir()
            parents["freezer"] = parent
    return CgroupTree(1, parents)


class AttemptCgroup:
    def __init__(self, version: int, dirs: dict[str, Path]) -> None:
        self.version = version
        self.dirs = dirs
        self.processes = 0
        # Event counts before the current attempt (a reused cgroup's past ones are not its)
        self._before = {"oom_kill": 0, "max": 0}

    def reuse(self, memory_mb: int | None, processes: int) -> bool:
        """Make this cgroup ready for another attempt of a warm worker: its limits set
        again, its peak memory and event counts started again. False (the attempt needs a
        cgroup of its own) while a task of the last attempt is still in it — killed but not
        yet reaped, it would count against the next one's process limit — or where the
        peak cannot be reset (cgroup v2's memory.peak, before Linux 6.12)."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            if int(_read(self._file("pids", "pids.current"))) > 0:
                return False
            _write(self._file("memory", name), "0")
        except (OSError, ValueError):
            return False
        self.limit(memory_mb, processes)
        self._before = {"oom_kill": self._oom_kills(), "max": self._limit_hits()}
        return True

    def _file(self, controller: str, name: str) -> Path:
        return self.dirs["" if self.version == 2 else controller] / name

    def limit(self, memory_mb: int | None, processes: int) -> None:
        self.processes = processes
        _write(self._file("pids", "pids.max"), str(processes))
        if memory_mb is None:
            return
        limit = str(memory_mb << 20)
        if self.version == 2:
            self._file("memory", "memory.max").write_text(limit)
            swap = self._file("memory", "memory.swap.max")
            if swap.exists():  # no swapping past the limit either
                swap.write_text("0")
        else:
            self._file("memory", "memory.limit_in_bytes").write_text(limit)
            memsw = self._file("memory", "memory.memsw.limit_in_bytes")
            if memsw.exists():  # no swapping past the limit either
                memsw.write_text(limit)

    def attach(self, pid: int) -> None:
        for path in self.dirs.values():
            _write(path / "cgroup.procs", str(pid))

    def _counter(self, controller: str, name: str, key: str) -> int:
        try:
            text = _read(self._file(controller, name))
        except OSError:
            return 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return int(parts[1])
        return 0

    def oom_killed(self) -> bool:
        return self._oom_kills() > self._before["oom_kill"]

    def hit_process_limit(self) -> bool:
        return self._limit_hits() > self._before["max"]

    def _oom_kills(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        return self._counter("memory", name, "oom_kill")

    def _limit_hits(self) -> int:
        return self._counter("pids", "pids.events", "max")

    def peak_memory_mb(self) -> float | None:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int(_read(self._file("memory", name))) / 2**20
        except (OSError, ValueError):
            return None

    def can_freeze(self) -> bool:
        return self.version == 2 or "freezer" in self.dirs

    def freeze(self, frozen: bool) -> None:
        """Freeze every process in the cgroup (none runs until thawed), or thaw them."""
        if self.version == 2:
            _write(self.dirs[""] / "cgroup.freeze", "1" if frozen else "0")
        else:
            _write(self.dirs["freezer"] / "freezer.state", "FROZEN" if frozen else "THAWED")

    def kill_all(self) -> None:
        """SIGKILL every process left in the cgroup: nothing outlives its attempt."""
        kill = self._file("pids", "cgroup.kill")
        if kill.exists():  # v2: the kernel kills them all, frozen or not, forks included
            with contextlib.suppress(OSError):
                kill.write_text("1")
            return
        try:
            pids = [int(p) for p in self._file("pids", "cgroup.procs").read_text().split()]
        except OSError:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if "freezer" in self.dirs:  # v1: a frozen task dies only once thawed
            with contextlib.suppress(OSError):
                self.freeze(False)

    def remove(self) -> bool:
        """Kill what is left and remove the cgroup; False while the kernel is not done."""
        self.kill_all()
        for controller, path in list(self.dirs.items()):
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                return False  # its last tasks are still exiting: try again later
            del self.dirs[controller]
        return True


# Control files are read and written on every attempt: plain system calls, no text layer.
def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)
