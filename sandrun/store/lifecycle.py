"""A running job's life past start and cancel (docs/lifecycle.md): pause and resume,
checkpoints, and the record of execs into it.

Pausing is a request the store records at once (the job's state is `paused`); the job's
agent learns it with its next heartbeat, freezes the attempt and says so (`frozen`), and
thaws it when the job is resumed. The attempt holds its slot meanwhile.

A checkpoint is what an attempt saved when it exited 85: kept per job (the newest
`checkpoint.keep`), and `jobs.checkpoint` is always the newest, which the job's next
attempt starts from. A checkpoint request is a time: an attempt running then is asked."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from sandrun.errors import IllegalTransition, JobNotFoundError, NoCheckpoint
from sandrun.models import Checkpoint, JobRecord, OutputFile
from sandrun.states import JobState, check_job_transition
from sandrun.store.database import Database, Row, Tx
from sandrun.store.rows import job_from
from sandrun.store.transitions import event, must

# What a heartbeat says of an attempt's freezer: ("frozen" | "thawed", job, attempt).
Frozen = tuple[str, str, int]


class LifecycleStore:
    db: Database

    def set_paused(self, job_id: str, paused: bool, now: float) -> JobRecord:
        """Pause a running job, or resume a paused one; anything else (twice, say) is
        refused, as Slurm's suspend and Docker's pause refuse it."""
        want = JobState.PAUSED if paused else JobState.RUNNING
        with self.db.transaction() as tx:
            row = must(tx, job_id, lock=True)
            job = job_from(row)
            _check_pausable(job, want)
            check_job_transition(job.state, want)
            attempt = tx.one("attempt_node_name", job_id=job_id, number=job.attempts)
            asked = row["preempt_requested_at"]
            if paused and asked is not None and attempt and asked > (attempt["started_at"] or 0):
                raise IllegalTransition(
                    f"job {job_id} is being preempted (stopped to make room for a job of "
                    "higher priority); it cannot be paused now",
                    field="job_id",
                )
            message = _holding(job, attempt) if paused else None
            tx.run("set_paused", id=job_id, state=want.value, message=message, now=now)
            kind, said = ("paused", f"paused; {message}") if paused else ("resumed", "resumed")
            event(tx, job_id, job.attempts, kind, said, now)
            tx.notify("control")
            return job_from(must(tx, job_id))

    def request_checkpoint(self, job_id: str, now: float) -> JobRecord:
        """Ask the running job's agent to signal it to checkpoint (with its next heartbeat)."""
        with self.db.transaction() as tx:
            job = job_from(must(tx, job_id, lock=True))
            if job.state is not JobState.RUNNING:
                hint = "resume it first" if job.state is JobState.PAUSED else "it is not running"
                raise IllegalTransition(
                    f"job {job_id} is {job.state}; only a running job can checkpoint ({hint})",
                    field="job_id",
                )
            tx.run("request_checkpoint", id=job_id, now=now)
            signal = job.spec.checkpoint.signal
            event(tx, job_id, job.attempts, "checkpoint_requested", f"asked with {signal}", now)
            tx.notify("control")
            return job_from(must(tx, job_id))

    def begin_exec(
        self, job_id: str, by: str, argv: list[str], tty: bool, now: float
    ) -> tuple[str, int]:
        """Record that `by` runs `argv` inside the running job (an event, as every exec
        is); the node and attempt it runs in. A job not running (paused: frozen) has
        nothing to run it in."""
        with self.db.transaction() as tx:
            job = job_from(must(tx, job_id))
            attempt = tx.one("attempt_node_name", job_id=job_id, number=job.attempts)
            if job.state is not JobState.RUNNING or attempt is None or attempt["node"] is None:
                hint = {
                    JobState.PAUSED: "resume it first: its processes are frozen",
                    JobState.RUNNING: "it is starting; try again in a moment",
                }.get(job.state, "an exec runs inside a running job")
                raise IllegalTransition(f"job {job_id} is {job.state} ({hint})", field="job_id")
            if attempt["state"] != "running":
                raise IllegalTransition(
                    f"job {job_id} is starting (attempt {job.attempts} is {attempt['state']}); "
                    "try again in a moment",
                    field="job_id",
                )
            said = f"{by} ran {shlex.join(argv)}" + (" in a terminal" if tty else "")
            data = {"argv": argv, "tty": tty, "by": by}
            event(tx, job_id, job.attempts, "exec", said, now, data)
            return str(attempt["node"]), job.attempts

    def end_exec(self, job_id: str, attempt: int, argv: list[str], code: int, now: float) -> None:
        with self.db.transaction() as tx:
            said = f"{shlex.join(argv[:1])} exited with code {code}"
            event(tx, job_id, attempt, "exec_ended", said, now, {"exit_code": code})

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        with self.db.transaction(write=False) as tx:
            must(tx, job_id)
            return [Checkpoint(**r) for r in tx.all("list_checkpoints", job_id=job_id)]


