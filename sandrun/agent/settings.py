"""An agent's settings, built once (by `sandrun agent`, or the embedded runner) and passed
down whole: the loop's (`AgentSettings`), the attempts' (`RunSettings`, the Executor's)
and, for a remote agent, the sandbox's (`SandboxSettings`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sandrun.agent.sandbox.runtime import DEFAULT_DISK_MB, Kind
from sandrun.agent.workers.pool import IDLE as WARM_IDLE
from sandrun.models import Capacity

MAX_ATTEMPTS = 256  # at once on one node, however small their CPU share
KEEP_FAILED = 3600.0  # seconds a failed attempt's scratch stays on disk, to look into
LONG_POLL = 5.0  # seconds a claim may wait at the server (also how soon SIGTERM is seen)


@dataclass(frozen=True)
class RunSettings:
    """How this node runs attempts."""

    kill_grace: float = 5.0  # seconds between SIGTERM and SIGKILL
    allow_local_repos: bool = False  # check out file:// and local-path repositories
    # Whether a job may name a directory of this node (working_dir). A server refuses
    # such specs at submit unless it allows them too.
    host_paths: bool = False
    keep_failed: float = KEEP_FAILED
    warm_idle: float = WARM_IDLE  # seconds an idle warm function worker is kept; 0: none
    # Write where an exec enters each running attempt, for the user's own `sandrun exec`
    # in another process (embedded); a remote agent's execs come down its channel.
    exec_records: bool = False


@dataclass(frozen=True)
class AgentSettings:
    """How the agent's loop claims, heartbeats and stops."""

    name: str = "local"
    labels: dict[str, str] = field(default_factory=dict)
    capacity: Capacity | None = None  # what it offers; None: what the machine has
    max_attempts: int = MAX_ATTEMPTS
    lease_seconds: float = 30.0  # until registration tells the server's
    heartbeat_every: float = 5.0  # at most a third of the lease, whatever is asked
    long_poll: float = 0.0  # seconds a claim may wait at the server
    idle_exit: float | None = None  # exit after this long with nothing to do
    drain_grace: float | None = None  # on stop, seconds running attempts get to finish
    run: RunSettings = RunSettings()


@dataclass(frozen=True)
class SandboxSettings:
    """A remote agent's sandbox: what jobs see, and the limits of a job that names none."""

    kind: Kind = "auto"
    read_only: tuple[Path, ...] = ()  # more host paths jobs see, read-only
    hidden: tuple[Path, ...] = ()  # paths jobs never see (besides the work dir)
    job_memory_mb: int | None = None  # None: all the memory the agent offers
    job_disk_mb: int = DEFAULT_DISK_MB
