"""What a pipeline costs per step, against the same jobs submitted independently.

    python bench/pipelines.py [--items 1000] [--depth 100] [--pg [URL]] [--no-e2e]

Two shapes: a fan-out of N items then a fan-in step (against N+1 jobs submitted in
batches), and a chain of D steps each needing the one before, as a pipeline and as plain
jobs with `after` (against D jobs submitted by hand, each after the last one ended).
Each is timed:

- control plane: the service and store alone (SQLite; with --pg PostgreSQL, a throwaway
  cluster unless a URL is given), each job claimed,
  started and ended by this process as an agent would. This is the cost pipelines add:
  rendering, dependency edges, releases in the ending transaction.
- end to end (embedded): a real local agent runs each job (`true`), against the same
  number of independent `true` jobs in the same run.

The ratio is pipeline time over independent time; the overhead per step is their
difference over the steps.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pg_throughput import postgres

from sandrun.artifacts import LocalArtifactStore
from sandrun.models import AttemptResult, Capacity
from sandrun.service import Service
from sandrun.store import Store, open_sqlite
from sandrun.store.postgres import PostgresDatabase

ROOM = Capacity(cpus=1 << 20, memory_mb=1 << 40, gpus=0)


def open_service(root: Path, db: Callable[[], str] | None) -> Service:
    """A service over SQLite under `root`, or a fresh PostgreSQL database from `db`."""
    if db:
        store = Store(PostgresDatabase(db()))
        store.migrate()
    else:
        store = open_sqlite(root / "bench.db")
    return Service(store, LocalArtifactStore(root / "blobs"))


def drain(service: Service) -> int:
    """Claim, start and end (exit 0) every job that is or becomes pending; how many."""
    ran = 0
    while (got := service.store.claim("bench", ROOM, service.clock(), 60.0)) is not None:
        service.store.start_attempt(got.job.id, got.attempt, got.token, service.clock())
        service.store.finish_attempt(
            got.job.id,
            got.attempt,
            got.token,
            AttemptResult(exit_code=0),
            service.decide,
            service.clock(),
        )
        ran += 1
    return ran


def submit_all(service: Service, count: int) -> None:
    for first in range(0, count, 1000):
        service.submit_many([{"command": ["true"]}] * min(1000, count - first))


def timed(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def fan(items: int) -> dict[str, Any]:
    return {
        "name": "fan",
        "steps": {
            "each": {"for_each": f"{{{{ range({items}) }}}}", "command": ["true"]},
            "merge": {"needs": ["each"], "command": ["true"]},
        },
    }


def chain(depth: int) -> dict[str, Any]:
    steps: dict[str, Any] = {"s0": {"command": ["true"]}}
    for i in range(1, depth):
        steps[f"s{i}"] = {"needs": [f"s{i - 1}"], "command": ["true"]}
    return {"name": "chain", "steps": steps}


def control_plane(
    root: Path, db: Callable[[], str] | None, items: int, depth: int
) -> list[tuple[str, int, float, float]]:
    rows = []
    service = open_service(root / "fan", db)
    alone = timed(lambda: (submit_all(service, items + 1), drain(service)))
    piped = timed(lambda: (service.run_pipeline(fan(items)), drain(service)))
    rows.append((f"fan-out {items} + fan-in", items + 1, alone, piped))
    service.close()

    service = open_service(root / "chain", db)

    def by_hand() -> None:  # what a user does without dependencies: submit, wait, next
        for _ in range(depth):
            service.submit({"command": ["true"]})
            drain(service)

    alone = timed(by_hand)
    piped = timed(lambda: (service.run_pipeline(chain(depth)), drain(service)))
    rows.append((f"chain of {depth} (pipeline)", depth, alone, piped))

    def after_chain() -> None:
        last = None
        for _ in range(depth):
            spec: dict[str, Any] = {"command": ["true"]}
            if last is not None:
                spec["after"] = [last]
            last = service.submit(spec).id
        drain(service)

    rows.append((f"chain of {depth} (after)", depth, alone, timed(after_chain)))
    service.close()
    return rows


def end_to_end(root: Path, items: int, depth: int) -> list[tuple[str, int, float, float]]:
    import sandrun

    os.environ["SANDRUN_HOME"] = str(root / "home")
    os.environ.pop("SANDRUN_URL", None)
    rows = []
    with sandrun.connect() as client:
        client.run(["true"], upload_code=False).wait(60)  # the agent is up: not timed

        def independent(count: int) -> None:
            jobs = client.submit_many([{"command": ["true"]}] * count, upload_code=False)
            client.wait(jobs)

        def pipeline(definition: dict[str, Any]) -> None:
            client.run_pipeline(definition).wait(600, check=True)

        rows.append(
            (
                f"fan-out {items} + fan-in",
                items + 1,
                timed(lambda: independent(items + 1)),
                timed(lambda: pipeline(fan(items))),
            )
        )

        def by_hand() -> None:
            for _ in range(depth):
                client.run(["true"], upload_code=False).wait(60)

        rows.append(
            (
                f"chain of {depth} (pipeline)",
                depth,
                timed(by_hand),
                timed(lambda: pipeline(chain(depth))),
            )
        )
    return rows


def show(title: str, rows: list[tuple[str, int, float, float]]) -> None:
    print(f"\n{title}")
    head = ("shape", "jobs", "baseline s", "pipeline s", "ratio", "overhead/step ms")
    print("{:<28} {:>5} {:>14} {:>11} {:>6} {:>17}".format(*head))
    for name, jobs, alone, piped in rows:
        per_step = (piped - alone) / jobs * 1000
        line = (name, jobs, alone, piped, piped / alone, per_step)
        print("{:<28} {:>5} {:>14.3f} {:>11.3f} {:>6.2f} {:>17.2f}".format(*line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument(
        "--pg", nargs="?", const="", help="PostgreSQL for the control plane (URL, or a throwaway)"
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sandrun-bench-") as tmp:
        root = Path(tmp)
        if args.pg is None:
            rows = control_plane(root, None, args.items, args.depth)
        else:
            with postgres(args.pg or None) as server:
                rows = control_plane(root, server.create, args.items, args.depth)
        where = "SQLite" if args.pg is None else "PostgreSQL"
        show(f"control plane ({where}, jobs run by this process)", rows)
        if not args.no_e2e:
            show(
                "end to end (embedded, a local agent runs `true`)",
                end_to_end(root, args.items, args.depth),
            )


if __name__ == "__main__":
    main()