def keep_checkpoint(tx: Tx, job: JobRecord, number: int, saved: OutputFile, now: float) -> None:
    """Keep what attempt `number` saved; its next attempt starts from it. The oldest go,
    past `checkpoint.keep` (their blobs once nothing else holds them: retention)."""
    values = {"digest": saved.digest, "size": saved.size}
    tx.run("insert_checkpoint", job_id=job.id, attempt=number, now=now, **values)
    tx.run("set_checkpoint", id=job.id, digest=saved.digest)
    tx.run("prune_checkpoints", job_id=job.id, keep=job.spec.checkpoint.keep)
    said = f"attempt {number} saved a checkpoint ({saved.size} bytes)"
    event(tx, job.id, number, "checkpointed", said, now, values)


def start_from(tx: Tx, job: JobRecord, source_id: str, now: float) -> None:
    """A new job's first attempt starts from `source_id`'s newest checkpoint (its owner's
    job: another owner's is no job at all), kept as its attempt 0."""
    row = tx.one("get_job", id=source_id)
    if row is None or row["owner"] != job.owner:
        raise JobNotFoundError(f"restore_from: no job has id {source_id!r}", field="restore_from")
    if row["checkpoint"] is None:
        raise NoCheckpoint(
            f"job {source_id} has no checkpoint to restore from (yet)",
            field="restore_from",
            suggestions=["`sandrun checkpoints JOB_ID` lists a job's checkpoints"],
        )
    source = tx.all("list_checkpoints", job_id=source_id)[-1]  # the newest
    values = {"digest": source["digest"], "size": source["size"]}
    tx.run("insert_checkpoint", job_id=job.id, attempt=0, now=now, **values)
    tx.run("set_checkpoint", id=job.id, digest=source["digest"])
    said = f"starts from job {source_id}'s checkpoint of attempt {source['attempt']}"
    event(tx, job.id, None, "restoring", said, now, {"from": source_id, **values})


def record_freezes(tx: Tx, node: str, said: Sequence[Frozen], now: float) -> None:
    """Events for the attempts `node` froze or thawed (it says each change once)."""
    for kind, job_id, number in said:
        row = tx.one("attempt_node_name", job_id=job_id, number=number)
        if row is None or row["node"] != node or row["state"] != "running":
            continue  # not an attempt it runs (a confused or lying agent): nothing to say
        where = f"on {row['name']}"
        text = f"its processes are frozen {where}" if kind == "frozen" else f"thawed {where}"
        event(tx, job_id, number, kind, text, now)


def _check_pausable(job: JobRecord, want: JobState) -> None:
    if want is JobState.RUNNING and job.state is not JobState.PAUSED:
        raise IllegalTransition(
            f"job {job.id} is {job.state}, not paused; there is nothing to resume",
            field="job_id",
        )
    if want is JobState.PAUSED and job.state is JobState.PAUSED:
        raise IllegalTransition(
            f"job {job.id} is paused already", field="job_id", suggestions=["sandrun resume"]
        )
    if want is JobState.PAUSED and job.state is not JobState.RUNNING:
        hint = (
            "it has not started yet: cancel it, or hold it with a later `not_before`"
            if not job.state.is_terminal
            else "it has ended"
        )
        raise IllegalTransition(
            f"job {job.id} is {job.state}; only a running job can be paused ({hint})",
            field="job_id",
        )


def _holding(job: JobRecord, attempt: Row | None) -> str:
    """What the paused job keeps: its slot on its node (`attempt`'s), said in its status."""
    node = attempt["name"] if attempt is not None and attempt["name"] else "its node"
    spec = job.spec
    size = f"{spec.cpus:g} CPU" + ("s" if spec.cpus != 1 else "")
    if spec.memory is not None:
        size += f", {spec.memory} MB"
    if spec.gpus is not None and spec.gpus.count:
        size += f", {spec.gpus.count} GPU" + ("s" if spec.gpus.count > 1 else "")
    return f"its slot on {node} ({size}) stays held until it is resumed or cancelled"
