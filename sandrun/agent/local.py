"""The embedded mode's local agent: one background process per $SANDRUN_HOME.

Started on demand by `sandrun.embedded.ensure_agent` (`python -m sandrun.agent.local`),
it holds the home's lock while it lives and exits after it has been idle a while.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO

from sandrun.agent.agent import Agent
from sandrun.agent.capacity import detect_capacity
from sandrun.agent.logfields import log_to_stderr
from sandrun.agent.sandbox import KINDS, FsView, Kind, open_sandboxing
from sandrun.agent.sandbox.runtime import JobDefaults
from sandrun.agent.settings import AgentSettings, RunSettings
from sandrun.agent.wake import Waker, address
from sandrun.agent.workers.pool import IDLE as WARM_IDLE
from sandrun.artifacts import LocalArtifactStore
from sandrun.embedded import open_service
from sandrun.errors import AgentError, AgentRunning
from sandrun.home import Home
from sandrun.service.service import DEFAULT_LEASE_SECONDS
from sandrun.signing import Identity

log = logging.getLogger("sandrun.agent")

LOCAL_NODE = "local"
DEFAULT_IDLE_EXIT = 300.0


def _sudo_user() -> int | None:
    """The user who ran sudo, whose code this is: embedded jobs run as them, not root."""
    uid = os.environ.get("SUDO_UID", "")
    return int(uid) if uid.isdigit() and int(uid) != 0 else None


def _lock_within(handle: IO[str], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


class LocalAgent:
    """This home's agent, holding the home's lock for as long as it lives."""

    def __init__(
        self,
        home: Home,
        idle_exit: float | None,
        kill_grace: float = 5.0,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        sandbox: Kind = "auto",
    ) -> None:
        home.root.mkdir(parents=True, exist_ok=True)
        # The user's own code, run like sbatch in their directory: the `host` view. Checked
        # before taking the lock, so a client sees an agent that cannot sandbox never start.
        view = FsView("host", hidden=(home.root,))
        # A job that names no memory may use what the machine has, and no more.
        defaults = JobDefaults(memory_mb=detect_capacity().memory_mb)
        sandboxing = open_sandboxing(
            sandbox,
            view,
            job_uids=False,
            scratch=home.root,
            run_as=_sudo_user(),
            defaults=defaults,
            owner=home.root,
        )
        if os.geteuid() == 0 and sandboxing.uids is None:
            log.warning(
                "jobs run as root (no sudo user to run them as): without capabilities and "
                "with /proc/sys read-only they cannot change the kernel, but they can read "
                "what root can read in the host view and write their working directory"
            )
        self._lock = open(home.agent_lock, "a+")
        if not _lock_within(self._lock, seconds=0.5):  # a client's probe holds it briefly
            self._lock.close()
            raise AgentRunning(f"a local agent already serves {home.root}")
        self._lock.truncate(0)
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()
        self._stop = threading.Event()
        self.service = open_service(home, lease_seconds)
        self.waker = Waker(address(home.root))
        settings = AgentSettings(
            name=LOCAL_NODE,
            lease_seconds=lease_seconds,
            heartbeat_every=lease_seconds / 6,  # a lease survives several missed beats
            idle_exit=idle_exit,
            run=_run_settings(kill_grace),
        )
        self.agent = Agent(
            self.service,
            LocalArtifactStore(home.artifacts),  # the service's own store: one directory
            self.waker,
            settings,
            runs_dir=home.runs,
            identity=Identity.load_or_create(home.root / "identity.key"),
            node_id=LOCAL_NODE,
            sandboxing=sandboxing,
        )

    def run(self) -> None:
        """Serve until `stop()` (running attempts finish first) or until idle_exit passes."""
        try:
            self.agent.run(self._stop)
        finally:
            self.waker.close()
            self.service.close()
            self._lock.close()

    def stop(self) -> None:
        self._stop.set()
        self.waker.wake("stop")


def _run_settings(kill_grace: float) -> RunSettings:
    """The jobs are this user's own, and may run in this user's directories."""
    warm_idle = float(os.environ.get("SANDRUN_WARM_IDLE", WARM_IDLE))
    return RunSettings(
        kill_grace=kill_grace,
        allow_local_repos=True,
        host_paths=True,
        warm_idle=warm_idle,
        exec_records=True,
    )


def serve(
    home: Home, idle_exit: float | None, kill_grace: float = 5.0, sandbox: str | None = None
) -> int:
    """Run the local agent in this process until SIGTERM/SIGINT or idle. Returns exit code.

    The sandbox is `sandbox`, else $SANDRUN_SANDBOX, else the best that works here.
    """
    kind = sandbox or os.environ.get("SANDRUN_SANDBOX") or "auto"
    if kind not in KINDS:
        print(f"sandbox {kind!r} is not known; use one of {', '.join(KINDS)}", file=sys.stderr)
        return 2
    try:
        local = LocalAgent(home, idle_exit, kill_grace, sandbox=kind)
    except AgentRunning as exc:
        print(exc.message, file=sys.stderr)
        return 0
    except AgentError as exc:
        print(exc.message, file=sys.stderr)
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        local.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    local.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandrun.agent.local")
    parser.add_argument("--home", type=Path)
    parser.add_argument(
        "--idle-exit",
        type=float,
        default=float(os.environ.get("SANDRUN_IDLE_EXIT", DEFAULT_IDLE_EXIT)),
    )
    parser.add_argument(
        "--kill-grace", type=float, default=float(os.environ.get("SANDRUN_KILL_GRACE", 5.0))
    )
    args = parser.parse_args(argv)
    log_to_stderr()
    idle = args.idle_exit if args.idle_exit > 0 else None
    return serve(Home.resolve(args.home), idle, args.kill_grace)


if __name__ == "__main__":
    sys.exit(main())
