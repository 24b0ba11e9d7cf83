"""Signalling a job's whole process tree.

Each attempt runs as the leader of its own session and process group, so one killpg
reaches every child that stayed in the group; children that moved to a session of their
own are found by walking the tree. (A PID namespace, from the sandbox, closes the gap for
daemons that double-fork away before we look.)
"""

from __future__ import annotations

import os
import signal

import psutil


def signal_tree(pid: int, sig: signal.Signals, spare: frozenset[str] = frozenset()) -> None:
    """Send `sig` to the process group led by `pid` and to every descendant of `pid`.

    Processes named in `spare` (a sandbox's own launchers) are left out, and then so is
    the group signal, which would reach them too.
    """
    try:
        descendants = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        descendants = []
    if not spare:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for child in descendants:
        try:
            if not spare or child.name() not in spare:
                child.send_signal(sig)
        except psutil.Error:
            pass


def start_time(pid: int) -> float | None:
    """When `pid` started (epoch seconds), to tell it apart from a later process with its pid."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def kill_if_same(pid: int, started_at: float | None) -> bool:
    """SIGKILL the tree of `pid` if it is still the process that started at `started_at`."""
    if started_at is None:
        return False
    now_started = start_time(pid)
    if now_started is None or abs(now_started - started_at) > 0.05:
        return False
    signal_tree(pid, signal.SIGKILL)
    return True
