"""Celery with a Redis broker and result backend; the workers are started by run.py."""

from __future__ import annotations

from celery.result import ResultSet
from celery_tasks import call, run
from workloads import measure, sizes_from_argv


class CeleryDriver:
    def commands(self, argv: list[str], n: int) -> None:
        ResultSet([run.delay(argv) for _ in range(n)]).join_native(timeout=600)

    def calls(self, n: int) -> list[int]:
        return list(ResultSet([call.delay(i) for i in range(n)]).join_native(timeout=600))

    def call_one(self) -> int:
        return int(call.delay(1).get(timeout=60))

    def stamp(self) -> str:
        return str(run.delay(["date", "+%s.%N"]).get(timeout=60))


if __name__ == "__main__":
    sizes, only, _ = sizes_from_argv(__doc__)
    measure(CeleryDriver(), sizes, only)
