"""Slurm (a cluster started by run.py, $SLURM_CONF): a job array per batch, as Slurm users
submit many small jobs; a single sbatch per latency sample. Standard library only."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from workloads import measure, sizes_from_argv

OUT = Path(os.environ.get("BENCH_SLURM_DIR", ".")) / "out"
POLL = 0.02  # seconds between looks at the queue or an output file


def sbatch(*args: str) -> str:
    done = subprocess.run(
        ["sbatch", "--parsable", *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip().split(";")[0]


def wait_gone(job: str) -> None:
    while subprocess.run(
        ["squeue", "-h", "-r", "-j", job, "-o", "%i"], capture_output=True, text=True
    ).stdout.strip():
        time.sleep(POLL)


class Slurm:
    def commands(self, argv: list[str], n: int) -> None:
        job = sbatch(f"--array=0-{n - 1}", "-o", "/dev/null", "--wrap", shlex.join(argv))
        wait_gone(job)

    def calls(self, n: int) -> list[int]:
        code = "import os; print(int(os.environ['SLURM_ARRAY_TASK_ID']) + 1)"
        wrap = shlex.join([sys.executable, "-c", code])
        job = sbatch(f"--array=0-{n - 1}", "-o", f"{OUT}/calls-%A-%a.out", "--wrap", wrap)
        wait_gone(job)
        return [int((OUT / f"calls-{job}-{i}.out").read_text()) for i in range(n)]

    def call_one(self) -> int:
        return self.calls(1)[0] + 1  # the array's task 0 computes add_one(0)

    def stamp(self) -> str:
        job = sbatch("-o", f"{OUT}/stamp-%j.out", "--wrap", "date +%s.%N")
        out = OUT / f"stamp-{job}.out"
        while not (out.exists() and out.read_text().endswith("\n")):
            time.sleep(POLL)
        return out.read_text()


if __name__ == "__main__":
    sizes, only, _ = sizes_from_argv(__doc__)
    measure(Slurm(), sizes, only)
