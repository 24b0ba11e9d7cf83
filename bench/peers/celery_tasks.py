"""The Celery app the benchmark's workers serve (broker and results: $BENCH_REDIS)."""

from __future__ import annotations

import os
import subprocess

from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_REDIS"], backend=os.environ["BENCH_REDIS"])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])


@app.task
def run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@app.task
def call(x: int) -> int:
    return x + 1
