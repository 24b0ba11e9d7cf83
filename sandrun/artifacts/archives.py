"""Limits on what an archive may unpack to, checked while it is read.

A few kilobytes of zip or gzip can claim gigabytes (a "bomb"). Every unpacker counts
members and bytes as they come out and stops at the first that is over a limit, so the
memory or disk an archive costs is bounded by the limits, not by what it claims.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandrun.errors import ArchiveTooLarge

# Below this much unpacked, any compression ratio is fine (small, repetitive files).
_RATIO_FLOOR = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int  # unpacked, all members together
    max_members: int = 10_000
    max_ratio: float = 200.0  # unpacked bytes per archive byte


class Budget:
    """What is left of `limits` for archives of `packed` bytes in all; `what` names them."""

    def __init__(self, limits: ArchiveLimits, packed: int, what: str) -> None:
        self.limits, self.packed, self.what = limits, max(packed, 1), what
        self.members = 0
        self.unpacked = 0

    def member(self, declared: int = 0) -> None:
        """Count one more member, refusing it at once if its declared size is over."""
        self.members += 1
        if self.members > self.limits.max_members:
            self._refuse(f"holds over {self.limits.max_members} files")
        if self.unpacked + declared > self.limits.max_bytes:
            self._refuse(f"unpacks to over {self.limits.max_bytes >> 20} MiB")

    def take(self, size: int) -> None:
        """Count `size` more unpacked bytes (call as they are read, before keeping them)."""
        self.unpacked += size
        if self.unpacked > self.limits.max_bytes:
            self._refuse(f"unpacks to over {self.limits.max_bytes >> 20} MiB")
        ratio = self.unpacked / self.packed
        if self.unpacked > _RATIO_FLOOR and ratio > self.limits.max_ratio:
            self._refuse(
                f"unpacks to over {self.limits.max_ratio:g} times its size (a compression bomb?)"
            )

    def _refuse(self, why: str) -> None:
        raise ArchiveTooLarge(
            f"{self.what} {why}",
            field="files",
            suggestions=["leave large or generated files out", "fetch big data inside the job"],
        )
