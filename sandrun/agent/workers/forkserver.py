"""The warm end of a worker: `python -m sandrun.agent.workers.forkserver`, run inside the
worker's sandbox with a unix socket on fd $SANDRUN_WORKER_FD.

It imports the runner and cloudpickle once, says its pid, then serves one job at a time.
A request is a JSON message — the job's directory, environment and rlimits, and either
the call directory of a function call (with `enter`: a method call of a class worker) or
the argv of any other job — with three
descriptors: the job's stdout, its stderr and its gate (and without a sandbox, its
directory). The server forks a child that leads its own session and takes the job's
output, directory, environment and rlimits (the agent may not set them on a process of
another uid), then waits at the gate (the agent puts it in the job's cgroup meanwhile).
Past the gate, it runs a function call here, as `python -m sandrun.runner` would
(randomness reseeded), or execs the job's program. A class worker makes its instance and
runs its `@enter` methods here, in the server, before it forks its first call: the
owner's code, in a sandbox that is the owner's alone.

The server answers the child's pid at once. When the child exits it kills what is left of
its process group, reaps it, empties /tmp and /dev/shm (in a sandbox of its own) and
answers the exit status, the CPU and memory used, and whether anything of the job is still
running or could not be removed (then the agent retires this worker).

Only the standard library, cloudpickle and `sandrun.runner` are imported here: this runs
the job's owner's code in its children and must start fast.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import resource
import shutil
import signal
import socket
import stat
import sys
from pathlib import Path
from typing import Any

from sandrun import runner

WORKER_FD = "SANDRUN_WORKER_FD"
ISOLATED = "SANDRUN_WORKER_ISOLATED"  # "1": a sandbox of its own (its /tmp, its pids)
_MAX_MESSAGE = 1 << 20  # a call's environment is capped well below this at submit
_SCRATCH = ("/tmp", "/dev/shm")
_ENTER_LOG = 8 << 20  # bytes of @enter's output passed on to the first call's log


def main() -> int:
    import cloudpickle  # noqa: F401  (warm: each call's child finds it imported)

    sock = socket.socket(fileno=int(os.environ.pop(WORKER_FD)))
    isolated = os.environ.get(ISOLATED) == "1"
    skeleton = {p for where in _SCRATCH for p in _tree(where)} if isolated else set()
    sock.send(json.dumps({"pid": os.getpid()}).encode())  # warm: ready for calls
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 4)
        except OSError:
            return 0
        if not data:
            return 0  # the agent closed its end: retire
        request = json.loads(data)
        entered = None  # what the class's @enter printed, for this (the first) call's log
        if request.get("enter") and runner.ENTERED is None:
            entered = _enter(request, fds)
        # Closed by a successful exec; else the child says why it could not exec.
        said, tell = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(said)
            _child(request, fds, sock, tell, entered)  # never returns
        for fd in (*fds, tell, *([entered] if entered is not None else [])):
            os.close(fd)
        sock.send(json.dumps({"pid": pid}).encode())
        status, cpu, rss = _reap(pid)
        exec_error = _said(said)
        _reap_orphans()
        left = False
        if isolated:
            for where in _SCRATCH:
                _empty(where, skeleton)
            # Anything still running, or anything in /tmp that would not go: retire.
            left = _anything_left() or any(set(_tree(w)) - skeleton for w in _SCRATCH)
        # A class whose @enter failed: each call would raise it, so this worker retires.
        left = left or (runner.ENTERED is not None and runner.ENTERED.error is not None)
        end = {"status": status, "cpu": cpu, "rss": rss, "left": left, "exec_error": exec_error}
        sock.send(json.dumps(end).encode())


def _enter(request: dict[str, Any], fds: list[int]) -> int:
    """Make the instance of a class worker's method calls and run its @enter methods, here
    in the server, once, so that every call's child inherits it (`runner.ENTERED`); in the
    first call's directory and environment. What it prints is kept in a memfd (the agent
    reads this call's pipes only once it is forked): the call's child copies it out."""
    log = os.memfd_create("sandrun-enter")
    saved = (os.dup(1), os.dup(2), os.open(".", os.O_RDONLY | os.O_DIRECTORY), dict(os.environ))
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        _chdir(request, fds)
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path.insert(0, os.getcwd())  # its uploaded code, as the runner would see it
        runner.ENTERED = runner.Entered(Path(request["dir"]))
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        out, err, home, env = saved
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.fchdir(home)
        for fd in (out, err, home):
            os.close(fd)
        os.environ.clear()
        os.environ.update(env)
    return log


def _chdir(request: dict[str, Any], fds: list[int]) -> None:
    """Into the job's directory. Without a sandbox, from a descriptor the agent opened: only
    the directory itself need be ours (its parents may not be searchable by this uid).
    Never inside one: a descriptor from outside would lead out of the sandbox's view."""
    os.fchdir(fds[3]) if len(fds) > 3 else os.chdir(request["cwd"])


