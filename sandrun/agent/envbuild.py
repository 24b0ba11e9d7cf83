"""Environments: a job's Python and requirements, built by the agent with uv once per
content and shown read-only to every job that asks for the same (whoever owns it: its
directory is named by what it holds, so sharing it shares nothing of anyone's).

A build has the agent's network (the package index); the job using it has only its own.
It installs wheels only: a source distribution's build would run a stranger's code on the
agent, outside the sandbox.
Builds of one environment take turns on a file lock; a finished one is marked, and an
unfinished one (the agent was killed) is built again.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandrun.agent.workspace import remove_tree
from sandrun.spec.environment import Environment, requirements_of

BUILD_TIMEOUT = 1800.0  # seconds one build may take
_DONE = ".sandrun-built"
_LOG_TAIL = 4000  # characters of a failed build's output in the job's message


class BuildFailed(Exception):
    """The environment could not be built: `log` is uv's output."""

    def __init__(self, message: str, log: bytes = b"") -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class Built:
    root: Path  # the environment (a virtualenv)
    log: bytes  # what building it printed (empty if it was built before)

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"


class Builder:
    def __init__(self, root: Path) -> None:
        self.root = root  # <agent dir>/envs
        self.builds = 0  # how many this agent has built (not found built)

    def ready(self, env: Environment, workdir: Path, calls: bool) -> Built:
        """The environment for `env` (its `file` read from `workdir`), built if need be;
        `calls`: it runs a function call, so it also gets the agent's cloudpickle."""
        requirements = list(env.requirements)
        if env.file is not None:
            path = workdir / env.file
            if path.is_symlink() or not path.resolve().is_relative_to(workdir.resolve()):
                raise BuildFailed(f"{env.file} is not a file of the job's code")
            try:
                requirements += requirements_of(path.read_text(), env.file)
            except (OSError, UnicodeDecodeError) as exc:
                raise BuildFailed(f"cannot read {env.file}: {exc}") from None
            except ValueError as exc:
                raise BuildFailed(str(exc)) from None
        if calls:
            requirements.append(f"cloudpickle=={_cloudpickle()}")
        python = env.python or f"{sys.version_info.major}.{sys.version_info.minor}"
        key = hashlib.sha256(json.dumps([python, requirements]).encode()).hexdigest()[:32]
        where = self.root / key
        if (where / _DONE).exists():
            return Built(where, b"")
        with self._locked(key):
            if (where / _DONE).exists():
                return Built(where, b"")
            log = self._build(where, python, requirements)
            self.builds += 1
            return Built(where, log)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _build(self, where: Path, python: str, requirements: list[str]) -> bytes:
        uv = _uv()
        remove_tree(where)  # what a killed build left
        env = {**os.environ, "UV_CACHE_DIR": str(self.root / ".uv-cache")}
        env.pop("VIRTUAL_ENV", None)
        wanted = where.with_name(f"{where.name}.requirements.txt")
        wanted.write_text("".join(f"{r}\n" for r in requirements))
        steps = [[uv, "venv", "--quiet", "--python", python, str(where)]]
        if requirements:
            # Wheels only: building a source distribution runs its code, here, outside any
            # sandbox, as the agent.
            steps.append([uv, "pip", "install", "--no-build", "--python",
                          str(where / "bin" / "python"), "-r", str(wanted)])  # fmt: skip
        log = b""
        for argv in steps:
            try:
                done = subprocess.run(argv, env=env, capture_output=True, timeout=BUILD_TIMEOUT,
                                      check=False)  # fmt: skip
            except subprocess.TimeoutExpired:
                remove_tree(where)
                raise BuildFailed(f"building it took over {BUILD_TIMEOUT:.0f} s", log) from None
            log += done.stdout + done.stderr
            if done.returncode != 0:
                remove_tree(where)
                tail = log.decode(errors="replace")[-_LOG_TAIL:].strip()
                raise BuildFailed(f"uv could not build it:\n{tail}", log)
        os.chmod(where, 0o755)  # every job's uid reads it
        (where / _DONE).write_text(json.dumps({"python": python, "requirements": requirements}))
        return log


def _uv() -> str:
    """The uv beside this agent's Python (installed with sandrun), else on PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        raise BuildFailed("this agent has no uv to build environments with: pip install uv")
    return found


def runner_path(root: Path) -> Path:
    """A directory holding only `sandrun` (a link to this package), for an environment's
    Python to run function calls with (`python -m sandrun.runner` needs only cloudpickle
    besides)."""
    where = root / ".runner"
    link = where / "sandrun"
    package = Path(__file__).resolve().parents[1]
    if not link.is_symlink() or link.resolve() != package:
        where.mkdir(parents=True, exist_ok=True)
        draft = where / f".sandrun.{os.getpid()}"
        draft.unlink(missing_ok=True)
        draft.symlink_to(package)
        os.replace(draft, link)
    return where


@functools.cache
def _cloudpickle() -> str:
    """The agent's cloudpickle version (read once: a job's call needs the same)."""
    return importlib.metadata.version("cloudpickle")
