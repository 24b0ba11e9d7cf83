"""The bubblewrap backend: namespaces and the view, set up by `bwrap` in one exec."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import PurePosixPath

from sandrun.agent.sandbox.base import Box, Sandbox, drop_privileges
from sandrun.agent.sandbox.view import PROC_READ_ONLY, Mount


class BwrapSandbox(Sandbox):
    name = "bwrap"
    launchers = frozenset({"bwrap"})
    gates_itself = True
    filters = True

    def caps_tmpfs(self) -> bool:
        return sizes_tmpfs()

    def command(self, box: Box) -> list[str]:
        argv = ["bwrap", "--die-with-parent", "--new-session"]
        # As root bwrap needs no user namespace (and the job leaves root through setpriv);
        # otherwise an unprivileged user namespace maps the agent's own uid.
        argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if os.geteuid() != 0:
            argv.append("--unshare-user")
        if not box.network:
            argv.append("--unshare-net")
        made: set[str] = set()  # directories bwrap creates, or binds, inside
        for mount in self.view.mounts(box.writable, list(box.devices), box.binds):
            # bwrap would copy a parent's mode from the host (/root: 0700), leaving a job
            # with another uid unable to reach what is bound below it.
            if mount.kind in ("ro", "rw", "hide", "device", "symlink") and mount.path != "/":
                for parent in reversed(PurePosixPath(mount.path).parents[:-1]):
                    if str(parent) not in made and not _under_ro(str(parent), made):
                        argv += ["--perms", "0755", "--dir", str(parent)]
                        made.add(str(parent))
            if mount.kind == "tmpfs":
                argv += ["--perms", "1777"]
            if _is_tmpfs(mount) and box.tmp_size is not None and self.caps_tmpfs():
                argv += ["--size", str(box.tmp_size)]
            argv += _mount_args(mount)
            if mount.kind == "dev" and box.tmp_size is not None and self.caps_tmpfs():
                # --dev makes /dev/shm a plain directory of an unsized tmpfs.
                argv += ["--perms", "1777", "--size", str(box.tmp_size)]
                argv += ["--tmpfs", f"{mount.path}/shm"]
            made.add(mount.path if mount.kind != "ro" else f"ro:{mount.path}")
        argv += ["--chdir", str(box.cwd)]
        if box.seccomp_fd is not None:
            argv += ["--seccomp", str(box.seccomp_fd)]
        if box.info_fd is not None:  # the start gate: report the child's pid, then wait
            argv += ["--info-fd", str(box.info_fd), "--block-fd", "0"]
        if box.uid is None:  # bwrap drops root's capabilities itself: one exec fewer
            argv += ["--cap-drop", "ALL"] if os.geteuid() == 0 else []
            return [*argv, "--", *box.argv]
        return [*argv, "--", *drop_privileges(box.uid), *box.argv]


@functools.cache
def sizes_tmpfs() -> bool:
    """Whether this bwrap caps a tmpfs's size (`--size`, bubblewrap 0.7 and later)."""
    try:
        done = subprocess.run(["bwrap", "--help"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--size" in done.stdout + done.stderr


def _is_tmpfs(mount: Mount) -> bool:
    return mount.kind == "tmpfs" or (mount.kind == "hide" and os.path.isdir(mount.path))


def _under_ro(path: str, made: set[str]) -> bool:
    return any(
        m.startswith("ro:") and (path == m[3:] or path.startswith(m[3:].rstrip("/") + "/"))
        for m in made
    )


def _mount_args(mount: Mount) -> list[str]:
    match mount.kind:
        case "ro":
            return ["--ro-bind", mount.source, mount.path]
        case "rw":
            return ["--bind", mount.source, mount.path]
        case "device":
            return ["--dev-bind", mount.source, mount.path]
        case "symlink":
            return ["--symlink", mount.source, mount.path]
        case "tmpfs":
            return ["--tmpfs", mount.path]
        case "hide":
            if os.path.isdir(mount.path):
                return ["--tmpfs", mount.path]
            return ["--ro-bind", "/dev/null", mount.path]
        case "proc":
            covered = [f"{mount.path}/{name}" for name in PROC_READ_ONLY]
            return ["--proc", mount.path, *(a for c in covered for a in ("--ro-bind-try", c, c))]
        case "dev":
            return ["--dev", mount.path]
        case _:
            raise ValueError(f"unknown mount kind {mount.kind!r}")
