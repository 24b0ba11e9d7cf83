"""Pausing an attempt: every process of it stopped in place, and let go again.

Its cgroup's freezer where it has one (v2's cgroup.freeze, or v1's freezer controller): the
kernel stops the whole group at once, forks in flight included, and the job cannot see or
undo it. Else SIGSTOP to its process tree (and SIGCONT to thaw): what Slurm's `scontrol
suspend` does without cgroups, good enough for jobs that do not catch SIGCONT or fork at
that moment."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from sandrun.agent.proctree import signal_tree
from sandrun.agent.sandbox.cgroups import AttemptCgroup
from sandrun.models import AttemptKey

log = logging.getLogger("sandrun.agent")


class Freezer:
    def __init__(
        self, pid: int, cgroup: AttemptCgroup | None, fields: dict[str, object] | None = None
    ) -> None:
        self.pid = pid
        self.fields = fields or {}  # the attempt's, for the agent's log
        self.cgroup = cgroup if cgroup is not None and cgroup.can_freeze() else None
        self.frozen = False
        self.since: float | None = None  # when it was frozen (monotonic), while it is

    @property
    def how(self) -> str:
        return "cgroup freezer" if self.cgroup is not None else "SIGSTOP"

    def set(self, frozen: bool) -> bool:
        """Freeze or thaw; whether it changed (False: it was so already, or it failed)."""
        if frozen == self.frozen:
            return False
        try:
            if self.cgroup is not None:
                self.cgroup.freeze(frozen)
            else:
                signal_tree(self.pid, signal.SIGSTOP if frozen else signal.SIGCONT)
        except OSError as exc:
            what = "freeze" if frozen else "thaw"
            log.warning("could not %s the attempt: %s", what, exc, extra=self.fields)
            return False
        log.info("%s (%s)", "frozen" if frozen else "thawed", self.how, extra=self.fields)
        self.frozen = frozen
        self.since = time.monotonic() if frozen else None
        return True


class FreezeNews:
    """What an attempt's freezer did ("frozen", "thawed"), kept for its agent's next
    heartbeat to say (`wake` asks for it now); put back if that heartbeat fails."""

    def __init__(self, wake: Callable[[], None] = lambda: None) -> None:
        self._said: list[str] = []
        self._lock = threading.Lock()
        self._wake = wake

    def tell(self, what: str) -> None:
        with self._lock:
            self._said.append(what)
        self._wake()

    def take(self) -> list[str]:
        with self._lock:
            said, self._said = self._said, []
        return said

    def untake(self, said: list[str]) -> None:
        with self._lock:
            self._said = said + self._said


def said(news: dict[tuple[str, int], list[str]]) -> tuple[list[AttemptKey], list[AttemptKey]]:
    """The attempts frozen, and those thawed, in what a heartbeat gathered."""
    frozen, thawed = [], []
    for (job_id, number), told in news.items():
        key = AttemptKey(job_id=job_id, attempt=number)
        frozen += [key] if "frozen" in told else []
        thawed += [key] if "thawed" in told else []
    return frozen, thawed
