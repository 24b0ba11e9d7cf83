"""What an agent needs from the control plane.

The embedded runner passes the Service itself; a remote agent passes an HTTP client with
the same methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sandrun.models import (
    Attempt,
    AttemptKey,
    AttemptRef,
    AttemptResult,
    Capacity,
    Claim,
    JobRecord,
    LogChunk,
    SandboxReport,
    WarmReport,
)
from sandrun.protocol import (
    CompleteRequest,
    HandBackReason,
    HeartbeatReply,
    KeyProof,
    NodeState,
    ReportReply,
    StartRequest,
)


class ControlPlane(Protocol):
    lease_seconds: float  # known once the node is registered

    def register_node(
        self,
        name: str,
        capacity: Capacity,
        labels: dict[str, str] | None = None,
        node_id: str | None = None,
        sandbox: SandboxReport | None = None,
        public_key: str | None = None,
        detected: Capacity | None = None,
        key_proof: KeyProof | None = None,
    ) -> str: ...

    def claim(self, node: str, free: Capacity, wait: float = 0.0) -> Claim | None:
        """The best job that fits `free`, or None; a remote control plane may hold the
        request up to `wait` seconds for one to arrive (a long-poll)."""
        ...

    def start(
        self,
        ref: AttemptRef,
        pid: int | None = None,
        pid_started_at: float | None = None,
        git_commit: str | None = None,
    ) -> None: ...

    def fetch_artifact(self, digest: str) -> None:
        """Make sure the agent's artifact store holds `digest` (a job's input)."""
        ...

    def heartbeat(
        self,
        node: str,
        leases: list[AttemptRef],
        state: NodeState = "active",
        warm: WarmReport | None = None,
        frozen: Sequence[AttemptKey] = (),
        thawed: Sequence[AttemptKey] = (),
    ) -> HeartbeatReply:
        """Renew leases; say which attempts the agent froze and thawed since its last
        heartbeat; learn which to cancel, keep frozen, or stop (stale)."""
        ...

    def hand_back(
        self, node: str, attempts: list[AttemptKey], reason: HandBackReason
    ) -> list[AttemptKey]:
        """Give back attempts `node` holds but never started (queued again, not counted)."""
        ...

    def append_logs(self, ref: AttemptRef, chunks: list[LogChunk]) -> None: ...

    def complete(self, ref: AttemptRef, result: AttemptResult) -> JobRecord: ...

    def complete_and_claim(
        self, ref: AttemptRef, result: AttemptResult, node: str, free: Capacity
    ) -> tuple[JobRecord, Claim | None]:
        """`complete`, then a claim for what fits `free` (the room the attempt leaves)."""
        ...

    def report(
        self,
        node: str,
        starts: Sequence[StartRequest],
        ends: Sequence[CompleteRequest],
        room: Capacity | None = None,
        max_claims: int = 0,
        claim_key: str | None = None,
    ) -> ReportReply:
        """Starts and ends at once, each taken or refused alone; then claims for `room`
        (sent again with the same `claim_key`: the same claims). Ends' outputs must be
        uploaded first (`upload_outputs`)."""
        ...

    def upload_outputs(self, result: AttemptResult) -> None: ...

    def expire_leases(self) -> list[tuple[str, int]]: ...

    def preempt(self) -> list[str]:
        """One preemption pass (embedded: the agent runs the pool; a server runs its own)."""
        ...

    def lose_node(self, node: str) -> list[tuple[str, int]]: ...

    def live_attempts(self, node: str) -> list[Attempt]: ...

    def next_wakeup(self) -> float | None: ...
