"""Test helpers: waiting on a condition with a deadline (never a bare sleep), processes,
git repositories, a local agent on a thread."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil

from sandrun.agent.local import LocalAgent
from sandrun.home import Home

T = TypeVar("T")


def processes_with(text: str) -> list[psutil.Process]:
    """This machine's processes whose command line holds `text`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if text in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def wait_for(check: Callable[[], T], *, timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def make_git_repo(root: Path) -> tuple[str, dict[str, str]]:
    """A git repository at `root` with tags v1 and v2 (main at v2), each holding a
    version.txt and a run.sh; returns its file:// URL and each tag's commit."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    root.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "main")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    commits = {}
    for tag in ("v1", "v2"):
        (root / "version.txt").write_text(tag + "\n")
        (root / "run.sh").write_text('echo "running $(cat version.txt) $*"\n')
        git("add", ".")
        git("commit", "-q", "-m", tag)
        git("tag", tag)
        commits[tag] = git("rev-parse", "HEAD")
    return f"file://{root}", commits


@contextlib.contextmanager
def local_agent(home: Home) -> Iterator[LocalAgent]:
    """The real local agent of `home`, on a thread of this process, until the block ends."""
    agent = LocalAgent(home, idle_exit=None, kill_grace=0.5)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        agent.stop()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the agent did not drain"
