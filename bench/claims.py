"""The cost of a scheduling decision: claim latency with 1,000 registered nodes of mixed
shapes and 100,000 (--jobs; issue 9 asks for 1,000,000) pending jobs of mixed needs, on
SQLite and on PostgreSQL, beside the same with 1,000 pending jobs; all of one owner, then
spread over 20 owners (fair share compares them on every claim). Last, the p50 ratio of
--jobs pending to 1,000.

    python bench/claims.py [--jobs 100000] [--nodes 1000] [--claims 2000] [--owners 20]
                           [--pg URL]

Nodes: 70% CPU-only (8 CPUs), 20% 1xt4, 8% 2xa100-80gb, 2% 8xh100 labelled pool=gpu-east.
Jobs: 90% one CPU, 7% a t4, 2% 2xa100, 1% 8xh100 requiring pool=gpu-east. Each claim comes
from a random node, half of them with all their resources free, half with half (so a node may
reserve itself for a job that does not fit what it has free); the claimed job stays
running. Printed: p50 and p99 claim latency by node shape, and overall.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pg_throughput import analyze, postgres
from throughput import percentile

from sandrun.ids import new_id
from sandrun.models import Capacity
from sandrun.spec import parse_spec
from sandrun.store import Store, open_sqlite
from sandrun.store.postgres import PostgresDatabase

NOW = 1e9  # after every job's not_before; nodes heartbeat now
SHAPES = [  # (share, name, capacity, labels)
    (0.70, "cpu", Capacity(cpus=8, memory_mb=32 << 10), {}),
    (
        0.20,
        "1xt4",
        Capacity(cpus=8, memory_mb=32 << 10, gpus=1, gpu_type="t4", gpu_memory_gb=16),
        {},
    ),
    (
        0.08,
        "2xa100",
        Capacity(cpus=32, memory_mb=256 << 10, gpus=2, gpu_type="a100", gpu_memory_gb=80),
        {},
    ),
    (
        0.02,
        "8xh100",
        Capacity(cpus=96, memory_mb=1 << 20, gpus=8, gpu_type="h100", gpu_memory_gb=80),
        {"pool": "gpu-east"},
    ),
]
NEEDS = [
    (0.90, {"command": ["true"]}),
    (0.07, {"command": ["true"], "gpus": "t4"}),
    (0.02, {"command": ["true"], "gpus": "2xa100"}),
    (0.01, {"command": ["true"], "gpus": "8xh100", "requires": {"pool": "gpu-east"}}),
]


def pick(rng: random.Random, table: list) -> object:  # type: ignore[type-arg]
    roll, total = rng.random(), 0.0
    for row in table:
        total += row[0]
        if roll < total:
            return row
    return table[-1]


def fill(
    store: Store, jobs: int, nodes: int, owners: int, rng: random.Random
) -> list[tuple[str, str, Capacity]]:
    """Register the nodes and queue the jobs (one transaction each, for speed)."""
    placed = []
    for i in range(nodes):
        _, shape, capacity, labels = pick(rng, SHAPES)  # type: ignore[misc]
        node = f"{shape}-{i}"
        store.register_node(node, node, capacity, labels, NOW)
        placed.append((node, shape, capacity))
    specs = [(share, parse_spec(data)) for share, data in NEEDS]
    with store.db.transaction() as tx:
        for n in range(jobs):
            _, spec = pick(rng, specs)  # type: ignore[misc]
            at = 1000.0 + n
            tx.run(
                "insert_job",
                id=new_id(),
                name=spec.display_name,
                owner=f"owner-{n % owners}",
                state="pending",
                spec=json.dumps(spec.to_json_dict()),
                labels="{}",
                requires=json.dumps(spec.requires, sort_keys=True),
                priority=0,
                cpus=spec.cpus,
                memory_mb=spec.memory or 0,
                gpu_count=spec.gpus.count if spec.gpus else 0,
                gpu_type=",".join(spec.gpus.types) or None if spec.gpus else None,
                gpu_memory_gb=(spec.gpus.memory_gb or 0) if spec.gpus else 0,
                not_before=at,
                created_at=at,
            )
    return placed


def claims(
    store: Store, nodes: list[tuple[str, str, Capacity]], count: int, rng: random.Random
) -> dict[str, list[float]]:
    by_shape: dict[str, list[float]] = {}
    for _ in range(count):
        node, shape, capacity = rng.choice(nodes)
        if rng.random() < 0.5:
            capacity = capacity.model_copy(
                update={"cpus": capacity.cpus / 2, "gpus": capacity.gpus // 2}
            )
        start = time.perf_counter()
        store.claim(node, capacity, now=NOW, lease_seconds=30)
        by_shape.setdefault(shape, []).append(time.perf_counter() - start)
    return by_shape


@contextlib.contextmanager
def stores(pg_url: str | None, root: Path) -> Iterator[Iterator[tuple[str, Store]]]:
    with postgres(pg_url) as pg:

        def each() -> Iterator[tuple[str, Store]]:
            for label in ("sqlite", "postgres"):
                if label == "sqlite":
                    store = open_sqlite(root / f"claims-{time.monotonic_ns()}.db")
                else:
                    url = pg.create()
                    store = Store(PostgresDatabase(url))
                    store.migrate()
                yield label, store
                store.close()

        yield each()


def _line(label: str, times: list[float]) -> str:
    p50, p99 = percentile(times, 50) * 1000, percentile(times, 99) * 1000
    return f"  {label:<8} {len(times):5} claims  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--owners", type=int, default=20)
    parser.add_argument("--pg", help="postgresql:// URL (default: a throwaway cluster)")
    args = parser.parse_args()
    p50s: dict[tuple[str, int, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sizes = [(1000, 1), (args.jobs, 1), (1000, args.owners), (args.jobs, args.owners)]
        for queued, owners in sizes:
            with stores(args.pg, Path(tmp)) as each:
                for label, store in each:
                    rng = random.Random(7)
                    started = time.perf_counter()
                    nodes = fill(store, queued, args.nodes, owners, rng)
                    if label == "postgres":
                        analyze(store.db.url)  # type: ignore[attr-defined]
                    filled = time.perf_counter() - started
                    # Never more than half the queue: a claim from an empty queue costs nothing.
                    results = claims(store, nodes, min(args.claims, queued // 2), rng)
                    every = [t for ts in results.values() for t in ts]
                    head = f"{label}, {queued:,} pending of {owners} owner(s), {args.nodes} nodes"
                    print(f"{head} (filled in {filled:.0f}s):")
                    for shape, ts in sorted(results.items()):
                        print(_line(shape, ts))
                    print(_line("all", every))
                    sys.stdout.flush()
                    p50s[label, queued, owners] = percentile(every, 50)
    print(f"p50 with {args.jobs:,} pending against 1,000 (target: within 2x):")
    for (label, queued, owners), p50 in p50s.items():
        if queued == args.jobs:
            ratio = p50 / p50s[label, 1000, owners]
            print(f"  {label:<8} {owners:2} owner(s)  {ratio:5.2f}x")


if __name__ == "__main__":
    main()
