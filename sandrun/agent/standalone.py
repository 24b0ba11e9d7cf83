"""A remote agent's process: its control plane, sandbox, agent and exec channel, built
from its settings and run until SIGTERM or SIGINT (`sandrun agent`)."""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from types import FrameType

from sandrun.agent.agent import Agent
from sandrun.agent.capacity import detect_capacity
from sandrun.agent.channel import ExecChannel
from sandrun.agent.remote import HttpControlPlane
from sandrun.agent.sandbox import FsView, Sandboxing, open_sandboxing
from sandrun.agent.sandbox.runtime import JobDefaults
from sandrun.agent.settings import AgentSettings, SandboxSettings
from sandrun.agent.wake import Waker
from sandrun.artifacts import LocalArtifactStore
from sandrun.models import Capacity
from sandrun.signing import Identity

log = logging.getLogger("sandrun.agent")


def run_remote_agent(
    url: str,
    token: str | None,
    work_dir: Path,
    settings: AgentSettings,
    sandbox: SandboxSettings,
) -> int:
    """Serve `url` until SIGTERM/SIGINT, then drain. Returns an exit status."""
    work_dir.mkdir(parents=True, exist_ok=True)
    capacity = settings.capacity or detect_capacity()
    settings = replace(settings, capacity=capacity)
    artifacts = LocalArtifactStore(work_dir / "artifacts")
    control = HttpControlPlane(url, token, artifacts, settings.long_poll)
    waker = Waker(f"\0sandrun-agent-{uuid.uuid4().hex}")
    agent = Agent(
        control,
        artifacts,
        waker,
        settings,
        runs_dir=work_dir / "runs",
        identity=Identity.load_or_create(work_dir / "identity.key"),
        sandboxing=_sandboxing(work_dir, sandbox, capacity),
    )
    channel = ExecChannel(url, token, agent.inside)
    agent.on_registered = channel.start
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("stopping: draining (grace %.0fs)", settings.drain_grace or 0)
        stop.set()
        waker.wake("stop")

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.run(stop)
    finally:
        channel.close()
        waker.close()
        control.api.close()
    return 0


def _sandboxing(work_dir: Path, sandbox: SandboxSettings, capacity: Capacity) -> Sandboxing:
    """Other people's code: the `system` view, and each attempt its own uid when root."""
    secret = tuple(p.absolute() for p in (work_dir, *sandbox.hidden))
    read_only = tuple(p.absolute() for p in sandbox.read_only)
    view = FsView("system", read_only=read_only, hidden=secret)
    # A job that names no memory gets the operator's default, else all the node offers.
    defaults = JobDefaults(sandbox.job_memory_mb or capacity.memory_mb, sandbox.job_disk_mb)
    return open_sandboxing(
        sandbox.kind, view, job_uids=True, scratch=work_dir, defaults=defaults, owner=work_dir
    )
