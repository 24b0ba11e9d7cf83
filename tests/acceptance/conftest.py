from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandrun.home import Home

SANDRUN = str(Path(sys.executable).parent / "sandrun")

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(home: Home, tmp_path: Path) -> Cli:
    """Run the installed `sandrun` command in a scratch directory, as a user would."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def run(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SANDRUN, *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=os.environ,
            timeout=timeout,
            **kw,
        )

    return run


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
