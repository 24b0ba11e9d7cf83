"""How much an attempt's scratch directory holds, measured on a thread while it runs.

Filesystems rarely offer a per-directory quota an agent can set (XFS project quotas need
the mount option), so the agent walks the tree, as `du` does: allocated blocks, each
hard-linked inode once, never following a link. Between walks a job can write at disk
speed, so the file size rlimit (no file larger than the limit) bounds the overshoot.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_MIN_INTERVAL = 1.0  # seconds between walks
_BUSY_FACTOR = 10  # ...and at least ten times as long as a walk took: a vast tree costs <10%
_IDLE_EXIT = 30.0  # seconds with nothing to watch before the thread ends


def allocated_bytes(root: Path) -> int:
    """The bytes allocated to everything under `root`, the directories included."""
    total = 0
    seen: set[tuple[int, int]] = set()
    pending = [str(root)]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue  # removed, or not readable: nothing to count
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                    key = (info.st_dev, info.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += info.st_blocks * 512
                if stat.S_ISDIR(info.st_mode):
                    pending.append(entry.path)
    return total


@dataclass(eq=False)
class Watched:
    """One attempt's scratch under watch: `over` is set once it holds more than `limit`."""

    root: Path
    limit: int
    also: tuple[Path, ...] = ()  # counted with it (an attempt's checkpoint directory)
    since: float = field(default_factory=time.monotonic)
    used: int = 0
    over: threading.Event = field(default_factory=threading.Event)


class DiskWatch:
    """One thread for all of an agent's attempts: it walks each scratch in turn, each at
    most once a second (never in an attempt's first second: most jobs are over by then)."""

    def __init__(self) -> None:
        self._watched: list[Watched] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, root: Path, limit: int, also: tuple[Path, ...] = ()) -> Iterator[Watched]:
        watched = Watched(root, limit, also)
        with self._lock:
            self._watched.append(watched)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="diskwatch", daemon=True)
                self._thread.start()
        try:
            yield watched
        finally:
            with self._lock:
                self._watched.remove(watched)

    def _run(self) -> None:
        idle_since = time.monotonic()
        pause = _MIN_INTERVAL
        while True:
            time.sleep(pause)
            with self._lock:
                due = [w for w in self._watched if not w.over.is_set()]
                if not self._watched and time.monotonic() - idle_since > _IDLE_EXIT:
                    self._thread = None  # the next watch starts another
                    return
            if self._watched:
                idle_since = time.monotonic()
            began = time.monotonic()
            for watched in due:
                if began - watched.since >= _MIN_INTERVAL:
                    watched.used = sum(allocated_bytes(r) for r in (watched.root, *watched.also))
                    if watched.used > watched.limit:
                        watched.over.set()
            pause = max(_MIN_INTERVAL, _BUSY_FACTOR * (time.monotonic() - began))
