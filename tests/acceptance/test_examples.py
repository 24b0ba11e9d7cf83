"""Every script in examples/ runs as its docstring says, on the embedded default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sandrun.home import Home

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# What each example must print (a script not listed here fails the test below).
EXPECTED = {
    "quickstart.py": ["log: 5050", "status: completed exit code: 0", "output: 5050"],
    "builder.py": ["hello, Ada and Grace", "refused: the job cannot be submitted"],
    "functions.py": [
        "local: 16",
        "remote: 16",
        "-> 25",
        "map: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
        "remote raised: ZeroDivisionError('division by zero')",
    ],
    "invoke_file.py": ["result: {'epochs': 10, 'final_loss': 0.3487}"],
    "repository.py": ["training from ['--epochs', '3']", "ran commit "],
    "async_logs.py": ["log: step 1", "log: step 3", "status: completed"],
    "yaml_job.py": ["hello from yaml"],
    "pipeline.py": [
        "state: completed",
        "  heavy: skipped",
        "  light: completed",
        "metrics: {'mse': 3.5e-05, 'good': True}",
        "train log: trained on 1000 rows",
    ],
    "exec_and_session.py": [
        "exec: epoch 3 of 10",
        "cell: 5050",
        "cell raised: ZeroDivisionError",
        "session: completed",
    ],
    "errors.py": [
        "invalid_spec: cpus:",
        "did you mean 'timeout'",
        "job_not_found:",
        "job_failed: exit code 3, last log line 'going down'",
    ],
}
RUNNABLE = sorted(p.name for p in EXAMPLES.glob("*.py") if "\nimport sandrun" in p.read_text())


def test_every_example_is_checked() -> None:
    assert sorted(EXPECTED) == RUNNABLE


@pytest.mark.parametrize("name", RUNNABLE)
def test_example_runs(name: str, home: Home) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    for line in EXPECTED[name]:
        assert line in proc.stdout, f"{name} did not print {line!r}:\n{proc.stdout}"
