"""The policies a job spec holds: retries, limits, checkpoints, and how warm workers are
kept."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, StrictBool

from sandrun.spec.base import Strict
from sandrun.spec.fields import Duration, MemoryMB, unique
from sandrun.spec.units import Int, Num


class RetryOn(StrEnum):
    EXIT_CODE = "exit_code"
    TIMEOUT = "timeout"
    OOM = "oom"
    NODE_LOST = "node_lost"


class RetryPolicy(Strict):
    """`limit` retries after the first attempt, waiting backoff * factor**(n-1), capped."""

    limit: Int = Field(default=0, ge=0, le=100)
    backoff: Duration = 1.0
    factor: Num = Field(default=2.0, ge=1.0, le=10.0)
    max_backoff: Duration = 60.0
    on: Annotated[frozenset[RetryOn], BeforeValidator(unique)] = frozenset(
        {RetryOn.EXIT_CODE, RetryOn.TIMEOUT, RetryOn.NODE_LOST}
    )
    no_retry_exit_codes: Annotated[frozenset[Int], BeforeValidator(unique)] = frozenset()

    @property
    def max_attempts(self) -> int:
        return self.limit + 1

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1-based)."""
        return float(min(self.backoff * self.factor ** (retry_number - 1), self.max_backoff))


class Limits(Strict):
    """What one attempt may use beyond `memory` and `timeout`; the agent enforces them."""

    processes: Int = Field(default=4096, ge=1, le=1_000_000)  # tasks: threads count too
    cpu_time: Duration | None = None  # CPU seconds, per process (RLIMIT_CPU)
    file_size: MemoryMB | None = None  # the largest file the job may write
    disk: MemoryMB | None = None  # its scratch directory, at most (the node may cap it lower)
    log_size: MemoryMB = 64  # stdout and stderr together; past it, output is dropped
    stop_on_log_limit: StrictBool = False  # ...or the job is stopped
    output_size: MemoryMB = 10 * 1024  # all collected outputs together


# The exit code that says "saved in $SANDRUN_CHECKPOINT_DIR: requeue me" (HTCondor's).
CHECKPOINT_EXIT = 85

CheckpointSignal = Literal[
    "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGXCPU"
]


MAX_CHECKPOINT_GRACE = 3600.0  # `checkpoint.grace` a job gets at most (a longer one is cut)


class CheckpointPolicy(Strict):
    """How a job is asked to checkpoint (`sandrun checkpoint`, or before it is preempted):
    `signal`, after which it has `grace` seconds (at most MAX_CHECKPOINT_GRACE) to save
    into $SANDRUN_CHECKPOINT_DIR and exit with CHECKPOINT_EXIT; the last `keep` are kept."""

    signal: CheckpointSignal = "SIGUSR1"
    grace: Duration = 30.0
    keep: Int = Field(default=3, ge=1, le=100)

    @property
    def grace_seconds(self) -> float:
        return min(self.grace, MAX_CHECKPOINT_GRACE)


MAX_WARM_WORKERS = 8  # `warm.min_workers`, at most: each is a sandbox held on the node
MAX_WARM_IDLE = 3600.0  # `warm.idle_timeout` an agent keeps at most (it caps a longer one)


class WarmPolicy(Strict):
    """How an agent keeps warm workers for a function's calls (`@app.function(min_workers=,
    idle_timeout=)`): `min_workers` started ahead and kept on a node that runs a call, until
    no call has come for `idle_timeout` seconds (the agent's `--warm-idle` if unset; at
    most `MAX_WARM_IDLE`)."""

    min_workers: Int = Field(default=0, ge=0, le=MAX_WARM_WORKERS)
    idle_timeout: Duration | None = None
