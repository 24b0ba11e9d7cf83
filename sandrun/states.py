"""Job and attempt states, failure reasons, and the one table of allowed transitions."""

from __future__ import annotations

from enum import StrEnum

from sandrun.errors import IllegalTransition


class JobState(StrEnum):
    WAITING = "waiting"  # for the jobs it depends on (`after`, a pipeline's `needs`)
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"  # frozen on its node by `sandrun pause`: its slot stays held
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # never ran: its dependencies ended so that its condition cannot hold

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


class AttemptState(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"
    CHECKPOINTED = "checkpointed"  # it saved a checkpoint and exited 85, to be resumed
    PREEMPTED = "preempted"  # stopped for a job of higher priority, to be resumed


class FailureReason(StrEnum):
    EXIT_CODE = "exit_code"  # the process exited non-zero
    TIMEOUT = "timeout"  # it ran past spec.timeout and was killed
    OOM = "oom"  # killed for exceeding its memory limit
    PROCESS_LIMIT = "process_limit"  # failed after hitting limits.processes
    CPU_LIMIT = "cpu_limit"  # killed for using limits.cpu_time
    FILE_LIMIT = "file_limit"  # stopped writing a file past limits.file_size
    DISK_LIMIT = "disk_limit"  # filled its scratch past limits.disk (or the node's cap)
    LOG_LIMIT = "log_limit"  # stopped at limits.log_size (limits.stop_on_log_limit)
    OUTPUT_LIMIT = "output_limit"  # its outputs were larger than limits.output_size
    SIGNALED = "signaled"  # killed by a signal it did not ask for
    NODE_LOST = "node_lost"  # its agent stopped heartbeating or died
    CANCELLED = "cancelled"  # a user cancelled it
    SPAWN_ERROR = "spawn_error"  # the command could not be started (not found, not executable)
    OUTPUT_ERROR = "output_error"  # the outputs could not be collected
    INTERNAL = "internal"  # a sandrun bug or sandbox fault: never the user's
    STEP_ERROR = "step_error"  # a waiting job could not be made (a template, a missing output)
    ITEMS_FAILED = "items_failed"  # a fan-out step's item failed (`on_item_failure: fail`)
    NO_CONSENSUS = "no_consensus"  # its replicas could not agree (`consensus`)
    VOLUME_FULL = "volume_full"  # it wrote a volume past the volume's size
    DATA_ERROR = "data_error"  # a data mount could not be fetched or unpacked
    ENVIRONMENT_ERROR = "environment_error"  # its environment could not be built
    CHECKPOINTED = "checkpointed"  # it saved a checkpoint and exited 85: resumed, not retried
    PREEMPTED = "preempted"  # stopped for a job of higher priority: resumed, not retried


TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED})

# The one table: which job states may follow which.
JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # waiting -> completed: a cached step, or a fan-out whose items ended; -> failed: a step
    # that could not be made, or a fan-out whose item failed.
    JobState.WAITING: frozenset(
        {
            JobState.PENDING,
            JobState.SKIPPED,
            JobState.CANCELLED,
            JobState.COMPLETED,
            JobState.FAILED,
        }
    ),
    JobState.PENDING: frozenset({JobState.SCHEDULED, JobState.CANCELLED}),
    # scheduled -> pending: the attempt was lost before it started and is retried.
    JobState.SCHEDULED: frozenset(
        {JobState.RUNNING, JobState.PENDING, JobState.FAILED, JobState.CANCELLED}
    ),
    # running -> pending: the attempt failed and the retry policy asks for another.
    JobState.RUNNING: frozenset(
        {
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.PENDING,
            JobState.PAUSED,
        }
    ),
    # paused: its attempt still holds the job (it may end before its agent froze it, or
    # be lost with its node and retried).
    JobState.PAUSED: frozenset(
        {
            JobState.RUNNING,
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.PENDING,
        }
    ),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.SKIPPED: frozenset(),
}

ATTEMPT_TRANSITIONS: dict[AttemptState, frozenset[AttemptState]] = {
    AttemptState.SCHEDULED: frozenset(
        {AttemptState.RUNNING, AttemptState.FAILED, AttemptState.CANCELLED, AttemptState.LOST}
    ),
    AttemptState.RUNNING: frozenset(
        {
            AttemptState.COMPLETED,
            AttemptState.FAILED,
            AttemptState.CANCELLED,
            AttemptState.LOST,
            AttemptState.CHECKPOINTED,
            AttemptState.PREEMPTED,
        }
    ),
    AttemptState.COMPLETED: frozenset(),
    AttemptState.FAILED: frozenset(),
    AttemptState.CANCELLED: frozenset(),
    AttemptState.LOST: frozenset(),
    AttemptState.CHECKPOINTED: frozenset(),
    AttemptState.PREEMPTED: frozenset(),
}


def check_job_transition(old: JobState, new: JobState) -> None:
    """Raise IllegalTransition unless the table allows `old -> new`."""
    if new not in JOB_TRANSITIONS[old]:
        raise IllegalTransition(f"a job cannot go from {old} to {new}")


def check_attempt_transition(old: AttemptState, new: AttemptState) -> None:
    if new not in ATTEMPT_TRANSITIONS[old]:
        raise IllegalTransition(f"an attempt cannot go from {old} to {new}")
