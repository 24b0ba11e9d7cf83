"""What a cold job pays before its own code runs, part by part (what warm execution saves).

    python bench/cold_start.py [--runs 150]

Median wall times, in one run: a bare `true`; bubblewrap with the agent's own command line
for the `system` view (with and without its network namespace); a fresh interpreter, bare
and importing what a function call needs (cloudpickle and the runner); and `fork()` of an
interpreter that has them already (what a fork server pays per call).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sandrun.agent.sandbox import Box, FsView
from sandrun.agent.sandbox.bwrap import BwrapSandbox


def median_ms(run: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def spawn(argv: list[str]) -> Callable[[], object]:
    return lambda: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def fork_and_wait() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=150)
    runs = parser.parse_args().runs
    import cloudpickle  # noqa: F401 (warm, as a fork server would be)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        work = root / "work"
        work.mkdir()
        (root / "view").mkdir()
        box = Box(["true"], work, [work], root=root / "view")
        bwrap = BwrapSandbox(FsView("system", hidden=(root,))).command(box)
        rows = [
            ("true", spawn(["true"]), runs),
            ("bwrap, the agent's command line", spawn(bwrap), runs),
            (
                "  without its network namespace",
                spawn([a for a in bwrap if a != "--unshare-net"]),
                runs,
            ),
            ("python -c pass", spawn([sys.executable, "-c", "pass"]), runs // 3),
            (
                "python importing cloudpickle, runner",
                spawn([sys.executable, "-c", "import cloudpickle, sandrun.runner"]),
                runs // 3,
            ),
            ("fork() of a warm interpreter", fork_and_wait, runs),
        ]
        floor = None
        for name, run, n in rows:
            ms = median_ms(run, max(n, 5))
            floor = floor or ms
            print(f"{name:<40} {ms:7.2f} ms   {ms / floor:5.1f}x true")


if __name__ == "__main__":
    main()
