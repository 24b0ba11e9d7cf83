"""Embedded mode: the service over SQLite in the caller's process, and a local agent.

Jobs must outlive the process that submits them (`sandrun submit` returns at once), so
the local agent runs as a small background process per $SANDRUN_HOME, started on demand
and exiting after it has been idle a while. A file lock makes it one per home; a wake-up
datagram tells it about new work the moment a submit commits.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO

from sandrun.agent import Agent, Waker, address, detect_capacity, notify
from sandrun.agent.logfields import log_to_stderr
from sandrun.agent.sandbox import KINDS, FsView, Kind, open_sandboxing
from sandrun.agent.sandbox.runtime import JobDefaults
from sandrun.agent.settings import AgentSettings, RunSettings
from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import AgentError, AgentRunning, ValidationError
from sandrun.home import Home
from sandrun.service import Service
from sandrun.service.service import DEFAULT_LEASE_SECONDS
from sandrun.signing import Identity
from sandrun.store import open_sqlite

log = logging.getLogger("sandrun.agent")

LOCAL_NODE = "local"
DEFAULT_IDLE_EXIT = 300.0
AGENT_START_WAIT = 15.0  # seconds a client waits for the agent it started to take its lock


def open_service(home: Home, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Service:
    """The service over this home's SQLite store; submits and cancels wake its agent."""
    sync = os.environ.get("SANDRUN_SQLITE_SYNC", "normal")
    service = Service(
        open_sqlite(home.db, synchronous=sync),
        LocalArtifactStore(home.artifacts),
        lease_seconds=lease_seconds,
        host_paths=True,  # the user and the node are one: `sandrun run` runs in place
    )
    addr = address(home.root)

    def wake_agent(kind: str) -> None:
        # Only news the agent cannot see itself: its own log writes and ends need no wake-up.
        if kind in ("submitted", "cancel"):
            notify(addr, kind)

    service.on_change(wake_agent)
    return service


def _sudo_user() -> int | None:
    """The user who ran sudo, whose code this is: embedded jobs run as them, not root."""
    uid = os.environ.get("SUDO_UID", "")
    return int(uid) if uid.isdigit() and int(uid) != 0 else None


def agent_running(home: Home) -> bool:
    """Whether a local agent holds this home's lock."""
    if not home.agent_lock.exists():
        return False
    with open(home.agent_lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def ensure_agent(home: Home) -> None:
    """Start this home's local agent in the background unless one is running."""
    if agent_running(home):
        return
    kind = os.environ.get("SANDRUN_SANDBOX")
    if kind and kind not in KINDS:
        raise ValidationError(
            f"SANDRUN_SANDBOX={kind!r} is not a sandbox",
            field="SANDRUN_SANDBOX",
            suggestions=[f"use one of {', '.join(KINDS)}"],
        )
    home.root.mkdir(parents=True, exist_ok=True)
    # `setsid -f` forks the agent off and exits: the agent is nobody's child here, so a
    # long-lived caller never collects a zombie when it idles out.
    with open(home.agent_log, "ab") as log_file:
        subprocess.run(
            ["setsid", "-f", sys.executable, "-m", "sandrun.embedded", "--home", str(home.root)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            close_fds=True,
            check=True,
        )
    # Jobs would wait forever on an agent that failed to start: say why instead.
    deadline = time.monotonic() + AGENT_START_WAIT
    while not agent_running(home):
        if time.monotonic() >= deadline:
            log = home.agent_log.read_text(errors="replace") if home.agent_log.exists() else ""
            tail = [line for line in log.splitlines() if line.strip()][-3:]
            raise AgentError(
                f"the local agent did not start within {AGENT_START_WAIT:g}s: "
                + (" | ".join(tail) or "no log"),
                suggestions=[f"see {home.agent_log}", "check SANDRUN_SANDBOX"],
            )
        time.sleep(0.02)


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
            # The jobs are this user's own, and may run in this user's directories.
            run=RunSettings(kill_grace=kill_grace, allow_local_repos=True, host_paths=True),
        )
        self.agent = Agent(
            self.service,
            self.service.artifacts,
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
    parser = argparse.ArgumentParser(prog="python -m sandrun.embedded")
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
