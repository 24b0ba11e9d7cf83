"""Repository jobs: a per-agent cache of git mirrors, and checkouts of exact commits.

Each URL is mirrored once and fetched before each checkout (unless the ref is a commit
the mirror already has); the job gets a clone of its own at that commit, so its working
directory is a normal git repository whose `origin` is the real URL.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from sandrun.errors import CheckoutFailed

GIT_TIMEOUT = 600.0
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
# Never prompt for credentials on the agent's terminal.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
# Network transports only: `ext::` would run a command, and a local path could name any
# repository on the agent's machine (its mirror cache of other users' repositories too).
REMOTE_PROTOCOLS = "https:http:ssh:git"


class GitCache:
    """`allow_local`: also check out file:// URLs and paths on this machine (the
    embedded agent, whose jobs are its own user's; a remote agent's operator may opt in)."""

    def __init__(self, root: Path, allow_local: bool = False) -> None:
        self.root = root
        self.allow_local = allow_local
        protocols = REMOTE_PROTOCOLS + (":file" if allow_local else "")
        self.env = {**os.environ, **_GIT_ENV, "GIT_ALLOW_PROTOCOL": protocols}

    def checkout(self, url: str, ref: str, dest: Path) -> str:
        """Clone `url` at `ref` into the empty directory `dest`; return the commit."""
        if not self.allow_local and is_local(url):
            raise CheckoutFailed(
                f"repository.url {url!r} is on the agent's own machine, and this agent "
                "checks out network repositories only (https, ssh, git)",
                field="repository.url",
                suggestions=["its operator can allow it: sandrun agent --allow-local-repos"],
            )
        self.root.mkdir(parents=True, exist_ok=True)
        mirror = self.root / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".git")
        with open(mirror.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one fetch per mirror at a time
            if not mirror.is_dir():
                partial = mirror.with_suffix(".partial")
                shutil.rmtree(partial, ignore_errors=True)
                self._git(["clone", "--mirror", "--quiet", "--", url, str(partial)], url)
                partial.rename(mirror)
            elif not (_COMMIT_RE.match(ref) and self._resolve(mirror, ref)):
                self._git(["-C", str(mirror), "fetch", "--prune", "--quiet", "origin"], url)
            commit = self._resolve(mirror, ref)
            if commit is None:
                raise CheckoutFailed(
                    f"repository.ref {ref!r} is not a branch, tag or commit of {url}",
                    field="repository.ref",
                )
            # The job's clone is local (from the mirror), whatever the URL's protocol.
            local = {**self.env, "GIT_ALLOW_PROTOCOL": "file"}
            self._git(
                ["clone", "--quiet", "--no-checkout", "--", str(mirror), str(dest)], url, local
            )
        self._git(["-C", str(dest), "remote", "set-url", "origin", url], url)
        self._git(["-C", str(dest), "checkout", "--quiet", "--detach", commit], url)
        return commit

    def _resolve(self, mirror: Path, ref: str) -> str | None:
        result = subprocess.run(
            ["git", "-C", str(mirror), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=GIT_TIMEOUT,
        )
        commit = result.stdout.strip()
        return commit if result.returncode == 0 and _COMMIT_RE.match(commit) else None

    def _git(self, args: list[str], url: str, env: dict[str, str] | None = None) -> None:
        try:
            result = subprocess.run(
                ["git", *args],
                capture_output=True,
                text=True,
                env=env or self.env,
                timeout=GIT_TIMEOUT,
            )
        except FileNotFoundError:
            raise CheckoutFailed("git is not installed on this agent's machine") from None
        except subprocess.TimeoutExpired:
            raise CheckoutFailed(f"git {args[0]} of {url} took over {GIT_TIMEOUT:g}s") from None
        if result.returncode != 0:
            said = " ".join(result.stderr.split())[-300:] or f"exit code {result.returncode}"
            raise CheckoutFailed(f"cannot check out {url}: git {args[0]}: {said}")


def is_local(url: str) -> bool:
    """Whether git reads `url` as a path on this machine (git's own rule: no "://", and
    no "host:" before the first slash)."""
    if "://" in url:
        return url.startswith("file://")
    head = url.split("/", 1)[0]
    return ":" not in head
