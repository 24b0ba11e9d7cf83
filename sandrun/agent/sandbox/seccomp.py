"""The default seccomp filter for sandboxed jobs, built with libseccomp and handed to bwrap.

It allows everything except what container runtimes (Docker, Podman) deny by default to an
unprivileged container: new namespaces (`unshare`, `setns`, namespace flags to `clone`),
mounts, the kernel keyring, BPF, perf events, userfaultfd, io_uring, module loading,
kexec, reboot, swap, clocks, `open_by_handle_at` (the classic container escape) and the
long-dead legacy calls. Each refused call fails with EPERM, so a program sees an ordinary
"Operation not permitted". `ptrace` stays allowed: the job's PID namespace and its own uid
already confine it to the job's processes, and debuggers and profilers need it.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

from sandrun.agent.sandbox.base import memfd

log = logging.getLogger("sandrun.agent")

DENIED = (
    # Namespaces and mounts: the sandbox's view must stay the one the agent built.
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    # Kernel surfaces with a history of privilege escalations.
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "open_by_handle_at",
    "fanotify_init",
    "lookup_dcookie",
    # The machine's, not the job's.
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "iopl",
    "ioperm",
    # Obsolete calls nothing needs.
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "nfsservctl",
    "vm86",
    "vm86old",
    "create_module",
    "get_kernel_syms",
    "query_module",
)
# clone's flags that make namespaces (CLONE_NEWNS ... CLONE_NEWCGROUP, CLONE_NEWTIME).
_NEW_NAMESPACE = (
    0x00020000,
    0x02000000,
    0x04000000,
    0x08000000,
    0x10000000,
    0x20000000,
    0x40000000,
    0x00000080,
)


@dataclass(frozen=True)
class SeccompFilter:
    """A compiled filter: the BPF program bwrap loads (`--seccomp FD`) before the job."""

    program: bytes
    denied: int  # how many system calls it refuses outright

    def describe(self) -> str:
        return f"default filter ({self.denied} system calls refused, namespace clones too)"

    def open_fd(self) -> int:
        """A fresh descriptor holding the program, read once by one sandbox."""
        return memfd("sandrun-seccomp", self.program)


def build() -> tuple[SeccompFilter | None, str]:
    """The default filter for this machine's architecture, or None and why not."""
    try:
        rules, denied = _rules()
        program = _exported(rules)
    except (ImportError, RuntimeError) as exc:  # RuntimeError: no libseccomp.so
        return None, f"libseccomp is not available ({exc})"
    except OSError as exc:
        return None, f"libseccomp could not build the filter ({exc})"
    return SeccompFilter(program, denied), ""


@functools.cache
def exec_program() -> bytes:
    """The filter an exec into a job loads (`enter.py --seccomp-fd`): the job filter less
    `setns`, which the exec's `nsenter` needs to join the job's namespaces. It drops
    every capability right after, without which setns is refused anyway, so all of the
    exec runs under the rest. Raises OSError or ImportError where it cannot be built."""
    rules, _ = _rules(allow=("setns",))
    return _exported(rules)


def _exported(rules: Any) -> bytes:
    with os.fdopen(os.memfd_create("sandrun-seccomp-build", 0), "w+b") as out:
        rules.export_bpf(out)
        out.seek(0)
        return out.read()


def _rules(allow: tuple[str, ...] = ()) -> tuple[Any, int]:
    """The filter's rules (a pyseccomp SyscallFilter) and how many calls it refuses."""
    import pyseccomp as seccomp

    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    native = seccomp.system_arch()
    if native == seccomp.Arch.X86_64:
        # 32-bit calls reach the same kernel: filter them alike rather than kill them.
        for arch in (seccomp.Arch.X86, seccomp.Arch.X32):
            rules.add_arch(arch)
    refuse = seccomp.ERRNO(errno.EPERM)
    denied = 0
    for name in DENIED:
        if name in allow:
            continue
        try:
            rules.add_rule(refuse, name)
            denied += 1
        except OSError:
            continue  # not a system call on this architecture
    for flag in _NEW_NAMESPACE:
        rules.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc fall
    # back to clone, whose flags it can (as Docker does).
    try:
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    except OSError:
        pass
    return rules, denied
