"""How long warm workers are kept, and how many: each function's `warm` policy
(`@app.function(min_workers=, idle_timeout=)`), per worker key.

Workers of one key are interchangeable, and a key may serve several of an owner's
functions (plain calls of one sandbox shape share workers). So a key keeps the most any of
its functions asks: while a function's calls come (none has been idle for its
`idle_timeout`), its `min_workers` are kept however long they idle, and started ahead if
fewer exist; otherwise a worker retires once idle for the longest `idle_timeout` its key's
functions ask (the agent's `--warm-idle` where they ask none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sandrun.agent.workers.worker import WarmKey
from sandrun.spec import JobSpec
from sandrun.spec.policies import MAX_WARM_IDLE


@dataclass(frozen=True)
class Kept:
    """One function's policy on one key, from its latest call."""

    spec: JobSpec  # that call: what a worker started ahead is shaped by
    min_workers: int
    idle_for: float | None  # seconds a worker stays idle (None: the agent's default)
    last: float  # when that call came (the pool's clock)


class KeepPolicy:
    """Every key's functions' policies, as their latest calls set them. Not thread-safe:
    the pool calls it under its lock."""

    def __init__(self, default_idle: Callable[[], float], most: int) -> None:
        self.default_idle = default_idle  # the pool's `idle`, which may change
        self.most = most  # min_workers are capped at the pool's idle cap
        self._kept: dict[WarmKey, dict[str, Kept]] = {}

    def note(self, key: WarmKey, spec: JobSpec, now: float) -> None:
        """A call of `spec`'s function came for `key`."""
        warm = spec.warm
        idle_for = None if warm.idle_timeout is None else min(warm.idle_timeout, MAX_WARM_IDLE)
        kept = Kept(spec, min(warm.min_workers, self.most), idle_for, now)
        self._kept.setdefault(key, {})[function_of(spec)] = kept

    def idle_for(self, key: WarmKey) -> float:
        """How long a worker of `key` may stay idle: the longest its functions ask."""
        asked = [self._idle(k) for k in self._kept.get(key, {}).values()]
        return max(asked, default=self.default_idle())

    def minimum(self, key: WarmKey, now: float) -> int:
        """How many workers `key` keeps now: the most asked by a function whose calls come."""
        kept = self._kept.get(key, {}).values()
        return max((k.min_workers for k in kept if self._open(k, now)), default=0)

    def wanted(self, now: float) -> list[tuple[WarmKey, JobSpec, int]]:
        """Each key that keeps workers now: the spec to start one from, and how many."""
        found = []
        for key in self._kept:
            keep = self.minimum(key, now)
            if keep:
                latest = max(self._kept[key].values(), key=lambda k: k.last)
                found.append((key, latest.spec, keep))
        return found

    def functions(self, key: WarmKey) -> list[str]:
        return sorted(self._kept.get(key, {}))

    def forget(self, now: float, live: set[WarmKey]) -> None:
        """Drop the policies of functions whose calls stopped, on keys with no worker."""
        for key in list(self._kept):
            if key not in live:
                still = {f: k for f, k in self._kept[key].items() if self._open(k, now)}
                if still:
                    self._kept[key] = still
                else:
                    del self._kept[key]

    def _idle(self, kept: Kept) -> float:
        return kept.idle_for if kept.idle_for is not None else self.default_idle()

    def _open(self, kept: Kept, now: float) -> bool:
        """Whether a function's calls still come."""
        return now - kept.last < self._idle(kept)


def function_of(spec: JobSpec) -> str:
    """The function a call is of: its `function` label (the SDK sets it), or its name."""
    return (spec.labels.get("function") or spec.name or "")[:128]
