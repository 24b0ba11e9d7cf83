"""Ray, local, num_cpus=2: a task per job (it runs the job's command), a task per call."""

from __future__ import annotations

import subprocess

import ray
from workloads import measure, sizes_from_argv


@ray.remote(num_cpus=1)
def run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@ray.remote(num_cpus=1)
def call(x: int) -> int:
    return x + 1


class Ray:
    def commands(self, argv: list[str], n: int) -> None:
        ray.get([run.remote(argv) for _ in range(n)])

    def calls(self, n: int) -> list[int]:
        return list(ray.get([call.remote(i) for i in range(n)]))

    def call_one(self) -> int:
        return int(ray.get(call.remote(1)))

    def stamp(self) -> str:
        return str(ray.get(run.remote(["date", "+%s.%N"])))


if __name__ == "__main__":
    sizes, only, _ = sizes_from_argv(__doc__)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        measure(Ray(), sizes, only)
    finally:
        ray.shutdown()
