"""Sandbox start overhead per backend, and sandboxed throughput against raw bubblewrap.

    python bench/sandbox.py [--starts 200] [--jobs 1000]

1. Start overhead: `true` started --starts times in a row, bare (`subprocess.run`) and
   through each backend's full command line as the agent builds it (the gate, the
   namespaces, the view, setpriv as root): ms per start and the ratio to a bare spawn.
2. Throughput: the raw bubblewrap spawn rate (the same bwrap command line without the
   gate, 2 parallel spawners, no sandrun), then --jobs jobs of `true` through the
   embedded runner with its default sandbox (submit -> completed), and the ratio (target:
   at least 60 %).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from sandrun.agent.sandbox import Box, FsView, Sandbox, probe
from sandrun.agent.sandbox.bwrap import BwrapSandbox
from sandrun.agent.sandbox.plain import NoSandbox
from sandrun.agent.sandbox.runtime import GATE
from sandrun.agent.sandbox.unshare import UnshareSandbox
from sandrun.client import connect
from sandrun.embedded import agent_running
from sandrun.home import Home

sys.path.insert(0, str(Path(__file__).parent))
from throughput import raw_rate, sandrun_rate


def argv_maker(sandbox: Sandbox, root: Path, gate: bool = True) -> Callable[[int], list[str]]:
    """Start number i's command line, as the agent builds it (with its start gate)."""

    def argv_for(i: int) -> list[str]:
        work = root / f"w{i}"
        work.mkdir(exist_ok=True)
        (root / f"r{i}").mkdir(exist_ok=True)
        command = sandbox.command(Box(["true"], work, [work], root=root / f"r{i}"))
        return [*GATE, *command] if gate else command

    return argv_for


def per_start_ms(argv_for: Callable[[int], list[str]], starts: int) -> float:
    begin = time.perf_counter()
    for i in range(starts):
        subprocess.run(argv_for(i), input=b"go\n", check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - begin) / starts * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        view = FsView("host", hidden=(root / "home",))

        bare = per_start_ms(lambda i: ["true"], args.starts)
        print(f"{'bare subprocess.run(true)':<34} {bare:7.2f} ms per start")
        bwrap_argv = None
        for sandbox in (NoSandbox(view), BwrapSandbox(view), UnshareSandbox(view)):
            argv_for = argv_maker(sandbox, root)
            problem = probe(sandbox, root)
            if problem is not None:
                print(f"{sandbox.name:<34} unavailable: {problem}")
                continue
            ms = per_start_ms(argv_for, args.starts)
            label = f"sandbox {sandbox.name}"
            print(f"{label:<34} {ms:7.2f} ms per start   ({ms / bare:.1f}x bare)")
            if sandbox.name == "bwrap":
                bwrap_argv = argv_maker(sandbox, root, gate=False)

        if bwrap_argv is None:
            print("bubblewrap is not available: no throughput comparison")
            return
        raw = raw_rate(args.jobs, 2, bwrap_argv)
        print(f"{'raw bwrap spawns, 2 spawners':<34} {raw:7.0f} starts/s")
        home = Home(root / "home")
        with connect(home=home.root) as client:
            client.submit({"command": ["true"]}).wait(60)  # start and warm the agent
            agent = psutil.Process(int(home.agent_lock.read_text()))
            before = (agent.cpu_times(), psutil.Process().cpu_times(), time.perf_counter())
            jobs_per_s, _ = sandrun_rate(client, args.jobs)
            after = (agent.cpu_times(), psutil.Process().cpu_times(), time.perf_counter())
        print(
            f"{'sandrun embedded, default sandbox':<34} {jobs_per_s:7.0f} jobs/s"
            f"   ({jobs_per_s / raw:.0%} of raw bwrap, target >= 60%)"
        )
        # Where the CPU went, per job: the agent's Python, the processes it started (the
        # sandbox and the job), this client, and the rest (the kernel's own threads, say).
        n = args.jobs
        agent_ms = (sum(after[0][:2]) - sum(before[0][:2])) / n * 1000
        children_ms = (sum(after[0][2:4]) - sum(before[0][2:4])) / n * 1000
        client_ms = (sum(after[1][:2]) - sum(before[1][:2])) / n * 1000
        total_ms = (after[2] - before[2]) * (os.cpu_count() or 1) / n * 1000
        rest = total_ms - agent_ms - children_ms - client_ms
        print(
            f"  CPU per job: agent {agent_ms:.2f} ms, sandbox + job {children_ms:.2f} ms, "
            f"client {client_ms:.2f} ms, elsewhere or idle {rest:.2f} ms"
        )
        log = (home.root / "agent.log").read_text()
        print("  agent:", next((ln for ln in log.splitlines() if "sandbox" in ln), "?")[24:])
        if agent_running(home):
            agent = psutil.Process(int(home.agent_lock.read_text()))
            agent.terminate()
            agent.wait(30)


if __name__ == "__main__":
    main()
