"""The five workloads, timed the same way for every system (standard library only: each
driver runs on its own system's interpreter and imports this file).

A driver offers four operations; `main` times them and prints one JSON line per workload:
  commands(argv, n)  run n jobs of argv, return once all have ended (each must succeed)
  calls(n)           n calls of `add_one(i)` as the system's function call; return results
  stamp()            run one job of `date +%s.%N` and return what it printed
  call_one()         one call of `add_one(1)`, waited for: a warm call's round trip
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Protocol

TRUE = ["true"]
SLEEP = ["sleep", "0.1"]
DATE = ["date", "+%s.%N"]

# (a) jobs of `true`, (b) jobs of `sleep 0.1`, (c) function calls, (d) latency samples,
# (e) round trips of one call
FULL = {"true": 2000, "sleep": 200, "calls": 2000, "latency": 50, "call": 50}
QUICK = {"true": 300, "sleep": 40, "calls": 300, "latency": 15, "call": 15}
# For a system that starts a couple of jobs a second (Slurm), so a run ends in minutes.
SLOW = {"true": 40, "sleep": 20, "calls": 20, "latency": 5, "call": 3}
SLOW_QUICK = {"true": 8, "sleep": 6, "calls": 6, "latency": 3, "call": 2}


def add_one(x: int) -> int:
    return x + 1


class Driver(Protocol):
    def commands(self, argv: list[str], n: int) -> None: ...

    def calls(self, n: int) -> list[int]: ...

    def stamp(self) -> str: ...

    def call_one(self) -> int: ...


def sizes_from_argv(description: str) -> tuple[dict[str, int], list[str], argparse.Namespace]:
    """The sizes (--quick), the workloads to run (--only) and the driver's own arguments."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--slow", action="store_true", help="the small sizes for slow systems")
    parser.add_argument("--only", default="true,sleep,calls,latency,call")
    parser.add_argument("--arg", action="append", default=[], help="driver-specific KEY=VALUE")
    args = parser.parse_args()
    sizes = {(False, False): FULL, (True, False): QUICK, (False, True): SLOW}
    return sizes.get((args.quick, args.slow), SLOW_QUICK), args.only.split(","), args


def measure(driver: Driver, sizes: dict[str, int], only: list[str]) -> None:
    """Warm the driver, then time each workload; one JSON line each on stdout."""
    driver.commands(TRUE, 4)
    if "calls" in only:
        driver.calls(4)
    driver.stamp()
    for name, argv in (("true", TRUE), ("sleep", SLEEP)):
        if name in only:
            n = sizes[name]
            begin = time.perf_counter()
            driver.commands(argv, n)
            _emit(name, n, time.perf_counter() - begin)
    if "calls" in only:
        n = sizes["calls"]
        begin = time.perf_counter()
        results = driver.calls(n)
        elapsed = time.perf_counter() - begin
        if results != [add_one(i) for i in range(n)]:
            raise SystemExit("function calls returned wrong results")
        _emit("calls", n, elapsed)
    if "latency" in only:
        samples = []
        for _ in range(sizes["latency"]):
            submitted = time.time()
            samples.append(float(driver.stamp().strip()) - submitted)
        _emit("latency", len(samples), None, samples)
    if "call" in only:
        driver.call_one()  # its worker warm
        trips = []
        for _ in range(sizes["call"]):
            begin = time.perf_counter()
            if driver.call_one() != add_one(1):
                raise SystemExit("a function call returned a wrong result")
            trips.append(time.perf_counter() - begin)
        _emit("call", len(trips), None, trips)


def _emit(
    workload: str, n: int, seconds: float | None, latencies: list[float] | None = None
) -> None:
    line = {"workload": workload, "n": n, "seconds": seconds, "latencies": latencies or []}
    print(json.dumps(line), flush=True)
