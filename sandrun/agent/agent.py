"""The node daemon's loop: claim what fits, run each attempt on a pool thread, heartbeat.

The agent pulls. Embedded, it claims when a wake-up datagram says something changed;
remote, each claim is a long-poll that the server answers the moment a job fits. A
heartbeat thread renews the attempts' leases, learns of cancels, pauses, checkpoint
requests and preemptions, and keeps the agent's own view of each lease: an attempt whose
lease could not be renewed in time is killed, so a cut-off agent never runs on beside its
retry elsewhere."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sandrun.agent.capacity import detect_capacity
from sandrun.agent.claims import ClaimBook, give_back_unreceived
from sandrun.agent.control import ControlPlane
from sandrun.agent.execs import Inside
from sandrun.agent.executor import Executor
from sandrun.agent.freezer import FreezeNews, said
from sandrun.agent.proctree import kill_if_same
from sandrun.agent.reporter import Ended, Reporter
from sandrun.agent.results import metered, signed, uploaded
from sandrun.agent.sandbox import Sandboxing
from sandrun.agent.settings import MAX_ATTEMPTS, AgentSettings
from sandrun.agent.supervise import AttemptControl
from sandrun.agent.wake import Waker
from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import SandrunError, StaleAttempt
from sandrun.models import AttemptKey, AttemptResult, Capacity, Claim, LogChunk, WarmReport
from sandrun.protocol import KeyProof, NodeState
from sandrun.signing import Identity
from sandrun.states import FailureReason

log = logging.getLogger("sandrun.agent")


def _summary(result: AttemptResult) -> str:
    """What a result said, for a log line."""
    if result.failure_reason is None:
        return f"exit code {result.exit_code}"
    return f"{result.failure_reason} ({result.message or f'exit code {result.exit_code}'})"


@dataclass
class _Running:
    claim: Claim
    ctl: AttemptControl
    renewed: float = field(default_factory=time.monotonic)  # last lease renewal we saw


class Agent:
    def __init__(
        self,
        control: ControlPlane,
        artifacts: LocalArtifactStore,
        waker: Waker,
        settings: AgentSettings,
        *,
        runs_dir: Path,
        identity: Identity | None = None,
        node_id: str | None = None,
        sandboxing: Sandboxing | None = None,
    ) -> None:
        self.control = control
        self.identity = identity  # signs every result it reports
        self.waker = waker
        self.settings = settings
        self.node_id = node_id
        self._warm_said: WarmReport | None = None  # what the server was last told of them
        self.capacity = settings.capacity or detect_capacity()
        self.claims = ClaimBook()  # to tell a claim whose reply was lost
        self.reporter = Reporter(control, self.claims, self._adopt)
        self.executor = Executor(
            control,
            self.reporter,
            artifacts,
            runs_dir,
            settings.run,
            sandboxing,
            gpus=self.capacity.gpus,
        )
        # Both follow the server's lease once registered.
        self.lease_seconds = settings.lease_seconds
        self.heartbeat_every = settings.heartbeat_every
        self.max_attempts = min(settings.max_attempts, MAX_ATTEMPTS)
        self.draining = False
        self._running: dict[tuple[str, int], _Running] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._beat_now = threading.Event()
        self.on_registered: Callable[[str], None] | None = None  # given the node's id
        self._stopping = threading.Event()  # set with `run`'s stop: claim nothing more
        # Attempts run on reused threads (one each while it runs): no per-job thread churn.
        self._pool = ThreadPoolExecutor(MAX_ATTEMPTS, thread_name_prefix="attempt")

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set (then drain) or until idle for `idle_exit` seconds."""
        fixed = self.node_id is not None
        self.executor.end_leftovers()
        report = self.executor.sandboxing.report()
        proof = None
        if self.identity is not None:
            at = time.time()
            proof = KeyProof(at=at, signature=self.identity.prove(self.settings.name, at))
        self.node_id = self.control.register_node(
            self.settings.name,
            self.capacity,
            self.settings.labels,
            self.node_id,
            report,
            self.identity.worker_id if self.identity else None,
            detect_capacity(),
            proof,
        )
        self._warm_said = None  # a new node's row has no warm workers
        if self.on_registered is not None:
            self.on_registered(self.node_id)
        log.info("registered as %s with %s", self.node_id, self.capacity.model_dump())
        log.info(
            "sandbox %s (%s view, jobs run as %s); limits: %s",
            report.backend,
            report.view,
            report.job_user,
            ", ".join(f"{k}: {v}" for k, v in report.limits.items()),
        )
        self.lease_seconds = self.control.lease_seconds
        self.heartbeat_every = min(self.heartbeat_every, self.lease_seconds / 3)
        if fixed:
            self._recover()
        self.reporter.start(self.node_id)
        done = threading.Event()
        beats = threading.Thread(target=self._heartbeats, args=(done,), name="heartbeat")
        beats.start()
        # Not the heartbeat's (a sandbox may be slow to start), nor a short-lived one: a
        # sandbox dies with the thread that started it (bubblewrap's --die-with-parent).
        keeper = threading.Thread(target=self._keep_warm, args=(done,), name="keep-warm")
        keeper.start()
        try:
            self._serve(stop)
        finally:
            self.draining = True
            self._beat_now.set()
            self._drain()
            self.reporter.close()
            done.set()
            self._beat_now.set()
            beats.join()
            keeper.join()
            self._say_stopped()

    def _serve(self, stop: threading.Event) -> None:
        idle_since = time.monotonic()
        self._stopping = stop
        while not stop.is_set():
            try:
                room_left = self._claim_while_fits(stop)
            except SandrunError as exc:  # the server is away: keep running, try again
                log.warning("claim failed: %s", exc)
                self.waker.wait(1.0)
                continue
            if self._busy():
                idle_since = time.monotonic()
            elif (idle := self.settings.idle_exit) is not None and (
                time.monotonic() - idle_since >= idle
            ):
                log.info("idle for %.0fs; exiting", idle)
                return
            if room_left and self.settings.long_poll:
                continue  # the claim itself waited for work
            kinds = self.waker.wait(self._wait_timeout(room_left))
            if kinds & {"cancel", "control"}:  # what its running attempts must do changed
                self._beat_now.set()

    def _wait_timeout(self, room_left: bool) -> float:
        timeout = 1.0
        if room_left:  # a full node waits for an attempt to finish, not for the clock
            upcoming = self.control.next_wakeup()
            if upcoming is not None:
                timeout = min(timeout, upcoming - time.time())
        return max(timeout, 0.0)

    def inside(self, job_id: str, attempt: int) -> Inside | None:
        """Where an exec into the attempt runs, if it runs here now."""
        with self._lock:
            running = self._running.get((job_id, attempt))
        return running.ctl.inside if running is not None else None

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    def _free(self) -> Capacity:
        with self._lock:
            specs = [r.claim.job.spec for r in self._running.values()]
        free = self.capacity
        for spec in specs:
            free = free.minus(free.share(spec))
        return free

    def _claim_while_fits(self, stop: threading.Event) -> bool:
        """Claim until nothing more fits; return whether room is left for a later job."""
        assert self.node_id is not None
        while (free := self._free()).cpus > 0 and len(self._running) < self.max_attempts:
            with self.claims.call():
                claim = self.control.claim(self.node_id, free, self.settings.long_poll)
                self.claims.received(claim)
            if claim is None:
                return True
            if stop.is_set():  # it arrived as we were told to stop: give it straight back
                self._hand_back(claim)
                return False
            self._adopt([claim])
            self._adopt(self._claim_the_rest())
        return False

    def _claim_the_rest(self) -> list[Claim]:
        """Work arrived: claim what else fits in one call (a deep queue fills the node)."""
        assert self.node_id is not None
        free, slots = self._free(), self.max_attempts - len(self._running)
        if free.cpus <= 0 or slots <= 0:
            return []
        with self.claims.call():
            reply = self.control.report(self.node_id, [], [], free, slots, uuid.uuid4().hex)
            for claim in reply.claims:
                self.claims.received(claim)
        return reply.claims

    def _hand_back(self, claim: Claim) -> None:
        """Give back, unstarted, a claim that arrived as the agent was stopping."""
        assert self.node_id is not None
        key = AttemptKey(job_id=claim.job.id, attempt=claim.attempt)
        try:
            if not self.control.hand_back(self.node_id, [key], "stopping"):
                # An older server has no hand-back: end it as lost, retried elsewhere.
                lost = AttemptResult(failure_reason=FailureReason.NODE_LOST, message="handed back")
                self.control.complete(claim.ref, self._sign(claim, lost))
        except SandrunError as exc:
            log.warning("could not hand back: %s (its lease will expire)", exc)

    def _sign(self, claim: Claim, result: AttemptResult) -> AttemptResult:
        return signed(self.identity, claim, metered(claim.job.spec, result, self.capacity))

    def _adopt(self, claims: list[Claim]) -> None:
        """Run claims a report brought (the room of attempts that just ended)."""
        for claim in claims:
            if self._stopping.is_set():  # arrived as we were stopping
                self._hand_back(claim)
                continue
            ctl = AttemptControl(news=FreezeNews(self._beat_now.set))  # said at once
            with self._lock:
                self._running[(claim.job.id, claim.attempt)] = _Running(claim, ctl)
            log.info("claimed", extra={"job": claim.job.id, "attempt": claim.attempt})
            self._pool.submit(self._run_attempt, claim, ctl)

    def _run_attempt(self, claim: Claim, ctl: AttemptControl) -> None:
        key = (claim.job.id, claim.attempt)
        fields = {"job": key[0], "attempt": key[1]}
        refilled = False
        try:
            try:
                result = self.executor.run(claim, ctl)
            except Exception as exc:  # a bug of ours must not be blamed on the job
                log.exception("attempt crashed", extra=fields)
                result = AttemptResult(failure_reason=FailureReason.INTERNAL, message=str(exc))
            if result is None:
                log.warning(
                    "stopped: the server refused the attempt as stale while it ran", extra=fields
                )
            else:
                try:
                    ended = self._report(claim, result, ctl.end_logs)
                    refilled = ended.refilled
                    log.info(f"attempt ended; job {ended.job.state}", extra=fields)
                except StaleAttempt:
                    log.warning(
                        "result refused as stale (the server gave the attempt away): %s",
                        _summary(result),
                        extra=fields,
                    )
                except SandrunError as exc:
                    log.error("could not report the result: %s", exc, extra=fields)
        finally:
            with self._changed:
                self._running.pop(key, None)
                self._changed.notify_all()
            if not refilled:
                self.waker.wake("finished")  # room for the claim loop

    def _report(self, claim: Claim, result: AttemptResult, logs: list[LogChunk]) -> Ended:
        """Report the end and its last `logs`; unless stopping, the same call claims jobs for
        exactly its room (not more: the claim loop may be claiming the rest meanwhile)."""
        result = uploaded(self.control, result, lambda r: self._sign(claim, r))
        stopping = self._stopping.is_set() or self.draining
        room = None if stopping else self.capacity.share(claim.job.spec)
        return self.reporter.ended(claim.ref, result, room, logs)

    # --- heartbeats -------------------------------------------------------------------

    def _heartbeats(self, done: threading.Event) -> None:
        while not done.is_set():
            self._beat_now.wait(self.heartbeat_every)
            self._beat_now.clear()
            self._heartbeat()
            # Failed attempts' scratch, once kept long enough: checked a few times per term.
            self.executor.sweep(every=min(60.0, self.settings.run.keep_failed / 4))

    def _keep_warm(self, done: threading.Event) -> None:
        """Start the warm workers `min_workers` keep, once per heartbeat term."""
        while self.executor.workers is not None and not done.wait(self.heartbeat_every):
            self.executor.workers.keep_warm()

    def _heartbeat(self) -> None:
        assert self.node_id is not None
        with self._lock:
            running = dict(self._running)
        state: NodeState = "draining" if self.draining else "active"
        warm = self.executor.workers.report() if self.executor.workers else None
        told = warm if warm != self._warm_said else None  # only what changed
        news = {key: r.ctl.news.take() for key, r in running.items()}
        leases = [r.claim.ref for r in running.values()]
        try:
            reply = self.control.heartbeat(self.node_id, leases, state, told, *said(news))
            self._warm_said = warm
        except SandrunError as exc:
            log.warning("heartbeat failed: %s", exc)
            for key, r in running.items():
                r.ctl.news.untake(news[key])
            self._stop_expired(running)
            return
        try:  # what a server's reaper does; embedded, this agent does it
            self.control.expire_leases()
            self.control.preempt()
        except SandrunError as exc:
            log.warning("lease or preemption pass failed: %s", exc)
        now = time.monotonic()
        stale, cancel = {k.key for k in reply.stale}, {k.key for k in reply.cancel}
        paused = {k.key for k in reply.paused}
        asks = {(a.job_id, a.attempt): a.at for a in reply.checkpoint}
        preempts = {(a.job_id, a.attempt): a.at for a in reply.preempt}
        for key, r in running.items():
            if key in stale:
                r.ctl.lost.set()
            else:
                r.renewed = now
            if key in cancel:
                r.ctl.cancel.set()
            (r.ctl.pause.set if key in paused else r.ctl.pause.clear)()
            r.ctl.checkpoint_at = asks.get(key, r.ctl.checkpoint_at)
            r.ctl.preempt_at = preempts.get(key, r.ctl.preempt_at)
        give_back_unreceived(self.control, self.claims, self.node_id, reply.unheld)

    def _stop_expired(self, running: dict[tuple[str, int], _Running]) -> None:
        """Kill attempts whose lease ran out unrenewed: the server has given them away."""
        horizon = time.monotonic() - self.lease_seconds
        for (job_id, number), r in running.items():
            if r.renewed < horizon and not r.ctl.lost.is_set():
                log.warning(
                    "lease ran out while cut off; stopping the attempt",
                    extra={"job": job_id, "attempt": number},
                )
                r.ctl.lost.set()

    # --- start and stop ---------------------------------------------------------------

    def _recover(self) -> None:
        """This node restarted: its old attempts are dead (kill leftovers) and retried."""
        assert self.node_id is not None
        for attempt in self.control.live_attempts(self.node_id):
            if attempt.pid is not None:
                kill_if_same(attempt.pid, attempt.pid_started_at)
        lost = self.control.lose_node(self.node_id)
        if lost:
            log.info("recovered %d attempt(s) of a previous run as node_lost", len(lost))

    def _say_stopped(self) -> None:
        assert self.node_id is not None
        try:
            self.control.heartbeat(self.node_id, [], "stopped")
        except SandrunError as exc:
            log.warning("could not report the stop: %s", exc)

    def _drain(self) -> None:
        """Let running attempts finish; after `drain_grace` seconds hand the rest back."""
        if self.settings.drain_grace is not None:
            deadline = time.monotonic() + self.settings.drain_grace
            with self._changed:
                while self._running and (left := deadline - time.monotonic()) > 0:
                    self._changed.wait(left)
                for r in self._running.values():
                    r.ctl.handback.set()
        self._pool.shutdown(wait=True)
        if self.executor.workers is not None:
            self.executor.workers.close()  # the idle ones now, the busy ones as they end
