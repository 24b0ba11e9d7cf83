"""A running job's life past start and cancel: pause and resume (docs/lifecycle.md).

Pausing is a request the store records at once (the job's state is `paused`); the job's
agent learns it with its next heartbeat, freezes the attempt and says so (`frozen`), and
thaws it when the job is resumed. The attempt holds its slot meanwhile."""

from __future__ import annotations

from collections.abc import Sequence

from sandrun.errors import IllegalTransition
from sandrun.models import JobRecord
from sandrun.states import JobState, check_job_transition
from sandrun.store.database import Database, Tx
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
            job = job_from(must(tx, job_id, lock=True))
            _check_pausable(job, want)
            check_job_transition(job.state, want)
            message = _holding(tx, job) if paused else None
            tx.run("set_paused", id=job_id, state=want.value, message=message, now=now)
            kind, said = ("paused", f"paused; {message}") if paused else ("resumed", "resumed")
            event(tx, job_id, job.attempts, kind, said, now)
            tx.notify("control")
            return job_from(must(tx, job_id))


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


def _holding(tx: Tx, job: JobRecord) -> str:
    """What the paused job keeps: its slot on its node, said in its status."""
    row = tx.one("attempt_node_name", job_id=job.id, number=job.attempts)
    node = row["name"] if row is not None and row["name"] else "its node"
    spec = job.spec
    size = f"{spec.cpus:g} CPU" + ("s" if spec.cpus != 1 else "")
    if spec.memory is not None:
        size += f", {spec.memory} MB"
    if spec.gpus is not None and spec.gpus.count:
        size += f", {spec.gpus.count} GPU" + ("s" if spec.gpus.count > 1 else "")
    return f"its slot on {node} ({size}) stays held until it is resumed or cancelled"
