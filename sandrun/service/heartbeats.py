"""A heartbeat as the store takes it, and the reply its node acts on."""

from __future__ import annotations

from sandrun.models import AttemptKey, AttemptRef
from sandrun.protocol import CheckpointAsk, HeartbeatReply, HeartbeatRequest
from sandrun.states import AttemptState
from sandrun.store.attempts import Beat, Seen


def beat_of(beat: HeartbeatRequest) -> Beat:
    leases = [(r.job_id, r.attempt, r.token) for r in beat.leases]
    warm = beat.warm.model_dump_json() if beat.warm is not None else None
    freezes = [("frozen", k.job_id, k.attempt) for k in beat.frozen]
    freezes += [("thawed", k.job_id, k.attempt) for k in beat.thawed]
    return Beat(beat.node, beat.state, leases, warm, freezes)


def reply_to(seen: Seen, leases: list[AttemptRef]) -> HeartbeatReply:
    """Which of its attempts a node should cancel, keep frozen, ask for a checkpoint or stop
    to make room (preempt), which it holds no longer, and which the server gave it that it
    did not list (claims it may never have received)."""
    listed = {(r.job_id, r.attempt) for r in leases}
    return HeartbeatReply(
        cancel=[
            AttemptKey(job_id=h.job_id, attempt=h.number) for h in seen.live if h.cancel_requested
        ],
        paused=[AttemptKey(job_id=h.job_id, attempt=h.number) for h in seen.live if h.paused],
        checkpoint=[
            CheckpointAsk(job_id=h.job_id, attempt=h.number, at=h.checkpoint_at)
            for h in seen.live
            if h.checkpoint_at is not None
        ],
        preempt=[
            CheckpointAsk(job_id=h.job_id, attempt=h.number, at=h.preempt_at)
            for h in seen.live
            if h.preempt_at is not None
        ],
        stale=[AttemptKey(job_id=j, attempt=n) for j, n in seen.stale],
        unheld=[
            AttemptKey(job_id=h.job_id, attempt=h.number)
            for h in seen.live
            if h.state == AttemptState.SCHEDULED and (h.job_id, h.number) not in listed
        ],
    )
