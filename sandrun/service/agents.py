"""What agents call: register, claim, start, heartbeat, hand back, logs, completion, and
the lease bookkeeping behind them. Part of `Service` (a mixin over the same store)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sandrun.artifacts import ArtifactStore
from sandrun.errors import (
    ArtifactStoreUnavailable,
    BadKeyProof,
    Forbidden,
    OutputNotUploaded,
    SandrunError,
    StoreError,
    ValidationError,
)
from sandrun.ids import new_id
from sandrun.models import (
    Attempt,
    AttemptKey,
    AttemptRef,
    AttemptResult,
    Capacity,
    Claim,
    ErrorBody,
    JobRecord,
    LogChunk,
    SandboxReport,
    WarmReport,
)
from sandrun.protocol import (
    CompleteRequest,
    EndOutcome,
    HandBackReason,
    HeartbeatReply,
    HeartbeatRequest,
    KeyProof,
    NodeState,
    Outcome,
    ReportReply,
    StartRequest,
)
from sandrun.service import heartbeats, outputs, retry, signatures
from sandrun.service.data import DataCalls
from sandrun.signing import PROOF_WINDOW, registration_claim, verify
from sandrun.spec.data import NODE_LABEL
from sandrun.spec.policy import Policy
from sandrun.store import Decide, Store
from sandrun.store.attempts import End, Start

log = logging.getLogger("sandrun.service")

_HAND_BACK_MESSAGES: dict[HandBackReason, str] = {
    "stopping": "handed back unstarted: node {node} is stopping",
    "not_received": "handed back unstarted: node {node} never received the claim",
}


class AgentCalls(DataCalls):
    """The agent-facing half of `Service` (a claim is equipped with its volumes and
    secrets by `DataCalls`)."""

    store: Store
    decide: Decide  # the retry policy, reading results in (service/results.py)
    artifacts: ArtifactStore
    clock: Callable[[], float]
    lease_seconds: float
    policy: Policy
    nodes_known: dict[str, tuple[str | None, dict[str, str]]]

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
        operator: str | None = None,
    ) -> str:
        """Record a node; a fixed `node_id` lets a restarted agent claim its old attempts.
        With `public_key`, every result it reports must be signed with that key: the agent
        proves it holds the key (`key_proof`), and a key belongs to the first node name
        that registered it. With `operator` (the agent token's name), only that operator
        may act as the node afterwards (`check_operator`)."""
        if public_key is not None:
            self._check_proof(name, public_key, key_proof)
        if labels and any(key.startswith("sandrun/") for key in labels):
            raise ValidationError(
                "labels under sandrun/ are sandrun's own (sandrun/node is the node's name)",
                field="labels",
            )
        labels = {**(labels or {}), NODE_LABEL: name}
        node_id = node_id or f"{name}/{new_id()}"
        self.store.register_node(
            node_id,
            name,
            capacity,
            labels,
            self.clock(),
            sandbox,
            public_key,
            detected,
            operator,
        )
        self.nodes_known.pop(node_id, None)
        return node_id

    def check_operator(self, node: str, operator: str) -> None:
        """Refuse `operator` acting as (claiming for, beating for, reporting for) a node
        another operator registered. Nodes kept without one (embedded) are anyone's."""
        known = self._node_identity(node)
        if known is None:
            return  # nothing to act on: each call answers an unknown node itself
        owner = known[0]
        if owner is not None and owner != operator:
            raise Forbidden(
                f"node {node!r} was registered by another operator's agent token",
                field="node",
                suggestions=["act only as the nodes this token registered"],
            )

    def node_identity(self, node: str) -> tuple[str | None, dict[str, str]]:
        """A node's operator (None: it has none) and labels."""
        return self._node_identity(node) or (None, {})

    def _node_identity(self, node: str) -> tuple[str | None, dict[str, str]] | None:
        if node not in self.nodes_known:
            known = self.store.node_identity(node)
            if known is None:
                return None
            if len(self.nodes_known) >= 1_000_000:  # registered nodes only: a bound, not a cap
                self.nodes_known.clear()
            self.nodes_known[node] = known
        return self.nodes_known[node]

    def _check_proof(self, name: str, public_key: str, proof: KeyProof | None) -> None:
        if proof is None:
            raise BadKeyProof(
                "registering a worker key needs proof of its private key (key_proof)",
                field="key_proof",
                suggestions=["upgrade the agent"],
            )
        if abs(proof.at - self.clock()) > PROOF_WINDOW:
            raise BadKeyProof(
                f"key_proof is from {proof.at:.0f}, not within {PROOF_WINDOW:.0f} s of the "
                "server's clock",
                field="key_proof.at",
                suggestions=["set the agent's clock (NTP)"],
            )
        if not verify(public_key, registration_claim(name, public_key, proof.at), proof.signature):
            raise BadKeyProof(
                "key_proof does not verify against public_key", field="key_proof.signature"
            )

    def node_is_live(self, node: str) -> bool:
        """Whether `node` is registered and has heartbeated within a lease."""
        return self.store.node_heartbeat_at(node) >= self.clock() - self.lease_seconds

    def live_attempts(self, node: str) -> list[Attempt]:
        return self.store.live_attempts(node)

    def claim(self, node: str, free: Capacity, wait: float = 0.0) -> Claim | None:
        """Claim at once. (`wait` is the control plane's long-poll: the server's route
        holds the request, an embedded agent is woken by a datagram instead.)"""
        claim = self.store.claim(node, free, self.clock(), self.lease_seconds, self.policy)
        return self._equipped(claim, node) if claim is not None else None

    def start(
        self,
        ref: AttemptRef,
        pid: int | None = None,
        pid_started_at: float | None = None,
        git_commit: str | None = None,
    ) -> None:
        self.store.start_attempt(
            ref.job_id, ref.attempt, ref.token, self.clock(), pid, pid_started_at, git_commit
        )

    def heartbeat(
        self,
        node: str,
        leases: list[AttemptRef],
        state: NodeState = "active",
        warm: WarmReport | None = None,
        frozen: Sequence[AttemptKey] = (),
        thawed: Sequence[AttemptKey] = (),
    ) -> HeartbeatReply:
        """Renew the node and its attempts' leases; say which to cancel, which to keep
        frozen and which are stale."""
        beat = HeartbeatRequest(
            node=node,
            leases=leases,
            state=state,
            warm=warm,
            frozen=list(frozen),
            thawed=list(thawed),
        )
        reply = self.heartbeats([(beat, None)])
        if isinstance(reply[0], SandrunError):
            raise reply[0]
        return reply[0]

    def heartbeats(
        self, beats: Sequence[tuple[HeartbeatRequest, str | None]]
    ) -> list[HeartbeatReply | SandrunError]:
        """Many nodes' heartbeats, each with the operator sending it (None: an admin or an
        embedded agent), in one transaction; each answered, or refused alone (Forbidden for
        another operator's node)."""
        refused: dict[int, SandrunError] = {}
        for i, (beat, operator) in enumerate(beats):
            try:
                if operator is not None:
                    self.check_operator(beat.node, operator)
            except SandrunError as exc:
                refused[i] = exc
        taken = [beat for i, (beat, _) in enumerate(beats) if i not in refused]
        seen = self.store.heartbeats(
            [heartbeats.beat_of(b) for b in taken], self.clock(), self.lease_seconds
        )
        replies = iter(heartbeats.reply_to(s, b.leases) for s, b in zip(seen, taken, strict=True))
        return [refused[i] if i in refused else next(replies) for i in range(len(beats))]

    def hand_back(
        self, node: str, attempts: list[AttemptKey], reason: HandBackReason
    ) -> list[AttemptKey]:
        """End the attempts `node` gives back unstarted; their jobs are queued again with no
        retry counted. Attempts not on `node`, or started, are left alone (not returned)."""
        why = _HAND_BACK_MESSAGES[reason].format(node=node)
        keys = [a.key for a in attempts]
        ended = self.store.hand_back(node, keys, why, retry.handed_back, self.clock())
        return [AttemptKey(job_id=j, attempt=n) for j, n in ended]

    def append_logs(self, ref: AttemptRef, chunks: list[LogChunk]) -> None:
        self.store.append_logs(ref.job_id, ref.attempt, ref.token, chunks, self.clock())

    def complete(self, ref: AttemptRef, result: AttemptResult) -> JobRecord:
        end = self._checked_end(ref, result)
        return self.store.finish_attempt(
            end.job_id, end.number, end.token, end.result, self.decide, self.clock(), end.worker_id
        )

    def complete_and_claim(
        self, ref: AttemptRef, result: AttemptResult, node: str, free: Capacity
    ) -> tuple[JobRecord, Claim | None]:
        """Report an attempt's end, then claim the best job that fits the room it leaves
        (`free`), so an agent refills a slot without another round trip."""
        job = self.complete(ref, result)
        try:
            return job, self.claim(node, free) if self.node_is_live(node) else None
        except SandrunError as exc:  # the result is recorded: that must not read as failed
            log.warning("claim after job %s ended failed: %s", ref.job_id, exc)
            return job, None

    def report(
        self,
        node: str,
        starts: Sequence[StartRequest],
        ends: Sequence[CompleteRequest],
        room: Capacity | None = None,
        max_claims: int = 0,
        claim_key: str | None = None,
    ) -> ReportReply:
        """Starts and ends of `node`'s attempts in one transaction (a group commit), each
        taken or refused alone; then up to `max_claims` claims that fit `room` together.
        A report sent again with the same `claim_key` gets the claims the first one made."""
        checked: list[End | SandrunError] = []
        for end in ends:
            try:
                self._store_inline(end)
                checked.append(self._checked_end(end.ref, end.result, end.logs))
            except (StoreError, ArtifactStoreUnavailable):
                raise  # a fault, not a refusal: the whole report fails and is sent again
            except SandrunError as exc:
                checked.append(exc)
        valid = [e for e in checked if isinstance(e, End)]
        begun = [Start(s.ref.job_id, s.ref.attempt, s.ref.token, *_started(s)) for s in starts]
        starts_done, ends_done = self.store.report(begun, valid, self.decide, self.clock())
        taken = iter(ends_done)
        reply = ReportReply(
            starts=[_outcome(x) for x in starts_done],
            ends=[_end_outcome(next(taken) if isinstance(e, End) else e) for e in checked],
        )
        if room is not None and max_claims > 0 and self.node_is_live(node):
            reply.claims = self._claims(node, room, max_claims, claim_key)
        return reply

    def _claims(self, node: str, room: Capacity, most: int, key: str | None) -> list[Claim]:
        if key is not None:
            made = self.store.claims_with_key(node, key, self.clock(), self.lease_seconds)
            if made:  # this call's first try made them: its reply was lost
                return [c for c in (self._equipped(c, node) for c in made) if c is not None]
        claims: list[Claim] = []
        try:
            while len(claims) < most and room.cpus > 0:
                claim = self.store.claim(
                    node, room, self.clock(), self.lease_seconds, self.policy, claim_key=key
                )
                if claim is None:
                    break
                room = room.minus(room.share(claim.job.spec))
                if (claim := self._equipped(claim, node)) is not None:
                    claims.append(claim)
        except SandrunError as exc:  # the reports are committed: that must not read as failed
            log.warning("claim after a report failed: %s", exc)
        return claims

    def upload_outputs(self, result: AttemptResult) -> None:
        """In process an agent's outputs are in this service's store already."""

    def _store_inline(self, end: CompleteRequest) -> None:
        """Store the outputs an end brings inline (each must be what its digest names)."""
        for i, blob in enumerate(end.blobs):
            if self.artifacts.put_bytes(blob.data)[0] != blob.digest:
                raise ValidationError("not the blob its digest names", field=f"blobs.{i}")

    def _checked_end(
        self, ref: AttemptRef, result: AttemptResult, logs: Sequence[LogChunk] = ()
    ) -> End:
        """The end as the store takes it, once its outputs and signature are checked."""
        for out in result.outputs:
            if not self.artifacts.has(out.digest):
                raise OutputNotUploaded(
                    f"output {out.path!r} was not uploaded (no artifact {out.digest})",
                    field="result.outputs",
                )
        if result.checkpoint and not self.artifacts.has(result.checkpoint.digest):
            raise OutputNotUploaded(
                f"the checkpoint was not uploaded (no artifact {result.checkpoint.digest})",
                field="result.checkpoint",
            )
        outputs.check_output_paths(result.outputs)
        # The key the agent registered (None: it has none, or the store refuses the report).
        signer = self.store.signer_key(ref.job_id, ref.attempt)
        job = self.store.get_job(ref.job_id) if signer is not None else None
        result = signatures.checked(signer, job, ref.attempt, result)
        return End(ref.job_id, ref.attempt, ref.token, result, signer, logs)

    def expire_leases(self, grace: float = 0.0) -> list[tuple[str, int]]:
        """End as node_lost the attempts whose agents stopped renewing their leases `grace`
        seconds ago or more (the time the server itself fell behind)."""
        return self.store.lose_attempts(self.decide, self.clock() - grace)

    def lose_node(self, node: str) -> list[tuple[str, int]]:
        """End as node_lost every live attempt of `node` (known dead: its process is gone)."""
        return self.store.lose_attempts(self.decide, self.clock(), node=node)

    def next_wakeup(self) -> float | None:
        return self.store.next_not_before(self.clock())


def _outcome(refused: SandrunError | None) -> Outcome:
    return Outcome(error=None if refused is None else ErrorBody.of(refused))


def _end_outcome(done: JobRecord | SandrunError) -> EndOutcome:
    if isinstance(done, SandrunError):
        return EndOutcome(error=ErrorBody.of(done))
    return EndOutcome(job=done)


def _started(start: StartRequest) -> tuple[int | None, float | None, str | None]:
    return start.pid, start.pid_started_at, start.git_commit
