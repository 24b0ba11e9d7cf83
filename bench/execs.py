"""What an exec into a running job costs (docs/lifecycle.md), against baselines in the
same run.

    python bench/execs.py [--samples 30]

1. `job.exec(["true"])` round trips — embedded (the client enters the sandbox itself),
   and through a server on loopback with one agent (the client's WebSocket, the ask down
   the agent's channel, the agent's connection back, the relay) — against `subprocess.run
   (["true"])` (a plain spawn) and a bare `nsenter` into the same job's namespaces, which
   is about what `docker exec` does for a container.
2. `session.execute("x + 1")` cells, embedded and through the server: an exec plus a
   cell's trip through the kernel's socket.

Figures are the median and the 90th percentile of `--samples` tries, after two warm-ups.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from server_throughput import serve, stop, stop_local_agent

from sandrun.agent.execs import target
from sandrun.client import Client, Job, connect


def _timed(call: Callable[[], object], samples: int) -> tuple[float, float]:
    for _ in range(2):
        call()
    took = []
    for _ in range(samples):
        begin = time.perf_counter()
        call()
        took.append(time.perf_counter() - begin)
    took.sort()
    return statistics.median(took) * 1e3, took[int(len(took) * 0.9) - 1] * 1e3


def _running(client: Client) -> Job:
    job = client.submit({"shell": "sleep 600", "cpus": 0.5})
    job.wait_until_running(120)
    return job


def _nsenter(job: Job) -> Callable[[], object]:
    """A bare nsenter into the job's namespaces: the floor an exec cannot go under."""
    pid = job.attempts[-1].pid
    assert pid is not None
    inside, flags = target(pid)
    argv = ["nsenter", f"--target={inside}", *flags, "--root", "--wd", "--", "true"]
    return lambda: subprocess.run(argv, check=True)


def measure(label: str, client: Client, samples: int, bare: bool) -> None:
    job = _running(client)
    try:
        print(f"{label}:")
        if bare:
            p50, p90 = _timed(lambda: subprocess.run(["true"], check=True), samples)
            print(f"  subprocess.run(true)      p50 {p50:7.2f} ms   p90 {p90:7.2f} ms")
            floor, p90 = _timed(_nsenter(job), samples)
            print(f"  nsenter into the job      p50 {floor:7.2f} ms   p90 {p90:7.2f} ms")
        p50, p90 = _timed(lambda: job.exec(["true"]), samples)
        print(f"  job.exec(['true'])        p50 {p50:7.2f} ms   p90 {p90:7.2f} ms")
        session = client.session()
        session.execute("x = 1")
        cell, p90 = _timed(lambda: session.execute("x + 1"), samples)
        print(f"  session.execute('x + 1')  p50 {cell:7.2f} ms   p90 {p90:7.2f} ms")
        session.close()
    finally:
        job.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        try:
            with connect(home=home) as client:
                measure("embedded", client, args.samples, bare=True)
        finally:
            stop_local_agent(home)
        url, token, procs = serve(Path(tmp) / "server", [2.0])
        try:
            with connect(url, token=token) as client:
                measure("through a server (loopback, one agent)", client, args.samples, False)
        finally:
            stop(procs)


if __name__ == "__main__":
    main()
