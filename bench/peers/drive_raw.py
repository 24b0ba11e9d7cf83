"""The ceiling: the same workloads with no job system (2 spawner threads; a 2-process pool)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from workloads import add_one, measure, sizes_from_argv


class Raw:
    def __init__(self) -> None:
        self.spawners = ThreadPoolExecutor(2)
        self.pool = ProcessPoolExecutor(2)

    def commands(self, argv: list[str], n: int) -> None:
        list(self.spawners.map(lambda _: subprocess.run(argv, check=True), range(n)))

    def calls(self, n: int) -> list[int]:
        return list(self.pool.map(add_one, range(n)))

    def call_one(self) -> int:
        return int(self.pool.submit(add_one, 1).result())

    def stamp(self) -> str:
        return subprocess.run(["date", "+%s.%N"], check=True, capture_output=True, text=True).stdout


if __name__ == "__main__":
    sizes, only, _ = sizes_from_argv(__doc__)
    raw = Raw()
    measure(raw, sizes, only)
    raw.pool.shutdown()
