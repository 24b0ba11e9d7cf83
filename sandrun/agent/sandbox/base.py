"""The one interface every sandbox backend offers: turn an attempt into a command line."""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from sandrun.agent.sandbox.view import FsView, Mount


@dataclass(frozen=True)
class Box:
    """One attempt, as the sandbox needs to know it."""

    argv: list[str]
    cwd: Path
    writable: list[Path]  # the scratch (HOME) and the working directory
    network: bool = False
    devices: tuple[Path, ...] = ()  # /dev/nvidia* for the GPUs it was given
    uid: int | None = None  # run as this uid (an agent running as root), else as the agent
    root: Path | None = None  # an empty directory a backend may build the view in
    # A backend with its own start gate writes the sandbox's first process id here as JSON,
    # then waits for a byte on stdin before it runs the job (no gate shell to exec).
    info_fd: int | None = None
    tmp_size: int | None = None  # bytes each tmpfs (/tmp, /dev/shm) may hold
    seccomp_fd: int | None = None  # a BPF program a backend that filters loads before the job
    # Node paths shown at other paths inside (volumes, data, secret files): ro or rw Mounts;
    # those in `handed` are the attempt's to own (its volumes and secret files).
    binds: tuple[Mount, ...] = ()
    handed: tuple[Path, ...] = ()


class Sandbox(ABC):
    name: str
    # Filesystem, PID and network namespaces; the launcher then reports the job's death by
    # signal N as exit code 128 + N.
    isolates = True
    builds_root = False  # whether it needs Box.root, an empty directory to build the view in
    gates_itself = False  # whether it honours Box.info_fd (else it runs behind the gate shell)
    filters = False  # whether it honours Box.seccomp_fd
    # Sandbox processes that must not get the polite SIGTERM: killing them would SIGKILL
    # the job at once, and the job deserves its grace period.
    launchers: frozenset[str] = frozenset()

    def __init__(self, view: FsView) -> None:
        self.view = view

    def caps_tmpfs(self) -> bool:
        """Whether a job's /tmp and /dev/shm hold at most `Box.tmp_size`."""
        return False

    @abstractmethod
    def command(self, box: Box) -> list[str]:
        """The argv that runs `box.argv` inside this sandbox."""


SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the agent's own steps into a sandbox run with (a gate, bwrap, nsenter, setpriv):
# never the job's environment, whose LD_PRELOAD or PATH would steer them as root. The
# job's reaches its program through `enter.with_env`, once privileges are dropped.
HOST_ENV = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}


def memfd(name: str, data: bytes) -> int:
    """A fresh descriptor holding `data`, from its start: read once, by one process."""
    fd = os.memfd_create(name, 0)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


def system_tool(name: str) -> str:
    """The absolute path of a system program: a job's own PATH must not pick our tools."""
    return shutil.which(name, path=SYSTEM_PATH) or name


def drop_privileges(uid: int | None, always: bool = False) -> list[str]:
    """A prefix that leaves root: to `uid` if given, and without capabilities in any case.

    `always`: drop capabilities even when not root (root of a user namespace has them).
    """
    if os.geteuid() != 0 and not always:
        return []
    ids = ["--reuid", str(uid), "--regid", str(uid), "--clear-groups"] if uid is not None else []
    return [
        system_tool("setpriv"),
        *ids,
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]
