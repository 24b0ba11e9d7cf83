"""Embedded mode: the service over SQLite in the caller's process, and a local agent.

Jobs must outlive the process that submits them (`sandrun submit` returns at once), so
the local agent (`sandrun.agent.local`) runs as a small background process per
$SANDRUN_HOME, started on demand and exiting after it has been idle a while. A file lock
makes it one per home; a wake-up datagram tells it about new work the moment a submit
commits. This module is the client's side only, so reading a job loads no agent.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

from sandrun.agent.wake import address, notify
from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import AgentError, ValidationError
from sandrun.home import Home
from sandrun.service import Service
from sandrun.service.secretbox import SecretBox
from sandrun.service.service import DEFAULT_LEASE_SECONDS
from sandrun.store import open_sqlite

AGENT_START_WAIT = 15.0  # seconds a client waits for the agent it started to take its lock


def open_service(home: Home, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Service:
    """The service over this home's SQLite store; submits and cancels wake its agent."""
    sync = os.environ.get("SANDRUN_SQLITE_SYNC", "normal")
    service = Service(
        open_sqlite(home.db, synchronous=sync),
        LocalArtifactStore(home.artifacts),
        lease_seconds=lease_seconds,
        host_paths=True,  # the user and the node are one: `sandrun run` runs in place
        secret_box=SecretBox(key_file=home.root / "secrets.key"),
    )
    addr = address(home.root)

    def wake_agent(kind: str) -> None:
        # Only news the agent cannot see itself: its own log writes and ends need no wake-up.
        if kind in ("submitted", "cancel", "control"):
            notify(addr, kind)

    service.on_change(wake_agent)
    return service


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
    from sandrun.agent.sandbox.runtime import KINDS  # only when starting one: it is heavy

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
            ["setsid", "-f", sys.executable, "-m", "sandrun.agent.local", "--home", str(home.root)],
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
