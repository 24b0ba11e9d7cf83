"""The steps into a job's sandbox that are the agent's own, and the job's environment.

**The job's environment** reaches only the job's program. Everything before it — the
gate shell, bwrap or unshare, nsenter, setpriv, each run as root — starts with
`HOST_ENV`, so a job's own variables (`LD_PRELOAD`, `PATH`...) steer none of them: they
travel under names no program reads (`carried`), and the last step (`with_env`), a
shell already running as the job's uid without capabilities, turns them back into
themselves and execs the program.

**The first step of an exec**, on the host, is this file run by its path
(`python -S -I enter.py`: no site-packages, no environment variables, no current
directory on its path; the standard library only): it joins the job's cgroups
(`--procs`), takes its rlimits (`--limit`), its controlling terminal (`--tty`) and the
exec's seccomp filter (`--seccomp-fd`: the job filter less `setns`, which the `nsenter`
it execs next needs), then execs the rest of its command line.
"""

from __future__ import annotations

import os
import signal
import sys

HERE = os.path.abspath(__file__)
# The interpreter and flags to run this file with.
HELPER = [sys.executable, "-S", "-I", HERE]
FAILED = 126  # its exit status when it cannot do its part (127: no such program)
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def carried(env: dict[str, str]) -> dict[str, str]:
    """`env` as the steps before the job's program carry it: each variable under a name
    no program reads (`SANDRUN_ENV_NAME`), and the list of names. `with_env` turns them
    back. (Not a descriptor: a job would inherit it; not arguments: anyone on the host
    may read those.) Names are a spec's (letters, digits, `_`) or the agent's own."""
    names = sorted(env, key=len)  # a carrier's name is longer than what it carries
    for name in names:
        if not (name.isidentifier() and name.isascii()):
            raise ValueError(f"environment variable name {name!r} is not valid")
    return {_LIST: " ".join(names), **{_CARRIER + name: env[name] for name in names}}


def with_env(argv: list[str]) -> list[str]:
    """`argv`, run in the environment `carried` carries: a shell, already the job's uid
    without capabilities, turns it back into the variables and execs the program."""
    return ["/bin/sh", "-c", _UNCARRY, "sandrun-env", *argv]


_LIST, _CARRIER = "SANDRUN_ENVNAMES", "SANDRUN_ENV_"
_UNCARRY = (
    f'for n in ${_LIST}; do eval "export $n=\\"\\${_CARRIER}$n\\"; unset {_CARRIER}$n"; done; '
    f'unset {_LIST}; exec "$@"'
)


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _load_filter(fd: int) -> None:
    """Load the BPF program in `fd` as this process's seccomp filter (after no_new_privs)."""
    import ctypes

    program = _read_fd(fd)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def _step(option: str, value: str) -> None:
    if option == "--procs":
        with open(value, "w") as handle:
            handle.write(str(os.getpid()))
    elif option == "--limit":
        import resource

        which, _, values = value.partition("=")
        soft, _, hard = values.partition(",")
        resource.setrlimit(int(which), (int(soft), int(hard)))
    elif option == "--tty":  # started as a session leader: take the terminal on stdin
        import fcntl
        import termios

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    elif option == "--seccomp-fd":
        _load_filter(int(value))
    else:
        raise ValueError(f"unknown option {option}")


def _default_signals() -> None:
    """What it execs starts with every signal at its default and none blocked: an ignored
    disposition survives exec, and Python ignores SIGPIPE and SIGXFSZ, as a caller started
    in the background ignores SIGINT (an interactive shell then could not be interrupted)."""
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                continue  # not one a process may set
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("usage: enter.py [OPTION=VALUE]... -- PROGRAM [ARG]...", file=sys.stderr)
        return 2
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    try:
        for item in options:
            _step(*item.partition("=")[::2])
    except (OSError, ValueError) as exc:
        print(f"sandrun: cannot enter the job's sandbox: {exc}", file=sys.stderr)
        return FAILED
    _default_signals()
    try:
        os.execv(command[0], command)
    except OSError as exc:
        print(f"sandrun: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else FAILED
    return FAILED  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
