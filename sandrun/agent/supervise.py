"""Supervising a running attempt: pump its output into the log sink, freeze and thaw it as
its job is paused and resumed, and stop it — SIGTERM, then SIGKILL after the grace — when
it is cancelled, loses its lease, is handed back, runs past its timeout (the time it spent
frozen not counted), its log limit (if asked) or its disk limit."""

from __future__ import annotations

import os
import selectors
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from sandrun.agent.diskwatch import Watched
from sandrun.agent.execs import Inside
from sandrun.agent.freezer import FreezeNews, Freezer
from sandrun.agent.logsink import LogSink
from sandrun.agent.process import Ended, Running
from sandrun.agent.proctree import signal_tree
from sandrun.models import LogChunk, Stream
from sandrun.spec import JobSpec

_READ = 1 << 16
_DRAIN_AFTER_EXIT = 1.0  # seconds to keep reading pipes held open by escaped children


class Stop(StrEnum):
    """Why the agent stopped an attempt (None: it ended on its own)."""

    CANCELLED = "cancelled"
    LOST = "lost"  # its lease is gone: stop at once
    HANDBACK = "handback"  # the agent is draining
    TIMEOUT = "timeout"
    LOG_LIMIT = "log_limit"
    DISK_LIMIT = "disk_limit"
    VOLUME_FULL = "volume_full"
    PREEMPTED = "preempted"  # asked to make room, it did not checkpoint within its grace


@dataclass
class AttemptControl:
    """Signals from the agent to a running attempt."""

    cancel: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)  # lease gone: stop quietly
    handback: threading.Event = field(default_factory=threading.Event)  # draining: give back
    pause: threading.Event = field(default_factory=threading.Event)  # keep it frozen
    news: FreezeNews = field(default_factory=FreezeNews)  # for the next heartbeat to say
    end_logs: list[LogChunk] = field(default_factory=list)  # its last output, for its end
    saves: Path | None = None  # its $SANDRUN_CHECKPOINT_DIR, once made
    checkpoint_at: float | None = None  # the newest checkpoint request (a server time)
    signalled_for: float | None = None  # the request it was last signalled for
    preempt_at: float | None = None  # asked to make room (a server time)
    preempt_by: float | None = None  # ...and stopped at this monotonic time, if still running
    env: dict[str, str] = field(default_factory=dict)  # its environment, once built
    inside: Inside | None = None  # where an exec joins it, once it runs


def supervise(
    proc: Running,
    spec: JobSpec,
    sink: LogSink,
    ctl: AttemptControl,
    started: float,
    disks: Sequence[Watched],
    kill_grace: float,
    launchers: frozenset[str],
    freezer: Freezer,
) -> tuple[Stop | None, Ended]:
    """Pump output until the process ends; return why we stopped it and how it ended.
    `disks`: its scratch, then the volumes it writes, each under watch against its size.
    `launchers` are the sandbox's own processes, spared the polite SIGTERM."""
    sel = selectors.DefaultSelector()
    streams_by_fd: dict[int, Stream] = {
        proc.stdout.fileno(): "stdout",
        proc.stderr.fileno(): "stderr",
    }
    sel.register(proc.stdout, selectors.EVENT_READ, "pipe")
    sel.register(proc.stderr, selectors.EVENT_READ, "pipe")
    exit_fd = proc.exit_fd()
    if exit_fd is not None:
        sel.register(exit_fd, selectors.EVENT_READ, "exit")
    deadline = started + spec.timeout if spec.timeout else None
    reason: Stop | None = None
    kill_at: float | None = None
    exited: Ended | None = None
    drain_until: float | None = None
    streams = 2
    try:
        while streams or exited is None:
            streams -= _pump(sel, streams_by_fd, sink)
            sink.maybe_flush()  # first: whether it exited is looked at after any wait
            if exited is None:
                exited = proc.poll_exit()
                if exited is not None:
                    drain_until = time.monotonic() + _DRAIN_AFTER_EXIT
            if drain_until is not None and time.monotonic() > drain_until:
                break  # an escaped child holds the pipes open; the job is over
            now = time.monotonic()
            if reason is None and exited is None:
                deadline = _obey(ctl, freezer, deadline, now, proc.pid, spec, launchers)
                reason = _stop_reason(ctl, None if freezer.frozen else deadline, sink, spec, disks)
                if reason is not None:
                    signal_tree(proc.pid, signal.SIGTERM, spare=launchers)
                    if freezer.set(False):  # a frozen process takes its signals once thawed
                        ctl.news.tell("thawed")
                    kill_at = now + (0 if reason is Stop.LOST else kill_grace)
            if kill_at is not None and now >= kill_at and exited is None:
                signal_tree(proc.pid, signal.SIGKILL)
                kill_at = None
    finally:
        sel.close()
        proc.close()
    assert exited is not None
    return reason, exited


