"""What every Store backend must do: the queue rules, fencing, and the audit trail."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import Forbidden, IllegalTransition, JobNotFoundError, StaleAttempt
from sandrun.models import (
    AttemptResult,
    Capacity,
    Claim,
    LogChunk,
    OutputFile,
    WarmGroup,
    WarmReport,
)
from sandrun.protocol import HeartbeatReply, HeartbeatRequest
from sandrun.service import Service
from sandrun.service.retry import decide
from sandrun.states import AttemptState, FailureReason, JobState
from sandrun.store import Store
from sandrun.store.attempts import Beat
from tests.contract.queued import add

BIG = Capacity(cpus=64, memory_mb=1 << 20, gpus=8)
LEASE = 30.0


def claim(store: Store, now: float = 200.0, free: Capacity = BIG) -> Claim:
    got = store.claim("node-a", free, now, LEASE)
    assert got is not None
    return got


def started(store: Store, now: float = 200.0) -> Claim:
    c = claim(store, now)
    store.start_attempt(c.job.id, c.attempt, c.token, now)
    return c


def test_an_inserted_job_reads_back_whole(store: Store) -> None:
    job = add(store, name="x", env={"A": "1"}, labels={"team": "ml"}, timeout="1h")
    got = store.get_job(job.id)
    assert got == job
    assert [e.kind for e in store.events(job.id)] == ["submitted"]


def test_unknown_ids_are_refused(store: Store) -> None:
    with pytest.raises(JobNotFoundError):
        store.get_job("nope")
    with pytest.raises(JobNotFoundError):
        store.events("nope")


def test_list_is_newest_first_filtered_and_paged(store: Store) -> None:
    jobs = [add(store, at=100.0 + i, name=f"n{i % 2}", labels={"k": str(i % 3)}) for i in range(7)]
    newest_first = [j.id for j in reversed(jobs)]
    assert [j.id for j in store.list_jobs()] == newest_first
    assert [j.id for j in store.list_jobs(name="n0")] == [j.id for j in reversed(jobs[::2])]
    assert {j.id for j in store.list_jobs(label=("k", "1"))} == {jobs[1].id, jobs[4].id}
    first = store.list_jobs(limit=3)
    rest = store.list_jobs(limit=10, before=(first[-1].created_at, first[-1].id))
    assert [j.id for j in first + rest] == newest_first
    claim(store)
    assert [j.id for j in store.list_jobs(state=JobState.SCHEDULED)] == [jobs[0].id]


def test_claim_takes_priority_then_age(store: Store) -> None:
    old = add(store, at=100.0)
    add(store, at=101.0)
    urgent = add(store, at=102.0, priority="high")
    assert claim(store).job.id == urgent.id
    assert claim(store).job.id == old.id


def test_claim_only_takes_what_fits(store: Store) -> None:
    add(store, at=100.0, cpus=4)
    small = add(store, at=101.0, cpus=1, memory="1GB")
    assert store.claim("n", Capacity(cpus=2, memory_mb=512), 200.0, LEASE) is None
    got = store.claim("n", Capacity(cpus=2, memory_mb=2048), 200.0, LEASE)
    assert got is not None and got.job.id == small.id


def test_claim_waits_for_not_before(store: Store) -> None:
    add(store, at=500.0)
    assert store.claim("n", BIG, 499.0, LEASE) is None
    assert store.next_not_before(499.0) == 500.0
    assert store.next_not_before(500.0) is None  # eligible now: nothing to wake up for
    assert store.claim("n", BIG, 500.0, LEASE) is not None


def test_each_job_is_claimed_exactly_once_under_contention(store: Store) -> None:
    ids = {add(store, at=100.0 + i).id for i in range(120)}
    claimed: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while (got := store.claim(f"n{threading.get_ident()}", BIG, 300.0, LEASE)) is not None:
            with lock:
                claimed.append(got.job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)


def test_a_full_attempt_is_recorded(store: Store) -> None:
    job = add(store)
    c = claim(store)
    store.start_attempt(job.id, c.attempt, c.token, 201.0, pid=42, pid_started_at=1.5)
    assert store.get_job(job.id).state is JobState.RUNNING
    store.append_logs(
        job.id,
        c.attempt,
        c.token,
        [
            LogChunk(attempt=1, seq=1, stream="stdout", data=b"a", at=202.0),
            LogChunk(attempt=1, seq=2, stream="stderr", data=b"b", at=202.0),
        ],
        202.0,
    )
    result = AttemptResult(
        exit_code=0, outputs=[OutputFile(attempt=1, path="m.pt", digest="d" * 64, size=3)]
    )
    done = store.finish_attempt(job.id, c.attempt, c.token, result, decide, 203.0)
    assert (done.state, done.exit_code, done.finished_at) == (JobState.COMPLETED, 0, 203.0)
    [attempt] = store.attempts(job.id)
    assert (attempt.state, attempt.pid, attempt.started_at) == (AttemptState.COMPLETED, 42, 201.0)
    assert [(c.stream, c.data) for c in store.logs(job.id)] == [("stdout", b"a"), ("stderr", b"b")]
    assert [o.path for o in store.outputs(job.id)] == ["m.pt"]
    kinds = [e.kind for e in store.events(job.id)]
    assert kinds == ["submitted", "scheduled", "started", "attempt_completed", "completed"]


def test_a_retried_log_upload_is_not_doubled(store: Store) -> None:
    job = add(store)
    c = claim(store)
    chunk = LogChunk(attempt=1, seq=1, stream="stdout", data=b"once", at=1.0)
    store.append_logs(job.id, 1, c.token, [chunk], 1.0)
    store.append_logs(job.id, 1, c.token, [chunk], 1.0)
    assert [c.data for c in store.logs(job.id)] == [b"once"]


def test_logs_page_by_cursor_across_attempts(store: Store) -> None:
    job = add(store, retries=1, **{})
    for attempt in (1, 2):
        c = claim(store, now=300.0 * attempt)
        store.append_logs(
            job.id,
            attempt,
            c.token,
            [
                LogChunk(
                    attempt=attempt, seq=s, stream="stdout", data=f"{attempt}.{s}".encode(), at=1.0
                )
                for s in (1, 2)
            ],
            1.0,
        )
        store.finish_attempt(
            job.id, attempt, c.token, AttemptResult(exit_code=1), decide, 300.0 * attempt
        )
    everything = [c.data for c in store.logs(job.id)]
    assert everything == [b"1.1", b"1.2", b"2.1", b"2.2"]
    assert [c.data for c in store.logs(job.id, after=(1, 2))] == [b"2.1", b"2.2"]
    assert [c.data for c in store.logs(job.id, attempt=1)] == [b"1.1", b"1.2"]


def test_a_failed_attempt_is_retried_with_backoff(store: Store) -> None:
    job = add(store, retries={"limit": 1, "backoff": 5})
    c = claim(store)
    after = store.finish_attempt(job.id, 1, c.token, AttemptResult(exit_code=3), decide, 210.0)
    assert (after.state, after.not_before, after.retries_used) == (JobState.PENDING, 215.0, 1)
    assert store.claim("n", BIG, 214.0, LEASE) is None
    c2 = claim(store, now=215.0)
    assert c2.attempt == 2
    final = store.finish_attempt(job.id, 2, c2.token, AttemptResult(exit_code=3), decide, 216.0)
    assert (final.state, final.exit_code, final.failure_reason) == (
        JobState.FAILED,
        3,
        FailureReason.EXIT_CODE,
    )
    assert [a.state for a in store.attempts(job.id)] == [AttemptState.FAILED] * 2


def test_a_stale_attempt_is_refused_and_the_refusal_recorded(store: Store) -> None:
    job = add(store)
    old = claim(store)
    assert store.lose_attempts(decide, now=200.0 + LEASE + 1) == [(job.id, 1)]
    new = started(store, now=300.0)
    for report in (
        lambda: store.start_attempt(job.id, 1, old.token, 301.0),
        lambda: store.append_logs(
            job.id,
            1,
            old.token,
            [LogChunk(attempt=1, seq=1, stream="stdout", data=b"late", at=1.0)],
            301.0,
        ),
        lambda: store.finish_attempt(
            job.id, 1, old.token, AttemptResult(exit_code=0), decide, 301.0
        ),
        lambda: store.finish_attempt(
            job.id, 2, "forged", AttemptResult(exit_code=0), decide, 301.0
        ),
    ):
        with pytest.raises(StaleAttempt):
            report()
    assert store.logs(job.id) == []
    assert store.get_job(job.id).state is JobState.RUNNING
    assert sum(e.kind == "stale_report" for e in store.events(job.id)) == 4
    done = store.finish_attempt(job.id, 2, new.token, AttemptResult(exit_code=0), decide, 302.0)
    assert done.state is JobState.COMPLETED
    beat = Beat("node-a", "active", [(job.id, 1, old.token)])
    assert store.heartbeats([beat], 303.0, LEASE)[0].stale == [(job.id, 1)]


def test_lost_attempts_retry_without_using_retries(store: Store) -> None:
    job = add(store)
    claim(store)
    store.lose_attempts(decide, now=1000.0, node="node-a")
    lost = store.get_job(job.id)
    assert (lost.state, lost.retries_used, lost.infra_retries) == (JobState.PENDING, 0, 1)
    assert store.attempts(job.id)[0].failure_reason is FailureReason.NODE_LOST


def test_renewed_leases_do_not_expire(store: Store) -> None:
    job = add(store)
    c = claim(store, now=200.0)
    beat = Beat("node-a", "active", [(job.id, 1, c.token)])
    assert store.heartbeats([beat], 225.0, LEASE)[0].stale == []
    assert store.lose_attempts(decide, now=240.0) == []
    assert store.lose_attempts(decide, now=256.0) == [(job.id, 1)]


def test_cancel_pending_is_immediate_and_running_is_requested(store: Store) -> None:
    pending = add(store, at=100.0)
    running = add(store, at=50.0)
    c = claim(store)
    assert c.job.id == running.id
    assert store.request_cancel(pending.id, 300.0).state is JobState.CANCELLED
    flagged = store.request_cancel(running.id, 300.0)
    assert flagged.state is JobState.SCHEDULED and flagged.cancel_requested
    (seen,) = store.heartbeats([Beat("node-a", "active", [])], 300.0, LEASE)
    assert [(h.job_id, h.number) for h in seen.live if h.cancel_requested] == [(running.id, 1)]
    done = store.finish_attempt(
        running.id, 1, c.token, AttemptResult(failure_reason=FailureReason.CANCELLED), decide, 301.0
    )
    assert done.state is JobState.CANCELLED
    with pytest.raises(IllegalTransition, match="already cancelled"):
        store.request_cancel(running.id, 302.0)


def test_a_refused_cancel_changes_nothing(store: Store) -> None:
    job = add(store)
    c = started(store)
    store.finish_attempt(job.id, 1, c.token, AttemptResult(exit_code=0), decide, 201.0)
    before = store.events(job.id)
    with pytest.raises(IllegalTransition):
        store.request_cancel(job.id, 202.0)
    assert store.events(job.id) == before
    assert store.get_job(job.id).state is JobState.COMPLETED


def test_concurrent_reapers_lose_each_attempt_once(store: Store) -> None:
    # Several servers share one database, each running a lease reaper.
    ids = {add(store, at=100.0 + i).id for i in range(60)}
    for _ in ids:
        claim(store, now=200.0)
    lost: list[tuple[str, int]] = []
    lock = threading.Lock()

    def reaper() -> None:
        found = store.lose_attempts(decide, now=1000.0)
        with lock:
            lost.extend(found)

    threads = [threading.Thread(target=reaper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(lost) == sorted((i, 1) for i in ids)
    for job_id in ids:
        job = store.get_job(job_id)
        assert (job.state, job.infra_retries) == (JobState.PENDING, 1)
        assert [a.state for a in store.attempts(job_id)] == [AttemptState.LOST]


def test_a_report_racing_the_reaper_ends_each_attempt_once(store: Store) -> None:
    claims = []
    for i in range(40):
        add(store, at=100.0 + i)
        claims.append(started(store, now=200.0))
    refused: list[str] = []

    def agent() -> None:
        for c in claims:
            try:
                store.finish_attempt(
                    c.job.id, c.attempt, c.token, AttemptResult(exit_code=0), decide, 1000.0
                )
            except StaleAttempt:
                refused.append(c.job.id)

    def reaper() -> None:
        while store.lose_attempts(decide, now=1000.0):
            pass

    threads = [threading.Thread(target=agent), threading.Thread(target=reaper)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in claims:
        (attempt,) = store.attempts(c.job.id)
        job = store.get_job(c.job.id)
        if c.job.id in refused:
            assert (attempt.state, job.state) == (AttemptState.LOST, JobState.PENDING)
        else:
            assert (attempt.state, job.state) == (AttemptState.COMPLETED, JobState.COMPLETED)


def test_many_heartbeats_are_one_write_each_answered_for_its_own_node(store: Store) -> None:
    for node in ("node-a", "node-b", "node-c"):
        store.register_node(node, node, Capacity(cpus=1, memory_mb=512), {}, 100.0)
    first = add(store, at=10.0)
    second = add(store, at=20.0)
    a = claim(store)  # node-a holds `first`
    b = store.claim("node-b", BIG, 200.0, LEASE)
    assert b is not None and b.job.id == second.id
    store.request_cancel(second.id, 210.0)
    beats = [
        Beat("node-a", "active", [(first.id, 1, a.token), ("no-such-job", 1, "x")]),
        Beat("node-b", "draining", []),
        Beat("node-c", "active", []),
    ]
    seen = store.heartbeats(beats, 220.0, LEASE)
    assert [s.stale for s in seen] == [[("no-such-job", 1)], [], []]
    assert [(h.job_id, h.cancel_requested) for h in seen[0].live] == [(first.id, False)]
    assert [(h.job_id, h.cancel_requested) for h in seen[1].live] == [(second.id, True)]
    assert seen[2].live == []
    nodes = {n.id: n for n in store.nodes()}
    assert {n: (nodes[n].heartbeat_at, nodes[n].state) for n in nodes} == {
        "node-a": (220.0, "active"),
        "node-b": (220.0, "draining"),
        "node-c": (220.0, "active"),
    }
    # node-a's lease ran from the beat: not lost at the old lease's end, lost at the new one.
    assert store.lose_attempts(decide, now=235.0) == [(second.id, 1)]
    assert store.lose_attempts(decide, now=251.0) == [(first.id, 1)]


def test_a_heartbeat_s_warm_workers_are_kept_until_a_new_report_or_registration(
    store: Store,
) -> None:
    for node in ("node-a", "node-b"):
        store.register_node(node, node, Capacity(cpus=1, memory_mb=512), {}, 100.0)
    group = WarmGroup(owner="alice", functions=["embed"], workers=2, idle=1, idle_timeout=60)
    report = WarmReport(workers=2, idle=1, groups=[group])
    beats = [Beat("node-a", "active", [], report.model_dump_json()), Beat("node-b", "active", [])]
    store.heartbeats(beats, 110.0, LEASE)
    assert {n.id: n.warm for n in store.nodes()} == {"node-a": report, "node-b": None}
    store.heartbeats([Beat("node-a", "active", [])], 120.0, LEASE)  # unchanged: not sent
    assert {n.id: n.warm for n in store.nodes()}["node-a"] == report
    store.register_node("node-a", "node-a", Capacity(cpus=1, memory_mb=512), {}, 130.0)
    assert {n.id: n.warm for n in store.nodes()}["node-a"] is None  # a new agent: none yet


def test_a_heartbeat_for_another_operators_node_is_refused_alone(
    store: Store, tmp_path: Path
) -> None:
    service = Service(store, LocalArtifactStore(tmp_path / "blobs"), lease_seconds=LEASE)
    mine = service.register_node("mine", Capacity(cpus=1, memory_mb=512), {}, operator="ops-a")
    theirs = service.register_node("theirs", Capacity(cpus=1, memory_mb=512), {}, operator="ops-b")
    replies = service.heartbeats(
        [
            (HeartbeatRequest(node=mine), "ops-a"),
            (HeartbeatRequest(node=theirs), "ops-a"),  # not ops-a's node
            (HeartbeatRequest(node=theirs, state="draining"), None),  # an admin may
        ]
    )
    assert isinstance(replies[0], HeartbeatReply)
    assert isinstance(replies[1], Forbidden) and replies[1].field == "node"
    assert isinstance(replies[2], HeartbeatReply)
    assert {n.name: n.state for n in store.nodes()} == {"mine": "active", "theirs": "draining"}


def test_the_reaper_gives_each_lease_the_time_the_server_lagged(
    store: Store, tmp_path: Path
) -> None:
    clock = [200.0]
    service = Service(
        store, LocalArtifactStore(tmp_path / "blobs"), lease_seconds=LEASE, clock=lambda: clock[0]
    )
    job = add(store)
    claim(store, now=200.0)  # its lease ends at 230
    clock[0] = 233.0
    assert service.expire_leases(grace=5.0) == []  # the server was 5 s behind: not yet
    assert service.expire_leases(grace=2.0) == [(job.id, 1)]


def test_a_job_is_preempted_a_bounded_number_of_times(store: Store) -> None:
    """Only preemptible jobs below the preemptor's priority are candidates, each until it
    has been preempted MAX_PREEMPTIONS times."""
    from sandrun.store.preemption import MAX_PREEMPTIONS

    add(store, at=100.0, preemptible=True)
    add(store, at=101.0)  # not preemptible
    victim, other = started(store), started(store)
    assert [r.job.id for r in store.running_below(priority=10)] == [victim.job.id]
    assert store.running_below(priority=0) == []  # same priority: never
    preemptor = add(store, at=102.0, priority=10)
    for n in range(MAX_PREEMPTIONS):
        below = store.running_below(priority=10)
        assert store.preempt(preemptor, "node-a", "a", below, 200.0 + n) == [victim.job.id]
    assert store.running_below(priority=10) == []
    assert store.get_job(victim.job.id).preemptions == MAX_PREEMPTIONS
    assert store.get_job(other.job.id).preemptions == 0
    kinds = [e.kind for e in store.events(preemptor.id)]
    assert "preempting" in kinds and store.reserved_node(preemptor.id) == "node-a"
