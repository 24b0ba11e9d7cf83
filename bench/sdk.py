"""Remote functions: the round trip of a trivial `f.remote()` and `.map()` throughput,
embedded and through a server with one 2-CPU agent, each with warm workers (the default)
and cold (`--warm-idle 0`), beside the same work in
`concurrent.futures.ProcessPoolExecutor(2)` on the same machine, in the same run.

    python bench/sdk.py [--calls 1000] [--samples 50]

Then, for each sandrun configuration, where a call's time goes: the round trip (p50) of
jobs that do successively more of what a call does — `true`; the agent's Python doing
nothing; that Python importing the runner and cloudpickle; a whole call.

Every call is a job: run on the agent's Python (forked by a warm worker, or a fresh
sandbox and interpreter when cold), its argument and result carried as content-addressed
blobs. The pool reuses 2 warm worker processes; it is
the floor for "call a function in another process", not a peer job system.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from server_throughput import serve, stop, stop_local_agent
from throughput import percentile

from sandrun.client import App, Client, connect


def add_one(x: int) -> int:
    return x + 1


def round_trips(call: Callable[[], object], samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def map_rate(run_map: Callable[[range], list[int]], calls: int) -> float:
    items = range(calls)
    start = time.perf_counter()
    assert run_map(items) == [i + 1 for i in items]
    return calls / (time.perf_counter() - start)


LADDER = [
    ("job: true", "true"),
    ("job: $SANDRUN_PYTHON -c pass", '"$SANDRUN_PYTHON" -c pass'),
    (
        "job: ... import runner, cloudpickle",
        '"$SANDRUN_PYTHON" -c "import sandrun.runner, cloudpickle"',
    ),
]


def ladder(client: Client, samples: int) -> list[tuple[str, float]]:
    """p50 round trip of jobs doing more and more of what a call does."""
    steps = []
    for label, shell in LADDER:
        client.run(shell, upload_code=False).wait()
        trips = round_trips(lambda s=shell: client.run(s, upload_code=False).wait(), samples)
        steps.append((label, percentile(trips, 50)))
    f = App("bench", client=client).function()(add_one)
    steps.append(("f.remote(x)", percentile(round_trips(lambda: f.remote(1), samples), 50)))
    return steps


def measure_sandrun(client: Client, calls: int, samples: int) -> tuple[list[float], float]:
    f = App("bench", client=client).function()(add_one)
    assert f.remote(0) == 1  # warm: the agent is up, the function uploaded
    return round_trips(lambda: f.remote(1), samples), map_rate(
        lambda items: list(f.map(items, progress=False)), calls
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()

    rows: list[tuple[str, list[float], float]] = []
    steps: dict[str, list[tuple[str, float]]] = {}
    with ProcessPoolExecutor(2) as pool:
        pool.submit(add_one, 0).result()  # warm the workers
        trips = round_trips(lambda: pool.submit(add_one, 1).result(), args.samples)
        rows.append(
            (
                "ProcessPoolExecutor(2)",
                trips,
                map_rate(lambda items: list(pool.map(add_one, items)), args.calls),
            )
        )
    with tempfile.TemporaryDirectory() as tmp:
        for warm in ("60", "0"):
            label = "warm" if warm != "0" else "cold"
            os.environ["SANDRUN_WARM_IDLE"] = warm  # the embedded agent starts with it
            home = Path(tmp) / f"embedded-{label}"
            with connect(home=home) as client:
                row = f"sandrun embedded, {label}"
                rows.append((row, *measure_sandrun(client, args.calls, args.samples)))
                steps[row] = ladder(client, args.samples)
            stop_local_agent(home)
            url, token, procs = serve(
                Path(tmp) / f"server-{label}", [2.0], agent_args=("--warm-idle", warm)
            )
            try:
                with connect(url, token=token) as client:
                    row = f"sandrun server, {label}"
                    rows.append((row, *measure_sandrun(client, args.calls, args.samples)))
                    steps[row] = ladder(client, args.samples)
            finally:
                stop(procs)

    base_p50 = percentile(rows[0][1], 50)
    base_rate = rows[0][2]
    print(f"{'':<26} {'remote() p50':>13} {'p99':>9} {'map calls/s':>12}  ratio to the pool")
    for label, trips, rate in rows:
        p50, p99 = percentile(trips, 50), percentile(trips, 99)
        print(
            f"{label:<26} {p50 * 1000:10.2f} ms {p99 * 1000:6.2f} ms {rate:12.0f}  "
            f"p50 x{p50 / base_p50:,.0f}, map {rate / base_rate:.2%}"
        )

    for label, ladder_steps in steps.items():
        print(f"\nwhere a call's time goes, {label} (round trip p50):")
        for step, p50 in ladder_steps:
            print(f"  {step:<40} {p50 * 1000:8.2f} ms")


if __name__ == "__main__":
    main()
