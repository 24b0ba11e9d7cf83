"""Embedded-runner throughput and submit->start latency, against raw subprocess spawns.

    python bench/throughput.py [--jobs 2000] [--latency-samples 200]

Prints: the raw `subprocess.run(["true"])` rate with 1 and 2 parallel spawners (threads),
sandrun's end-to-end rate for N jobs of `true` (submit -> completed, through the real
background agent), its ratio to the 2-spawner ceiling, and submit->start latency p50/p99
measured with an idle agent (one job at a time). Each run uses a fresh $SANDRUN_HOME.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from sandrun.client import Client, connect
from sandrun.embedded import agent_running
from sandrun.home import Home


def raw_rate(
    total: int,
    spawners: int,
    argv_for: Callable[[int], list[str]] = lambda i: ["true"],
    stdin: bytes | None = None,
) -> float:
    """Commands per second from `spawners` threads each running argv_for(i) in turn."""
    each = total // spawners

    def spawn(worker: int) -> None:
        for i in range(each):
            argv = argv_for(worker * each + i)
            subprocess.run(argv, input=stdin, check=True, stdout=subprocess.DEVNULL)

    threads = [threading.Thread(target=spawn, args=(w,)) for w in range(spawners)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return each * spawners / (time.perf_counter() - start)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def sandrun_rate(client: Client, total: int) -> tuple[float, float]:
    """(jobs/s end to end, submits/s) for `total` jobs of `true`."""
    start = time.perf_counter()
    jobs = [client.submit({"command": ["true"]}) for _ in range(total)]
    submitted = time.perf_counter()
    for job in jobs:
        job.wait(600)
        assert job.record.exit_code == 0, job.record
    end = time.perf_counter()
    return total / (end - start), total / (submitted - start)


def latencies(client: Client, samples: int) -> list[float]:
    """Seconds from a job's submit to its process start, one job at a time (idle agent)."""
    out = []
    for _ in range(samples):
        job = client.submit({"command": ["true"]}).wait(60)
        attempt = job.attempts[0]
        assert attempt.started_at is not None
        out.append(attempt.started_at - job.record.created_at)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--latency-samples", type=int, default=200)
    args = parser.parse_args()

    raw1 = raw_rate(args.jobs, 1)
    raw2 = raw_rate(args.jobs, 2)
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp))
        with connect(home=home.root) as client:
            client.submit({"command": ["true"]}).wait(60)  # start and warm the agent
            rate, submit_rate = sandrun_rate(client, args.jobs)
            lat = latencies(client, args.latency_samples)
        if agent_running(home):  # stop the background agent (it drains, then exits)
            agent = psutil.Process(int(home.agent_lock.read_text()))
            agent.terminate()
            agent.wait(30)

    print(f"{'raw subprocess.run, 1 spawner':<40} {raw1:8.0f} jobs/s")
    print(f"{'raw subprocess.run, 2 spawners':<40} {raw2:8.0f} jobs/s")
    print(f"{'sandrun embedded, submit only':<40} {submit_rate:8.0f} jobs/s")
    print(
        f"{'sandrun embedded, submit -> completed':<40} {rate:8.0f} jobs/s"
        f"   ({rate / raw2:.0%} of 2 spawners, target >= 50%)"
    )
    print(
        f"{'submit -> start latency (idle agent)':<40} "
        f"p50 {percentile(lat, 50) * 1000:6.2f} ms   p99 {percentile(lat, 99) * 1000:6.2f} ms"
        f"   mean {statistics.mean(lat) * 1000:.2f} ms   (target p50 < 5 ms)"
    )


if __name__ == "__main__":
    main()
