"""The first step of an exec into a running job (`python -m sandrun.agent.sandbox.enter`).

Run by the agent with the exec's stdio, it puts itself where the job is confined — the
job's cgroups, its rlimits, the job filter (less `setns`, which the `nsenter` it then
execs needs), a terminal of its own as its controlling one — and execs the rest of its
command line (`nsenter` into the job's namespaces, `setpriv` to the job's uid with no
capabilities, the command). Everything after inherits all of it.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import resource
import sys
import termios

from sandrun.agent.sandbox.seccomp import load_for_exec

# What the agent's command line gives when the helper itself fails.
FAILED = 126


def _limit(text: str) -> tuple[int, int, int]:
    which, _, values = text.partition("=")
    soft, _, hard = values.partition(",")
    return int(which), int(soft), int(hard)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandrun-enter")
    parser.add_argument("--procs", action="append", default=[], help="a cgroup.procs file")
    parser.add_argument("--limit", action="append", default=[], type=_limit)
    parser.add_argument("--seccomp", action="store_true", help="load the job filter")
    parser.add_argument("--tty", action="store_true", help="stdin is its controlling terminal")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    try:
        for procs in args.procs:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        for which, soft, hard in args.limit:
            resource.setrlimit(which, (soft, hard))
        if args.tty:  # the agent started it as a session leader: take the terminal
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if args.seccomp:
            load_for_exec()
        os.execv(args.command[0], args.command)
    except (OSError, ImportError) as exc:
        print(f"sandrun: cannot enter the job's sandbox: {exc}", file=sys.stderr)
        return FAILED


if __name__ == "__main__":
    sys.exit(main())
