"""Who may use the public API, and how much: per-address limits for anonymous callers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sandrun.errors import OverQuota

CompatMode = Literal["anonymous", "token", "off"]
MODES: tuple[CompatMode, ...] = ("anonymous", "token", "off")


@dataclass(frozen=True)
class PublicApi:
    """`anonymous`: no token needed, limited per client address; `token`: a user token
    is required (and limits are the token's owner's); `off`: not served."""

    mode: CompatMode = "anonymous"
    max_concurrent: int = 2  # jobs queued or running, per address
    jobs_per_hour: int = 60
    cpu_seconds_per_minute: float = 120.0  # used by attempts that ended in the last minute

    def check(self, active: int, last_hour: int, cpu_last_minute: float) -> None:
        """Raise QuotaExceededError (with `retry_after` seconds) if one more job is too many."""
        if active >= self.max_concurrent:
            raise OverQuota(
                f"{active} jobs are queued or running; the limit is {self.max_concurrent}", 5
            )
        if last_hour >= self.jobs_per_hour:
            raise OverQuota(
                f"{last_hour} jobs in the last hour; the limit is {self.jobs_per_hour}", 60
            )
        if cpu_last_minute >= self.cpu_seconds_per_minute:
            raise OverQuota(
                f"{cpu_last_minute:.0f} CPU-seconds in the last minute; the limit is "
                f"{self.cpu_seconds_per_minute:g}",
                60,
            )
