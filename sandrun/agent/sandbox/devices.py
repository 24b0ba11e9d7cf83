"""The GPU hook: which GPUs an attempt gets, and the device files that go with them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Needed by every CUDA program besides its own /dev/nvidiaN.
SHARED_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


class GpuSlots:
    """Hands out GPU indices exclusively; claims already made sure enough are free."""

    def __init__(self, total: int, dev: Path = Path("/dev")) -> None:
        self.total = total
        self._dev = dev
        self._free = list(range(total))
        self._lock = threading.Lock()

    @contextmanager
    def assign(self, count: int) -> Iterator[list[int]]:
        with self._lock:
            if count > len(self._free):
                raise RuntimeError(f"{count} GPUs asked for, {len(self._free)} free")
            taken, self._free = self._free[:count], self._free[count:]
        try:
            yield taken
        finally:
            with self._lock:
                self._free = sorted(self._free + taken)

    def devices(self, indices: list[int]) -> list[Path]:
        """The device files for `indices` that exist here (none for a job without GPUs)."""
        if not indices:
            return []
        names = [f"nvidia{i}" for i in indices] + list(SHARED_DEVICES)
        return [self._dev / n for n in names if (self._dev / n).exists()]