def _copy_entered(log: int) -> None:
    """Write what @enter printed to this call's stdout (at most `_ENTER_LOG` bytes)."""
    os.lseek(log, 0, os.SEEK_SET)
    left = _ENTER_LOG
    while left > 0 and (chunk := os.read(log, min(left, 1 << 16))):
        os.write(1, chunk)
        left -= len(chunk)
    if left <= 0 and os.read(log, 1):
        os.write(1, b"\n[sandrun: the rest of @enter's output was dropped]\n")
    os.close(log)


def _child(
    request: dict[str, Any], fds: list[int], sock: socket.socket, tell: int, entered: int | None
) -> None:
    code = 125
    try:
        sock.close()
        os.setsid()
        out, err, gate, *_ = fds
        os.dup2(out, 1)
        os.dup2(err, 2)
        _chdir(request, fds)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for which, (soft, hard) in request["limits"].items():
            _, most = resource.getrlimit(int(which))  # this server's: a call gets at most it
            if most != resource.RLIM_INFINITY:
                soft, hard = min(soft, most), min(hard, most)
            resource.setrlimit(int(which), (soft, hard))
        go = os.read(gate, 1)  # the agent confines us first; nothing: it gave up
        if entered is not None:
            _copy_entered(entered)
        os.closerange(3, tell)
        os.closerange(tell + 1, os.sysconf("SC_OPEN_MAX"))
        if go:
            os.environ.clear()
            os.environ.update(request["env"])
            if "argv" in request:
                code = _exec(request["argv"], tell)
            else:
                os.close(tell)  # a call's own children must not hold it
                code = _call(request["dir"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the runner reports the call's own errors; this is ours
        import traceback

        traceback.print_exc()
        code = 125
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _call(where: str) -> int:
    """Run a function call here, in the warm interpreter."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    random.seed()  # a fork copies the parent's generator: each call gets its own
    sys.argv = ["sandrun.runner", where]
    return runner.main(sys.argv)


def _exec(argv: list[str], tell: int) -> int:
    """Become the job's program, as a cold sandbox would start it; if it cannot, say why
    on `tell` (the job failed to start: a spawn error, not its own exit code)."""
    for which in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):  # Python's, not the job's
        signal.signal(which, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)  # on the job's PATH (os.environ is the job's now)
    except OSError as exc:
        os.write(tell, f"{errno.errorcode.get(exc.errno or 0, '')} {exc.strerror}".encode())
        return 126 if exc.errno == errno.EACCES else 127
    return 127  # not reached: exec returns only by raising


def _said(pipe: int) -> str | None:
    """What a child said of its failed exec, if anything (never waiting: a descriptor a
    job passed on must not hold this server up)."""
    os.set_blocking(pipe, False)
    try:
        return os.read(pipe, 4096).decode(errors="replace") or None
    except BlockingIOError:
        return None
    finally:
        os.close(pipe)


def _reap(pid: int) -> tuple[int, float, int]:
    """Wait for the call's child; kill what is left in its process group (as the agent does
    for a job); its wait status, CPU seconds and peak RSS (KiB)."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)  # a zombie leader: its group id cannot be reused yet
    _, status, usage = os.wait4(pid, 0)
    return status, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def _reap_orphans() -> None:
    """Reap zombies this server inherited (where it is the namespace's init)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _tree(top: str) -> list[str]:
    """What `top` holds on its own filesystem: the directories the sandbox made for the
    mounts below it (a bind-mounted directory is not entered)."""
    try:
        device = os.lstat(top).st_dev
    except OSError:
        return []
    found = []
    for parent, dirs, files in os.walk(top):
        found += [os.path.join(parent, name) for name in files]
        inside = [d for d in dirs if os.lstat(os.path.join(parent, d)).st_dev == device]
        found += [os.path.join(parent, d) for d in dirs]
        dirs[:] = inside
    return found


def _empty(top: str, skeleton: set[str]) -> None:
    """Remove what a call left in `top` (on its own filesystem), keeping `skeleton`."""
    try:
        device = os.lstat(top).st_dev
        entries = os.listdir(top)
    except OSError:
        return
    for name in entries:
        path = os.path.join(top, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if info.st_dev != device:
            continue  # a mount (the worker's home): the agent clears it
        if path in skeleton:
            if stat.S_ISDIR(info.st_mode):
                _empty(path, skeleton)
        elif stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _anything_left() -> bool:
    """Whether a process other than the sandbox's init and this server exists (in a PID
    namespace of its own, where /proc lists only the sandbox's). Zombies are the init's to
    reap: they hold nothing."""
    mine = {1, os.getpid()}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in mine:
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    state = stat.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                return True
    return False


if __name__ == "__main__":
    sys.exit(main())
