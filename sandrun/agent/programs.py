"""Whether a job's program can run in its sandbox, and if not, the message that says why."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sandrun.agent.sandbox.base import Sandbox


def find_program(
    backend: Sandbox, program: str, env: dict[str, str], workdir: Path, writable: list[Path]
) -> tuple[str, int] | None:
    """Why `program` cannot be run in the sandbox (message, exit code), if it cannot."""
    view = backend.view
    isolated = backend.isolates
    if "/" in program:
        path = workdir / program
        if not path.exists():
            return f"cannot run {program!r}: no such file", 127
        if not os.access(path, os.X_OK) or path.is_dir():
            return f"cannot run {program!r}: not an executable file", 126
        if isolated and not view.shows(path, writable):
            return _invisible(program, path), 127
        return None
    outside = None
    for d in (d for d in env.get("PATH", "").split(os.pathsep) if d):
        if isolated and view.provides(Path(d, program)):
            return None  # a link the view itself makes (the agent's Python)
        found = shutil.which(program, path=d)  # where it is first, then whether it shows
        if found is not None:
            if not isolated or view.shows(Path(d), writable):
                return None
            outside = outside or found
    if outside is not None:
        return _invisible(program, Path(outside)), 127
    return f"cannot run {program!r}: not found on the job's PATH", 127


def _invisible(program: str, path: Path) -> str:
    return (
        f"cannot run {program!r}: {path} is not visible inside the sandbox; show its "
        "directory with `sandrun agent --sandbox-ro DIR`, or install the program in a "
        "system directory"
    )
