"""Where one job's round trip goes: the stages of a sequential `true` job and of a warm
`f.remote()`, embedded and through a server with one 2-CPU agent, read from the store's own
timestamps (p50 over `--samples`).

    python bench/lifecycle.py [--samples 40]

Stages: submit (the client's request until the job row exists), queued -> claimed, claimed
-> start recorded (preparing the attempt, the fork, the start report), start -> end
recorded (the process, collecting outputs, the end report), end -> client back (the
wait's wake-up, and for a call, reading its result). The whole round trip beside them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from server_throughput import serve, stop, stop_local_agent

from sandrun.client import App, Client, Job, connect

STAGES = ("submit", "claimed", "to start", "start->end", "end->client", "round trip")


def add_one(x: int) -> int:
    return x + 1


def stages(run: Callable[[], Job], samples: int) -> dict[str, float]:
    """p50 of each stage, in milliseconds."""
    rows: list[tuple[float, ...]] = []
    for _ in range(samples):
        begin = time.time()
        job = run()
        back = time.time()
        record, (attempt,) = job.record, job.attempts
        assert attempt.started_at is not None and attempt.finished_at is not None
        rows.append(
            (
                record.created_at - begin,
                attempt.scheduled_at - record.created_at,
                attempt.started_at - attempt.scheduled_at,
                attempt.finished_at - attempt.started_at,
                back - attempt.finished_at,
                back - begin,
            )
        )
    return {name: statistics.median(r[i] for r in rows) * 1000 for i, name in enumerate(STAGES)}


def measure(client: Client, samples: int) -> dict[str, dict[str, float]]:
    f = App("bench", client=client).function()(add_one)
    assert f.remote(0) == 1  # the agent up, the function uploaded, a worker warm
    client.run("true", upload_code=False).wait()

    def job() -> Job:
        return client.run("true", upload_code=False).wait()

    def call() -> Job:
        spawned = f.spawn(1)
        assert spawned.get() == 2
        return spawned.job.refresh()

    return {"true": stages(job, samples), "f.remote": stages(call, samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "embedded"
        with connect(home=home) as client:
            results["embedded"] = measure(client, args.samples)
        stop_local_agent(home)
        url, token, procs = serve(Path(tmp) / "server", [2.0])
        try:
            with connect(url, token=token) as client:
                results["server + agent"] = measure(client, args.samples)
        finally:
            stop(procs)
    print(f"{'':<26}" + "".join(f"{name:>13}" for name in STAGES) + "   (p50, ms)")
    for mode, kinds in results.items():
        for kind, figures in kinds.items():
            cells = "".join(f"{figures[name]:13.2f}" for name in STAGES)
            print(f"{mode + ', ' + kind:<26}{cells}")


if __name__ == "__main__":
    main()
