"""What a sandboxed attempt sees of the machine: a list of mounts, shared by the backends.

Two views. `system` (remote agents: other people's code) shows the system directories, the
Python that runs the agent and paths the operator adds, read-only. `host` (the embedded
agent: the user's own code, run like sbatch in their directory with their PATH) shows the
whole filesystem read-only. Both give the attempt a fresh /proc, a minimal /dev, a private
/tmp, its scratch and working directories writable, and hide the agent's own state
(store, artifacts, other attempts, tokens) even where it lies under a visible path.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FsMode = Literal["system", "host"]
SYSTEM_DIRS = ("/usr", "/etc", "/opt", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Host paths a job never sees in the `host` view: other programs' sockets and scratch space.
HOST_PRIVATE = ("/tmp", "/var/tmp", "/run", "/var/run", "/dev/shm", "/proc", "/dev")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Where `python` is, inside the system view: the agent's own Python, which a job's `python`
# means (Debian and others have only `python3`), as function calls already use.
PYTHON_DIR = "/.sandrun/bin"


@dataclass(frozen=True)
class Mount:
    """One step in building the view; applied in list order."""

    kind: Literal["ro", "rw", "hide", "symlink", "tmpfs", "proc", "dev", "device"]
    path: str  # where it appears inside
    source: str = ""  # what is bound or linked to


@dataclass(frozen=True)
class FsView:
    mode: FsMode = "system"
    read_only: tuple[Path, ...] = ()  # more paths to show read-only (`--sandbox-ro`)
    hidden: tuple[Path, ...] = ()  # the agent's state: never shown

    def mounts(
        self, writable: list[Path], devices: list[Path], binds: tuple[Mount, ...] = ()
    ) -> list[Mount]:
        """The mounts for one attempt that may write `writable`, use `devices` and see
        `binds` (node paths shown elsewhere inside: its volumes, its secret files)."""
        fixed, fixed_shown = _base(self.mode)
        base = [*fixed, *(Mount("device", str(d), str(d)) for d in devices)]
        shown = list(fixed_shown)
        # Deeper paths go later, so a writable directory inside a hidden one (the attempt's
        # scratch under the agent's home) shows through, and state inside a writable
        # working directory stays hidden.
        layered: list[tuple[int, int, Mount]] = []
        for path in self._extras():
            # The host view shows these already, unless they lie in a private directory
            # (a virtualenv under /tmp, say).
            if self.mode == "host":
                needed = any(path.is_relative_to(p) for p in HOST_PRIVATE)
            else:
                needed = not any(path.is_relative_to(s) for s in shown)
            if path.exists() and needed:
                layered.append((len(path.parts), 0, Mount("ro", str(path), str(path))))
                shown.append(path)
        for path in writable:
            layered.append((len(path.parts), 1, Mount("rw", str(path), str(path))))
        for path in self.hidden:
            if path.exists() and any(path.is_relative_to(s) for s in [*shown, *writable]):
                layered.append((len(path.parts), 2, Mount("hide", str(path))))
        for bind in binds:
            layered.append((len(Path(bind.path).parts), 3, bind))
        if binds and self.mode == "host":  # new mount points need a root that is no bind
            base = expand_root(base)
        return base + [m for _, _, m in sorted(layered, key=lambda t: (t[0], t[1]))]

    def provides(self, path: Path) -> bool:
        """Whether the view itself makes `path` (a link it adds, not a host path)."""
        fixed, _ = _base(self.mode)
        return any(m.kind == "symlink" and Path(m.path) == path for m in fixed)

    def conceals(self, path: Path) -> Path | None:
        """The hidden path that `path` lies in, if any: such a path cannot be a workdir."""
        for hidden in self.hidden:
            if path.is_relative_to(hidden) or hidden == path:
                return hidden
        return None

    def shows(self, path: Path, writable: list[Path]) -> bool:
        """Whether a program at `path` is visible inside: the path and where it leads."""
        return self._shows(path.absolute(), writable) and self._shows(path.resolve(), writable)

    def _shows(self, real: Path, writable: list[Path]) -> bool:
        if any(real.is_relative_to(w.resolve()) for w in writable):
            return True
        if self.conceals(real) is not None:
            return False
        if any(real.is_relative_to(r) for r in self._extras()):
            return True
        if self.mode == "host":
            return not any(real.is_relative_to(p) for p in HOST_PRIVATE)
        return any(real.is_relative_to(r) for r in _system_roots())

    def _extras(self) -> list[Path]:
        return [*self.read_only, *_python_prefixes()]


@functools.cache
def _base(mode: FsMode) -> tuple[tuple[Mount, ...], tuple[Path, ...]]:
    """The mounts every attempt of a view starts with, and the paths they show."""
    base: list[Mount] = []
    shown: list[Path] = []
    if mode == "host":
        base.append(Mount("ro", "/", "/"))
        shown.append(Path("/"))
        for private in HOST_PRIVATE[:4]:
            path = Path(private)
            if path.is_dir() and not path.is_symlink():  # /var/run -> /run: covered
                base.append(Mount("tmpfs", private))
    else:
        for name in SYSTEM_DIRS:
            path = Path(name)
            if path.is_symlink():  # merged /usr: /bin -> usr/bin
                base.append(Mount("symlink", name, str(path.readlink())))
            elif path.is_dir():
                base.append(Mount("ro", name, name))
                shown.append(path)
        base.append(Mount("tmpfs", "/tmp"))
        base.append(Mount("symlink", f"{PYTHON_DIR}/python", sys.executable))
    base += [Mount("proc", "/proc"), Mount("dev", "/dev")]
    return tuple(base), tuple(shown)


def expand_root(mounts: list[Mount]) -> list[Mount]:
    """The host view's read-only / as each top-level entry bound alone, so the root the
    view is built in (a tmpfs) takes new mount points and is not bound into itself."""
    out: list[Mount] = []
    for mount in mounts:
        if mount.kind == "ro" and mount.path == "/":
            for entry in sorted(os.listdir("/")):
                path = "/" + entry
                if path in HOST_PRIVATE or path == "/sys":
                    continue
                if os.path.islink(path):
                    out.append(Mount("symlink", path, os.readlink(path)))
                elif os.path.isdir(path):
                    out.append(Mount("ro", path, path))
            out.append(Mount("ro", "/sys", "/sys"))
        else:
            out.append(mount)
    return out


# Under a job's own /proc, what container runtimes make read-only: kernel settings
# (/proc/sys: core_pattern, printk...), the magic SysRq key, IRQ and bus settings.
PROC_READ_ONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")


@functools.cache
def _system_roots() -> list[Path]:
    return [p for d in SYSTEM_DIRS if Path(d).exists() for p in (Path(d), Path(d).resolve())]


@functools.cache
def _python_prefixes() -> list[Path]:
    # The agent's Python: jobs that run sandrun's own code (functions) need the same one,
    # and sandrun itself, which an editable install keeps outside the prefix.
    package = Path(__file__).resolve().parents[2]
    return sorted(
        {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)} | {package}
    )
