"""The unshare backend, for machines without bubblewrap: util-linux `unshare` makes the
namespaces and a generated shell script builds the view in a tmpfs, then chroots into it.

The script stays as the namespace's PID 1 and runs the job as its child (not `exec`), so
the job keeps normal signal handling and everything it leaves behind dies with it.
"""

from __future__ import annotations

import os
import shlex

from sandrun.agent.sandbox.base import SYSTEM_PATH, Box, Sandbox, drop_privileges, system_tool
from sandrun.agent.sandbox.view import DEVICES, PROC_READ_ONLY, Mount, expand_root

# Remounting read-only is per mount: do it for the bind and every mount under it.
_RO_ALL = (
    'ro_all() { awk -v p="$1" \'$5 == p || index($5, p "/") == 1 { print $5 }\' '
    '/proc/self/mountinfo | while read -r m; do mount -o remount,bind,ro "$m"; done; }'
)


class UnshareSandbox(Sandbox):
    name = "unshare"
    launchers = frozenset({"unshare"})
    builds_root = True

    def caps_tmpfs(self) -> bool:
        return True

    def command(self, box: Box) -> list[str]:
        if box.root is None:
            raise ValueError("the unshare sandbox needs an empty root directory")
        # If the agent dies, unshare dies (pdeathsig), and --kill-child takes the job along.
        argv = [system_tool("setpriv"), "--pdeathsig", "KILL", "--", "unshare"]
        argv += ["--pid", "--fork", "--kill-child", "--mount", "--ipc", "--uts"]
        if os.geteuid() != 0:
            argv += ["--user", "--map-root-user"]
        if not box.network:
            argv.append("--net")
        # Our tools come from the system PATH; the job gets its own PATH back.
        lines = ["set -eu", f"R={shlex.quote(str(box.root))}", "JOB_PATH=$PATH"]
        lines += [f"PATH={SYSTEM_PATH}", _RO_ALL]
        lines.append('mount -t tmpfs -o mode=0755 sandrun "$R"')
        size = f",size={box.tmp_size}" if box.tmp_size is not None else ""
        for mount in expand_root(self.view.mounts(box.writable, list(box.devices), box.binds)):
            lines += _mount_lines(mount, size)
        if not box.network:
            lines.append("if command -v ip >/dev/null; then ip link set lo up; fi")
        # Not exec: this shell stays PID 1 of the namespace, the job its child.
        chroot = shlex.quote(system_tool("chroot"))
        lines.append(f'cd / && PATH=$JOB_PATH {chroot} "$R" "$@"')
        drop = drop_privileges(box.uid, always=True)
        run = [*drop, system_tool("env"), "-C", str(box.cwd), "--", *box.argv]
        return [*argv, "/bin/sh", "-c", "\n".join(lines), "sandrun-box", *run]


def _mount_lines(mount: Mount, size: str) -> list[str]:
    """The shell lines for one mount; `size` caps each tmpfs a job may write (",size=N")."""
    at = f'"$R"{shlex.quote(mount.path)}'
    src = shlex.quote(mount.source)
    is_dir = not mount.source or os.path.isdir(mount.source)
    make = f"mkdir -p {at}" if is_dir else f'mkdir -p "$(dirname {at})" && touch {at}'
    match mount.kind:
        case "ro":
            return [make, f"mount --rbind {src} {at}", f"ro_all {at}"]
        case "rw" | "device":
            return [make, f"mount --rbind {src} {at}"]
        case "symlink":
            return [f'mkdir -p "$(dirname {at})"', f"ln -sfn {src} {at}"]
        case "tmpfs":
            return [make, f"mount -t tmpfs -o mode=1777{size} tmp {at}"]
        case "hide":
            if os.path.isdir(mount.path):
                return [f"mkdir -p {at}", f"mount -t tmpfs -o mode=0755{size} hidden {at}"]
            return [f"mount --bind /dev/null {at}"]
        case "proc":
            lines = [make, f"mount -t proc proc {at}"]
            for name in PROC_READ_ONLY:
                there = f"{at}/{name}"
                lines.append(
                    f"if [ -e {there} ]; then mount --bind {there} {there} && "
                    f"mount -o remount,bind,ro {there}; fi"
                )
            return lines
        case "dev":
            lines = [make, f"mount -t tmpfs -o mode=0755{size} dev {at}"]
            for name in DEVICES:
                node = f"{at}/{name}"
                lines += [f"touch {node}", f"mount --bind /dev/{name} {node}"]
            lines += [f"ln -s /proc/self/fd {at}/fd", f"mkdir -m 1777 {at}/shm"]
            lines += [f"ln -s /proc/self/fd/{n} {at}/{s}" for n, s in enumerate(_STDIO)]
            return lines
        case _:
            raise ValueError(f"unknown mount kind {mount.kind!r}")


_STDIO = ("stdin", "stdout", "stderr")