def _paused(
    ctl: AttemptControl, freezer: Freezer, deadline: float | None, now: float
) -> float | None:
    """Freeze or thaw the attempt as its job is paused or resumed; its deadline, moved on
    by the time it spent frozen."""
    since = freezer.since
    if not freezer.set(ctl.pause.is_set()):
        return deadline
    ctl.news.tell("frozen" if freezer.frozen else "thawed")
    if freezer.frozen or deadline is None or since is None:
        return deadline
    return deadline + (now - since)


def _obey(
    ctl: AttemptControl,
    freezer: Freezer,
    deadline: float | None,
    now: float,
    pid: int,
    spec: JobSpec,
    launchers: frozenset[str],
) -> float | None:
    """Freeze or thaw the attempt as its job is paused or resumed; signal it for a
    checkpoint asked of it, or to make room (preempted: stopped past its grace). Its
    deadline, moved on by the time it spent frozen."""
    deadline = _paused(ctl, freezer, deadline, now)
    if freezer.frozen:
        return deadline
    if ctl.checkpoint_at != ctl.signalled_for:
        _ask_checkpoint(ctl, pid, spec, launchers)
    if ctl.preempt_at is not None and ctl.preempt_by is None:
        ctl.preempt_by = now + spec.checkpoint.grace_seconds
        _ask_checkpoint(ctl, pid, spec, launchers)
    return deadline


def _ask_checkpoint(
    ctl: AttemptControl, pid: int, spec: JobSpec, launchers: frozenset[str]
) -> None:
    """Send the job its checkpoint signal, once for each request."""
    ctl.signalled_for = ctl.checkpoint_at
    signal_tree(pid, signal.Signals[spec.checkpoint.signal], spare=launchers)


def _pump(sel: selectors.BaseSelector, streams_by_fd: dict[int, Stream], sink: LogSink) -> int:
    """Move what the job wrote into the sink (waiting briefly for it); return how many of
    its streams closed."""
    closed = 0
    for key, _ in sel.select(0.05):
        if key.data == "exit":
            sel.unregister(key.fileobj)
            continue
        chunk = os.read(key.fd, _READ)
        if chunk:
            sink.add(streams_by_fd[key.fd], chunk)
        else:
            sel.unregister(key.fileobj)
            closed += 1
    return closed


def _stop_reason(
    ctl: AttemptControl,
    deadline: float | None,
    sink: LogSink,
    spec: JobSpec,
    disks: Sequence[Watched],
) -> Stop | None:
    """Why the running job must be stopped now, if it must (first cause wins)."""
    told = control_stop(ctl, deadline)
    if told is not None:
        return told
    if sink.capped and spec.limits.stop_on_log_limit:
        return Stop.LOG_LIMIT
    for i, disk in enumerate(disks):
        if disk.over.is_set():
            return Stop.VOLUME_FULL if i else Stop.DISK_LIMIT
    return None


def control_stop(ctl: AttemptControl, deadline: float | None) -> Stop | None:
    """Why the agent must stop the attempt now, whatever it is doing: cancelled, lost,
    handed back or out of time (past `deadline`, on the monotonic clock)."""
    if ctl.cancel.is_set():
        return Stop.CANCELLED
    if ctl.lost.is_set():
        return Stop.LOST
    if ctl.handback.is_set():
        return Stop.HANDBACK
    now = time.monotonic()
    if ctl.preempt_by is not None and now >= ctl.preempt_by:
        return Stop.PREEMPTED
    return Stop.TIMEOUT if deadline is not None and now >= deadline else None
