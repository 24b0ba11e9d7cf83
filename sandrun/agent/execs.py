"""Running a command inside a running attempt: `sandrun exec` and `sandrun shell`.

The command joins what confines the job — its cgroups and rlimits, the job filter, its
namespaces (`nsenter`, into the view, processes, network, hostname and IPC the job has),
its uid with no capabilities (`setpriv`), its working directory — and so can see and touch
what the job can and nothing more. It is the job's: it is frozen with it, counted against
its limits, and killed when the attempt ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import signal
import struct
import subprocess
import termios
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from sandrun.agent.sandbox import Confined, Sandboxing, seccomp
from sandrun.agent.sandbox.base import HOST_ENV, drop_privileges, memfd, system_tool
from sandrun.agent.sandbox.enter import HELPER, carried, with_env
from sandrun.errors import ValidationError
from sandrun.errors.lifecycle import ExecUnavailable
from sandrun.exec_models import STDERR, STDOUT, ExecRequest

if TYPE_CHECKING:
    from sandrun.agent.sandbox import Confined, Sandboxing

# The namespaces nsenter can join, by its flag and /proc/PID/ns name.
_NAMESPACES = (
    ("--user", "user"),
    ("--mount", "mnt"),
    ("--uts", "uts"),
    ("--ipc", "ipc"),
    ("--net", "net"),
    ("--pid", "pid"),
    ("--cgroup", "cgroup"),
)


@dataclass
class Inside:
    """What an attempt runs in, as an exec must join it: the attempt's first process (the
    sandbox's launcher or the job), its uid, its cgroups' `cgroup.procs` files, rlimits
    and environment."""

    pid: int
    uid: int | None
    procs: list[str]
    limits: dict[int, tuple[int, int]]
    env: dict[str, str]
    filtered: bool  # whether the job runs under the seccomp filter
    isolated: bool = True  # whether its sandbox made namespaces to join (not `none`)
    running: list[Exec] = field(default_factory=list)  # its execs, ended with it

    def to_json(self) -> str:
        fields = {k: v for k, v in vars(self).items() if k != "running"}
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> Inside:
        fields = json.loads(text)
        fields["limits"] = {int(k): tuple(v) for k, v in fields["limits"].items()}
        return cls(**fields)


def note(
    pid: int,
    uid: int | None,
    confined: Confined,
    env: dict[str, str],
    sandboxing: Sandboxing,
    record: Path | None,
) -> Inside:
    """What an exec into the attempt just started will join; written to `record` too
    (0600: it holds the job's environment) for an embedded agent, whose user's own
    `sandrun exec` enters from another process."""
    cgroup = confined.cgroup
    procs = [str(d / "cgroup.procs") for d in cgroup.dirs.values()] if cgroup else []
    filtered, isolated = sandboxing.seccomp is not None, sandboxing.backend.isolates
    inside = Inside(pid, uid, procs, confined.limits, env, filtered, isolated)
    if record is not None:
        fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(inside.to_json())
    return inside


def forget(inside: Inside | None, record: Path | None) -> None:
    """The attempt ended: kill what its execs left (its cgroup does too; not every sandbox
    has one) and remove its record."""
    for done in list(inside.running if inside else ()):
        done.kill()
    if record is not None:
        record.unlink(missing_ok=True)


def target(root: int, isolated: bool = True) -> tuple[int, list[str]]:
    """The process whose namespaces an exec joins, and nsenter's flags for those that are
    not the agent's own. That is the attempt's first process (breadth first) in a PID
    namespace of its own — bwrap's PID 1, a warm worker's call — unless a process below it
    has another root directory: the unshare backend's PID 1 is a shell that chroots the
    job. Without a sandbox (`isolated` False): `root` itself, and no namespaces — what a
    job made for itself is never joined, nor is a target in a user namespace the sandbox
    did not make (a job without the filter may make one and chroot in it)."""
    if not isolated:
        return root, []
    mine = _ns(os.getpid(), "pid")
    level, first = [root], None
    while level and first is None:
        first = next((pid for pid in level if _ns(pid, "pid") not in (mine, 0)), None)
        level = [c.pid for pid in level for c in _children(pid)]
    if first is None:
        return root, []
    chosen, base = first, _root(first)
    for child in _children(first):
        if _root(child.pid) not in (base, None):
            chosen = child.pid
            break
    if not _sandbox_made(chosen):
        raise ExecUnavailable(
            "the job's processes are in a user namespace of their own making: an exec "
            "joins only the namespaces its sandbox made"
        )
    flags = [f for f, ns in _NAMESPACES if _ns(chosen, ns) != _ns(os.getpid(), ns)]
    return chosen, flags


NS_GET_PARENT = 0xB702  # ioctl: a descriptor of a namespace's parent user namespace


def _sandbox_made(pid: int) -> bool:
    """Whether `pid`'s user namespace is one a sandbox makes: the agent's own (a root
    agent's sandboxes make none), or one directly below it (bwrap and unshare make one
    for a non-root agent)."""
    mine = _ns(os.getpid(), "user")
    theirs = _ns(pid, "user")
    if theirs == mine:
        return True
    if os.geteuid() == 0:
        return False
    try:
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
        try:
            parent = fcntl.ioctl(fd, NS_GET_PARENT)
        finally:
            os.close(fd)
    except OSError:
        return False
    try:
        return os.fstat(parent).st_ino == mine
    finally:
        os.close(parent)


def _root(pid: int) -> tuple[int, int] | None:
    try:
        there = os.stat(f"/proc/{pid}/root")
    except OSError:
        return None
    return there.st_dev, there.st_ino


def _ns(pid: int, name: str) -> int:
    """The inode of `pid`'s namespace `name`; 0 if the process is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/{name}").st_ino
    except OSError:
        return 0


def _children(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children())
    except psutil.Error:
        return []


def command(
    inside: Inside, argv: list[str], tty: bool, filter_fd: int | None
) -> tuple[list[str], Path | None]:
    """The command line that runs `argv` inside, and the directory to start it in (None:
    nsenter moves to the job's own). Its first step reads the exec's seccomp filter from
    `filter_fd`; its last turns the environment it carries (`carried`) back."""
    pid, flags = target(inside.pid, inside.isolated)
    helper = [*HELPER, *(f"--procs={p}" for p in inside.procs)]
    helper += [f"--limit={k}={soft},{hard}" for k, (soft, hard) in inside.limits.items()]
    helper += [f"--seccomp-fd={filter_fd}"] if filter_fd is not None else []
    helper += ["--tty", "--"] if tty else ["--"]
    last = with_env(argv)
    if not flags:  # no sandbox: the job's uid and directory are all there is to join
        return [*helper, *drop_privileges(inside.uid), *last], Path(f"/proc/{pid}/cwd").resolve()
    enter = [system_tool("nsenter"), f"--target={pid}", *flags, "--root", "--wd"]
    if "--user" in flags:  # keep the agent's ids (mapped alike inside), not root's
        enter.append("--preserve-credentials")
    # Root of a user namespace holds every capability in it: drop them there too.
    drop = drop_privileges(inside.uid, always="--user" in flags)
    return [*helper, *enter, "--", *drop, *last], None


class Exec:
    """One command running inside an attempt, with pipes or a pseudo-terminal."""

    def __init__(self, inside: Inside, request: ExecRequest) -> None:
        self.inside = inside
        env = inside.env | ({"TERM": request.term} if request.tty else {})
        filter_fd = memfd("sandrun-filter", seccomp.exec_program()) if inside.filtered else None
        passed = [filter_fd] if filter_fd is not None else []
        argv, cwd = command(inside, request.argv, request.tty, filter_fd)
        self._master: int | None = None
        streams: dict[str, Any] = dict.fromkeys(("stdin", "stdout", "stderr"), subprocess.PIPE)
        if request.tty:
            self._master, slave = os.openpty()
            self.resize(request.rows, request.cols)
            streams = dict.fromkeys(streams, slave)
        try:  # the agent's steps get a clean environment: the job's is for the command
            self.proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=HOST_ENV | carried(env),
                start_new_session=True,
                pass_fds=passed,
                **streams,
            )
        finally:
            for fd in [*passed, *([slave] if request.tty else [])]:
                os.close(fd)
        inside.running.append(self)

    def outputs(self) -> Iterator[tuple[int, bytes]]:
        """(STDOUT or STDERR, bytes) as the command writes them, until it closes both."""
        sel = selectors.DefaultSelector()
        if self._master is not None:
            sel.register(self._master, selectors.EVENT_READ, STDOUT)
        else:
            assert self.proc.stdout is not None and self.proc.stderr is not None
            sel.register(self.proc.stdout, selectors.EVENT_READ, STDOUT)
            sel.register(self.proc.stderr, selectors.EVENT_READ, STDERR)
        with sel:
            while sel.get_map():
                for key, _ in sel.select():
                    try:
                        data = os.read(key.fd, 65536)
                    except OSError:  # a pty's master reads EIO once the last slave closes
                        data = b""
                    if not data:
                        sel.unregister(key.fileobj)
                        continue
                    yield key.data, data

    def feed(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            if self._master is not None:
                os.write(self._master, data)
            elif self.proc.stdin is not None:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()

    def eof(self) -> None:
        with contextlib.suppress(OSError):
            if self._master is not None:
                os.write(self._master, b"\x04")  # ^D: the terminal's end of input
            elif self.proc.stdin is not None:
                self.proc.stdin.close()

    def resize(self, rows: int, cols: int) -> None:
        if self._master is not None:
            size = struct.pack("HHHH", rows, cols, 0, 0)
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, size)

    def send_signal(self, name: str) -> None:
        """Signal the command's foreground: its terminal's, or its whole group."""
        try:
            sig = signal.Signals[f"SIG{name.upper().removeprefix('SIG')}"]
        except KeyError:
            raise ValidationError(f"signal {name!r} is not known", field="signal") from None
        with contextlib.suppress(OSError):
            if self._master is not None:
                os.killpg(os.tcgetpgrp(self._master), sig)
            else:
                os.killpg(self.proc.pid, sig)

    def wait(self) -> int:
        code: int = self.proc.wait()
        self._close()
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        if self.proc.returncode is None:  # reaped, its pid may be another's
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def _close(self) -> None:
        if self in self.inside.running:
            self.inside.running.remove(self)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None


def pump(process: Exec, send: Callable[[int, bytes], None]) -> int:
    """Send what `process` writes until it ends; its exit code."""
    for stream, data in process.outputs():
        send(stream, data)
    return process.wait()
