"""The node daemon's loop: claim what fits, run each attempt on a thread, heartbeat, cancel.

The agent pulls: it claims from the control plane whenever it has room and something
changed (a wake-up), renews its attempts' leases, and kills attempts whose jobs were
cancelled or which lost their lease.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

from sandrun.agent.control import ControlPlane
from sandrun.agent.executor import AttemptControl, Executor
from sandrun.agent.proctree import kill_if_same
from sandrun.agent.wake import Waker
from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import SandrunError, StaleAttempt
from sandrun.models import AttemptResult, Capacity, Claim
from sandrun.states import FailureReason

log = logging.getLogger("sandrun.agent")

MAX_ATTEMPTS = 256  # at once on one node, however small their CPU share


def detect_capacity() -> Capacity:
    """This machine's CPUs (those this process may use) and memory."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return Capacity(cpus=float(cpus or 1), memory_mb=psutil.virtual_memory().total >> 20)


@dataclass
class _Running:
    claim: Claim
    ctl: AttemptControl


class Agent:
    def __init__(
        self,
        control: ControlPlane,
        artifacts: LocalArtifactStore,
        waker: Waker,
        *,
        runs_dir: Path,
        name: str = "local",
        labels: dict[str, str] | None = None,
        node_id: str | None = None,
        capacity: Capacity | None = None,
        kill_grace: float = 5.0,
        heartbeat_every: float = 5.0,
        idle_exit: float | None = None,
    ) -> None:
        self.control = control
        self.waker = waker
        self.name = name
        self.labels = labels or {}
        self.node_id = node_id
        self.capacity = capacity or detect_capacity()
        self.executor = Executor(control, artifacts, runs_dir, kill_grace)
        self.heartbeat_every = heartbeat_every
        self.idle_exit = idle_exit
        self._running: dict[tuple[str, int], _Running] = {}
        self._lock = threading.Lock()
        # Attempts run on reused threads (one each while it runs): no per-job thread churn.
        self._pool = ThreadPoolExecutor(MAX_ATTEMPTS, thread_name_prefix="attempt")

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set (then drain: running attempts finish) or idle_exit."""
        fixed = self.node_id is not None
        self.node_id = self.control.register_node(
            self.name, self.capacity, self.labels, self.node_id
        )
        if fixed:
            self._recover()
        last_beat = time.monotonic()
        idle_since = time.monotonic()
        while not stop.is_set():
            room_left = self._claim_while_fits()
            if self._busy():
                idle_since = time.monotonic()
            elif self.idle_exit is not None and time.monotonic() - idle_since >= self.idle_exit:
                log.info("idle for %.0fs; exiting", self.idle_exit)
                break
            kinds = self.waker.wait(self._wait_timeout(last_beat, room_left))
            if "cancel" in kinds or time.monotonic() - last_beat >= self.heartbeat_every:
                self._heartbeat()
                last_beat = time.monotonic()
        self._drain()

    def _wait_timeout(self, last_beat: float, room_left: bool) -> float:
        timeout = min(1.0, self.heartbeat_every - (time.monotonic() - last_beat))
        if room_left:  # a full node waits for an attempt to finish, not for the clock
            upcoming = self.control.next_wakeup()
            if upcoming is not None:
                timeout = min(timeout, upcoming - time.time())
        return max(timeout, 0.0)

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    def _free(self) -> Capacity:
        with self._lock:
            specs = [r.claim.job.spec for r in self._running.values()]
        return Capacity(
            cpus=self.capacity.cpus - sum(s.cpus for s in specs),
            memory_mb=self.capacity.memory_mb - sum(s.memory or 0 for s in specs),
            gpus=self.capacity.gpus - sum(s.gpus.count if s.gpus else 0 for s in specs),
        )

    def _claim_while_fits(self) -> bool:
        """Claim until nothing more fits; return whether room is left for a later job."""
        assert self.node_id is not None
        while (free := self._free()).cpus > 0 and len(self._running) < MAX_ATTEMPTS:
            claim = self.control.claim(self.node_id, free)
            if claim is None:
                return True
            ctl = AttemptControl()
            with self._lock:
                self._running[(claim.job.id, claim.attempt)] = _Running(claim, ctl)
            log.info("claimed", extra={"job": claim.job.id, "attempt": claim.attempt})
            self._pool.submit(self._run_attempt, claim, ctl)
        return False

    def _run_attempt(self, claim: Claim, ctl: AttemptControl) -> None:
        key = (claim.job.id, claim.attempt)
        try:
            try:
                result = self.executor.run(claim, ctl)
            except Exception as exc:  # a bug of ours must not be blamed on the job
                log.exception("attempt crashed", extra={"job": key[0], "attempt": key[1]})
                result = AttemptResult(failure_reason=FailureReason.INTERNAL, message=str(exc))
            if result is not None:
                try:
                    job = self.control.complete(claim, result)
                    log.info(
                        f"attempt ended; job {job.state}", extra={"job": key[0], "attempt": key[1]}
                    )
                except StaleAttempt:
                    log.warning(
                        "result refused: attempt is stale", extra={"job": key[0], "attempt": key[1]}
                    )
        finally:
            with self._lock:
                self._running.pop(key, None)
            self.waker.wake("finished")

    def _heartbeat(self) -> None:
        assert self.node_id is not None
        with self._lock:
            running = dict(self._running)
        leases = [(c.claim.job.id, c.claim.attempt, c.claim.token) for c in running.values()]
        try:
            reply = self.control.heartbeat(self.node_id, leases)
            self.control.expire_leases()
        except SandrunError as exc:
            log.warning("heartbeat failed: %s", exc)
            return
        for key in reply.cancel:
            if key in running:
                running[key].ctl.cancel.set()
        for key in reply.stale:
            if key in running:
                running[key].ctl.lost.set()

    def _recover(self) -> None:
        """This node restarted: its old attempts are dead (kill leftovers) and retried."""
        assert self.node_id is not None
        for attempt in self.control.live_attempts(self.node_id):
            if attempt.pid is not None:
                kill_if_same(attempt.pid, attempt.pid_started_at)
        lost = self.control.lose_node(self.node_id)
        if lost:
            log.info("recovered %d attempt(s) of a previous run as node_lost", len(lost))

    def _drain(self) -> None:
        self._pool.shutdown(wait=True)
