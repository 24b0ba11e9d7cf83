"""Remote functions: the round trip of a trivial `f.remote()` and `.map()` throughput,
embedded and through a server with one 2-CPU agent, beside the same work in
`concurrent.futures.ProcessPoolExecutor(2)` on the same machine, in the same run.

    python bench/sdk.py [--calls 1000] [--samples 50]

Every call is a job: spawned in the sandbox, run on the agent's Python, its argument and
result carried as content-addressed blobs. The pool reuses 2 warm worker processes; it is
the floor for "call a function in another process", not a peer job system.
"""

from __future__ import annotations

import argparse
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


def round_trips(call: Callable[[int], int], samples: int) -> list[float]:
    out = []
    for i in range(samples):
        start = time.perf_counter()
        assert call(i) == i + 1
        out.append(time.perf_counter() - start)
    return out


def map_rate(run_map: Callable[[range], list[int]], calls: int) -> float:
    items = range(calls)
    start = time.perf_counter()
    assert run_map(items) == [i + 1 for i in items]
    return calls / (time.perf_counter() - start)


def measure_sandrun(client: Client, calls: int, samples: int) -> tuple[list[float], float]:
    f = App("bench", client=client).function()(add_one)
    f.remote(0)  # warm: the agent is up, the function uploaded
    return round_trips(f.remote, samples), map_rate(
        lambda items: list(f.map(items, progress=False)), calls
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()

    rows: list[tuple[str, list[float], float]] = []
    with ProcessPoolExecutor(2) as pool:
        pool.submit(add_one, 0).result()  # warm the workers
        trips = round_trips(lambda x: pool.submit(add_one, x).result(), args.samples)
        rows.append(
            (
                "ProcessPoolExecutor(2)",
                trips,
                map_rate(lambda items: list(pool.map(add_one, items)), args.calls),
            )
        )
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "embedded"
        with connect(home=home) as client:
            rows.append(("sandrun embedded", *measure_sandrun(client, args.calls, args.samples)))
        stop_local_agent(home)
        url, token, procs = serve(Path(tmp) / "server", [2.0])
        try:
            with connect(url, token=token) as client:
                rows.append(
                    ("sandrun server + agent", *measure_sandrun(client, args.calls, args.samples))
                )
        finally:
            stop(procs)

    base_p50 = percentile(rows[0][1], 50)
    base_rate = rows[0][2]
    print(f"{'':<24} {'remote() p50':>13} {'p99':>9} {'map calls/s':>12}  ratio to the pool")
    for label, trips, rate in rows:
        p50, p99 = percentile(trips, 50), percentile(trips, 99)
        print(
            f"{label:<24} {p50 * 1000:10.2f} ms {p99 * 1000:6.2f} ms {rate:12.0f}  "
            f"p50 x{p50 / base_p50:,.0f}, map {rate / base_rate:.2%}"
        )


if __name__ == "__main__":
    main()
