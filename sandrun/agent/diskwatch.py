"""How much an attempt's scratch directory holds, measured on a thread while it runs.

Filesystems rarely offer a per-directory quota an agent can set (XFS project quotas need
the mount option), so the agent walks the tree, as `du` does: allocated blocks, each
hard-linked inode once, never following a link. Between walks a job can write at disk
speed, so the file size rlimit (no file larger than the limit) bounds the overshoot.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

_MIN_INTERVAL = 1.0  # seconds between walks
_BUSY_FACTOR = 10  # ...and at least ten times as long as a walk took: a vast tree costs <10%


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


class DiskWatch:
    """Walks `root` until stopped; `over` is set once it holds more than `limit` bytes."""

    def __init__(self, root: Path, limit: int) -> None:
        self.root = root
        self.limit = limit
        self.used = 0
        self.over = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="diskwatch", daemon=True)

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.used = allocated_bytes(self.root)
            if self.used > self.limit:
                self.over.set()
                return
            spent = time.monotonic() - began
            self._stop.wait(max(_MIN_INTERVAL, _BUSY_FACTOR * spent))
