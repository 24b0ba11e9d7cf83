"""A remote agent: the same Agent, talking to a sandrun server over HTTP.

Lease reaping and recovery are the server's; this control plane only reports. Writes
that matter (start, logs, completion) retry through a server restart; a 409 means the
attempt lost its job and surfaces as StaleAttempt.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from pydantic import BaseModel, TypeAdapter

from sandrun.agent import presigned
from sandrun.agent.settings import LONG_POLL
from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import AgentError, SandrunError
from sandrun.httpjson import HttpJson
from sandrun.models import (
    INLINE_BLOB,
    Attempt,
    AttemptKey,
    AttemptRef,
    AttemptResult,
    Capacity,
    Claim,
    ErrorBody,
    InlineBlob,
    JobRecord,
    LogChunk,
    OutputFile,
    SandboxReport,
    WarmReport,
)
from sandrun.protocol import (
    INLINE_BLOBS,
    MAX_REPORTS,
    ClaimRequest,
    CompleteAndClaimReply,
    CompleteAndClaimRequest,
    CompleteRequest,
    EndOutcome,
    HandBackReason,
    HandBackRequest,
    HeartbeatReply,
    HeartbeatRequest,
    KeyProof,
    LogsRequest,
    NodeState,
    Outcome,
    RegisterReply,
    RegisterRequest,
    ReportReply,
    ReportRequest,
    StartRequest,
    Uploaded,
    UploadsReply,
    UploadsRequest,
)

log = logging.getLogger("sandrun.agent")

REPORT_RETRY = 600.0  # how long a result is retried while the server is away


class HttpControlPlane:
    def __init__(
        self,
        url: str,
        token: str | None,
        artifacts: LocalArtifactStore,
        long_poll: float = LONG_POLL,
    ) -> None:
        self.api = HttpJson(url, token, read_timeout=long_poll + 30)
        self.artifacts = artifacts
        self.store_http = presigned.client()  # blobs to and from the server's object store
        self.lease_seconds = 30.0
        self.features: set[str] = set()  # what the server offers, told at registration

    def _post(
        self, path: str, body: BaseModel, retry_for: float = 0.0, timeout: float | None = None
    ) -> object:
        # No call may hang much past a lease, or a stuck server could stall a lease check.
        limit = timeout if timeout is not None else max(self.lease_seconds / 2, 1.0)
        response = self.api.request(
            "POST", path, json=body.model_dump(mode="json"), retry_for=retry_for, timeout=limit
        )
        return response.json() if response.status_code == 200 else None

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
    ) -> str:
        if node_id is not None:  # only an embedded agent keeps its node id across runs
            raise AgentError("a server names its nodes: register a remote agent by name only")
        body = RegisterRequest(
            name=name,
            capacity=capacity,
            labels=labels or {},
            sandbox=sandbox,
            public_key=public_key,
            key_proof=key_proof,
            detected=detected,
        )
        reply = RegisterReply.model_validate(
            self._post("/v1/agent/register", body, retry_for=REPORT_RETRY)
        )
        self.lease_seconds = reply.lease_seconds
        self.features = set(reply.features)
        return reply.node_id

    def claim(self, node: str, free: Capacity, wait: float = 0.0) -> Claim | None:
        body = ClaimRequest(node=node, free=free, wait=wait)
        data = self._post("/v1/agent/claim", body, timeout=wait + self.lease_seconds)
        return self._keep_inputs(Claim.model_validate(data)) if data is not None else None

    def _keep_inputs(self, claim: Claim) -> Claim:
        """Put the inputs a claim brings in this agent's store (its cache of them)."""
        for blob in claim.blobs:
            self.artifacts.put_bytes(blob.data)  # stored by its own digest: a lie is unused
        return claim.model_copy(update={"blobs": []})

    def start(
        self,
        ref: AttemptRef,
        pid: int | None = None,
        pid_started_at: float | None = None,
        git_commit: str | None = None,
    ) -> None:
        body = StartRequest(ref=ref, pid=pid, pid_started_at=pid_started_at, git_commit=git_commit)
        # Retried through an outage (the job runs meanwhile); a 409 means the attempt lost
        # its job, and the reporter has it stopped.
        self._post("/v1/agent/start", body, retry_for=REPORT_RETRY)

    def fetch_artifact(self, digest: str) -> None:
        """Download a job's input once: the local store is this agent's cache."""
        if self.artifacts.has(digest):
            return
        response = self.api.request(
            "GET", f"/v1/agent/artifacts/{digest}", retry_for=REPORT_RETRY, timeout=300.0
        )
        if response.is_redirect:  # a presigned URL of the server's object store
            got = presigned.download(self.store_http, response.headers["location"], self.artifacts)
        else:
            got, _ = self.artifacts.put_bytes(response.content)
        if got != digest:
            raise AgentError(f"the server sent other bytes for artifact {digest}")

    def heartbeat(
        self,
        node: str,
        leases: list[AttemptRef],
        state: NodeState = "active",
        warm: WarmReport | None = None,
        frozen: Sequence[AttemptKey] = (),
        thawed: Sequence[AttemptKey] = (),
    ) -> HeartbeatReply:
        body = HeartbeatRequest(
            node=node,
            leases=leases,
            state=state,
            warm=warm,
            frozen=list(frozen),
            thawed=list(thawed),
        )
        # Well under a lease, so a hung server cannot stall the agent's own lease check.
        timeout = max(self.lease_seconds / 4, 0.2)
        return HeartbeatReply.model_validate(
            self._post("/v1/agent/heartbeat", body, timeout=timeout)
        )

    def hand_back(
        self, node: str, attempts: list[AttemptKey], reason: HandBackReason
    ) -> list[AttemptKey]:
        # One try: an attempt not given back waits out its lease instead.
        if "hand-back" not in self.features:  # an older server: nothing is given back
            return []
        body = HandBackRequest(node=node, attempts=attempts, reason=reason)
        data = self._post("/v1/agent/hand-back", body)
        return TypeAdapter(list[AttemptKey]).validate_python(data)

    def append_logs(self, ref: AttemptRef, chunks: list[LogChunk]) -> None:
        # One try: the log sink keeps what could not be sent and tries again later,
        # without holding up the job's supervision.
        self._post("/v1/agent/logs", LogsRequest(ref=ref, chunks=chunks))

    def complete(self, ref: AttemptRef, result: AttemptResult) -> JobRecord:
        self.upload_outputs(result)
        body = CompleteRequest(ref=ref, result=result)
        return JobRecord.model_validate(self._post("/v1/agent/complete", body, REPORT_RETRY))

    def complete_and_claim(
        self, ref: AttemptRef, result: AttemptResult, node: str, free: Capacity
    ) -> tuple[JobRecord, Claim | None]:
        if "complete-and-claim" not in self.features:  # an older server
            return self.complete(ref, result), None
        self.upload_outputs(result)
        body = CompleteAndClaimRequest(ref=ref, result=result, node=node, free=free)
        data = self._post("/v1/agent/complete-and-claim", body, REPORT_RETRY)
        reply = CompleteAndClaimReply.model_validate(data)
        return reply.job, self._keep_inputs(reply.next) if reply.next else None

    def report(
        self,
        node: str,
        starts: Sequence[StartRequest],
        ends: Sequence[CompleteRequest],
        room: Capacity | None = None,
        max_claims: int = 0,
        claim_key: str | None = None,
    ) -> ReportReply:
        if "end-logs" not in self.features:  # an older server: the logs go first
            ends = [self._logs_sent(e) for e in ends]
        if "report" not in self.features:  # an older server: one call each
            return self._report_one_by_one(node, starts, ends, room, max_claims)
        if "inline-outputs" in self.features:  # small outputs ride with their ends
            ends = [e.model_copy(update={"blobs": self._inline(e.result)}) for e in ends]
        body = ReportRequest(
            node=node,
            starts=list(starts),
            ends=list(ends),
            room=room,
            max_claims=max_claims,
            claim_key=claim_key,
        )
        # Results that matter: retried through a server restart, as `complete` is; a retry
        # is the same body, so its claim_key gets back the claims a lost reply carried.
        # This thread checks no lease: a busy server gets a whole lease to answer.
        data = self._post("/v1/agent/report", body, REPORT_RETRY, timeout=self.lease_seconds)
        reply = ReportReply.model_validate(data)
        reply.claims = [self._keep_inputs(claim) for claim in reply.claims]
        return reply

    def _logs_sent(self, end: CompleteRequest) -> CompleteRequest:
        """The end without its logs, sent on their own (a refusal is the end's to say)."""
        if end.logs:
            with contextlib.suppress(SandrunError):
                self.append_logs(end.ref, end.logs)
        return end.model_copy(update={"logs": []})

    def _report_one_by_one(
        self,
        node: str,
        starts: Sequence[StartRequest],
        ends: Sequence[CompleteRequest],
        room: Capacity | None,
        max_claims: int,
    ) -> ReportReply:
        reply = ReportReply()
        for s in starts:
            try:
                self.start(s.ref, s.pid, s.pid_started_at, s.git_commit)
                reply.starts.append(Outcome())
            except SandrunError as exc:
                reply.starts.append(Outcome(error=ErrorBody.of(exc)))
        for e in ends:
            try:
                reply.ends.append(EndOutcome(job=self.complete(e.ref, e.result)))
            except SandrunError as exc:
                reply.ends.append(EndOutcome(error=ErrorBody.of(exc)))
        if room is not None and max_claims > 0 and (claim := self.claim(node, room)):
            reply.claims.append(claim)
        return reply

    def _inlined(self, result: AttemptResult) -> list[OutputFile]:
        """The outputs that go with the result's end (`report`), not uploaded alone."""
        if not {"inline-outputs", "report"} <= set(self.features):
            return []
        return [out for out in result.outputs if out.size <= INLINE_BLOB][:INLINE_BLOBS]

    def _inline(self, result: AttemptResult) -> list[InlineBlob]:
        return [
            InlineBlob(digest=out.digest, data=self.artifacts.read_bytes(out.digest))
            for out in self._inlined(result)
        ]

    def _upload_presigned(self, outputs: list[OutputFile]) -> None:
        """PUT each output the store lacks to the URL the server signed for its bytes."""
        unique = {out.digest: Uploaded(digest=out.digest, size=out.size) for out in outputs}
        blobs = list(unique.values())
        for start in range(0, len(blobs), MAX_REPORTS):
            body = UploadsRequest(blobs=blobs[start : start + MAX_REPORTS])
            reply = UploadsReply.model_validate(
                self._post("/v1/agent/uploads", body, REPORT_RETRY, timeout=self.lease_seconds)
            )
            for target in reply.uploads:
                if target.url is None:
                    continue  # the store has these bytes
                path = self.artifacts.path(target.digest)
                presigned.upload(self.store_http, target.url, path, target.headers)

    def upload_outputs(self, result: AttemptResult) -> None:
        """Its outputs' blobs (those not going inline with its end), and its checkpoint's."""
        inlined = {out.digest for out in self._inlined(result)}
        saved = [result.checkpoint] if result.checkpoint else []
        files = [o for o in [*result.outputs, *saved] if o.digest not in inlined]
        if "presigned-uploads" in self.features:
            self._upload_presigned(files)
            return
        for out in files:
            response = self.api.request(
                "POST",
                "/v1/agent/artifacts",
                content=self.artifacts.read_bytes(out.digest),
                headers={"Content-Type": "application/octet-stream"},
                retry_for=REPORT_RETRY,
            )
            if Uploaded.model_validate_json(response.content).digest != out.digest:
                raise AgentError(f"output {out.path} changed while it was uploaded")

    # The server reaps leases and knows no previous life of this node: nothing to do here.
    def expire_leases(self) -> list[tuple[str, int]]:
        return []

    def preempt(self) -> list[str]:
        return []

    def lose_node(self, node: str) -> list[tuple[str, int]]:
        return []

    def live_attempts(self, node: str) -> list[Attempt]:
        return []

    def next_wakeup(self) -> float | None:
        return None
