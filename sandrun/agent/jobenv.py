"""What a job's process starts with: only the environment its spec declares, over safe
defaults, and a `python` that is the agent's own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sandrun.agent.checkpoints import directory as checkpoint_dir
from sandrun.models import Claim
from sandrun.spec import JobSpec

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def job_env(spec: JobSpec, claim: Claim, home: Path, python_dir: str) -> dict[str, str]:
    """Only the declared env over safe defaults: the agent's own environment never leaks.
    `python_dir` holds a `python` that is the agent's Python."""
    env = {
        "PATH": f"{python_dir}:{DEFAULT_PATH}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",  # so a Python job's logs arrive while it runs
        "SANDRUN_JOB_ID": claim.job.id,
        "SANDRUN_JOB_NAME": claim.job.name,
        "SANDRUN_ATTEMPT": str(claim.attempt),
        "USER": "sandrun",  # a job's uid may have no name on this machine
        "LOGNAME": "sandrun",
        "SANDRUN_PYTHON": sys.executable,  # the agent's own: function calls run on it
    }
    env.update(spec.env)
    # Not the spec's to move: what is saved there is what the next attempt finds there.
    env["SANDRUN_CHECKPOINT_DIR"] = str(checkpoint_dir(home))
    return env


def python_dir(runs_dir: Path) -> str:
    """Without a sandbox's view, a real directory whose `python` is the agent's Python."""
    where = runs_dir.parent / "bin"
    where.mkdir(parents=True, exist_ok=True)
    link = where / "python"
    if not link.is_symlink() or os.readlink(link) != sys.executable:
        link.unlink(missing_ok=True)
        link.symlink_to(sys.executable)
    return str(where)
