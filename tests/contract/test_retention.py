"""Retention on every backend: old terminal jobs' logs, job records, blob references."""

from __future__ import annotations

from sandrun.models import AttemptResult, Capacity, LogChunk, OutputFile
from sandrun.service.retry import decide
from sandrun.states import JobState
from sandrun.store import Store, retention
from tests.contract.test_store import add, claim

DIGEST_A, DIGEST_B = "a" * 64, "b" * 64


def finished(store: Store, at: float, digest: str | None = None) -> str:
    """A job that ran at `at`, logged a line, maybe kept an output, and completed."""
    job = add(store, at=at)
    c = claim(store, now=at)
    store.start_attempt(job.id, c.attempt, c.token, at)
    store.append_logs(
        job.id, 1, c.token, [LogChunk(attempt=1, seq=1, stream="stdout", data=b"hi\n", at=at)], at
    )
    outputs = [OutputFile(attempt=1, path="out.bin", digest=digest, size=3)] if digest else []
    result = AttemptResult(exit_code=0, outputs=outputs)
    store.finish_attempt(job.id, 1, c.token, result, decide, at)
    return job.id


def test_old_terminal_logs_go_and_everything_else_stays(store: Store) -> None:
    old = [finished(store, at=100.0 + i) for i in range(7)]
    recent = finished(store, at=5000.0)
    running = add(store, at=90.0)
    c = claim(store, now=95.0)
    store.append_logs(
        running.id,
        1,
        c.token,
        [LogChunk(attempt=1, seq=1, stream="stdout", data=b"x", at=95.0)],
        95.0,
    )

    assert retention.remove_logs(store.db, cutoff=1000.0, now=6000.0, batch=3) == 7
    for job_id in old:
        assert store.logs(job_id) == []
        assert store.get_job(job_id).state is JobState.COMPLETED
        assert store.events(job_id)[-1].kind == "logs_removed"
    assert [chunk.data for chunk in store.logs(recent)] == [b"hi\n"]
    assert [chunk.data for chunk in store.logs(running.id)] == [b"x"]
    assert retention.remove_logs(store.db, cutoff=1000.0, now=6000.0) == 0


def test_purging_removes_old_terminal_jobs_whole(store: Store) -> None:
    old = [finished(store, at=100.0 + i) for i in range(5)]
    recent = finished(store, at=5000.0)
    pending = add(store, at=50.0)

    assert retention.purge_jobs(store.db, cutoff=1000.0, batch=2) == 5
    listed = {job.id for job in store.list_jobs()}
    assert listed == {recent, pending.id}
    assert not listed & set(old)


def test_a_digest_is_referenced_while_an_output_names_it(store: Store) -> None:
    finished(store, at=100.0, digest=DIGEST_A)
    assert retention.unreferenced(store.db, [DIGEST_A, DIGEST_B]) == [DIGEST_B]
    retention.purge_jobs(store.db, cutoff=1000.0)
    assert retention.unreferenced(store.db, [DIGEST_A, DIGEST_B]) == [DIGEST_A, DIGEST_B]


def test_a_checkpoint_s_blob_is_referenced_while_a_job_keeps_it(store: Store) -> None:
    """A checkpoint an attempt saved, and one a job was started from, hold their blobs;
    once the job keeping it is purged, nothing does."""
    job = add(store, at=100.0)
    c = claim(store, now=100.0)
    store.start_attempt(job.id, c.attempt, c.token, 100.0)
    saved = OutputFile(attempt=1, path=".sandrun-checkpoint", digest=DIGEST_B, size=9)
    result = AttemptResult(exit_code=85, failure_reason="checkpointed", checkpoint=saved)
    assert store.finish_attempt(job.id, 1, c.token, result, decide, 100.0).state is (
        JobState.PENDING  # queued again, to resume from it
    )
    assert store.get_job(job.id).checkpoint == DIGEST_B
    assert retention.unreferenced(store.db, [DIGEST_B]) == []
    store.request_cancel(job.id, 101.0)
    assert retention.purge_jobs(store.db, cutoff=1000.0) == 1
    assert retention.unreferenced(store.db, [DIGEST_B]) == [DIGEST_B]


def test_agents_long_gone_are_forgotten_unless_something_runs_there(store: Store) -> None:
    free = Capacity(cpus=4, memory_mb=4096)
    store.register_node("gone", "gone", free, {}, now=100.0)
    store.register_node("node-a", "busy", free, {}, now=100.0)  # claim() runs on node-a
    store.register_node("fresh", "fresh", free, {}, now=5000.0)
    add(store, at=100.0)
    claim(store, now=100.0)

    assert retention.remove_nodes(store.db, cutoff=1000.0, batch=1) == 1
    assert sorted(n.id for n in store.nodes()) == ["fresh", "node-a"]
