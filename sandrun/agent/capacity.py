"""What this machine can offer jobs: the CPUs this process may use, memory, NVIDIA GPUs."""

from __future__ import annotations

import functools
import os

import psutil

from sandrun.agent.gpus import detect_gpus
from sandrun.models import Capacity


def detect_capacity() -> Capacity:
    """This machine's CPUs (those this process may use), memory and NVIDIA GPUs."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus, model, memory = _machine_gpus()
    return Capacity(
        cpus=float(cpus or 1),
        memory_mb=psutil.virtual_memory().total >> 20,
        gpus=gpus,
        gpu_type=model,
        gpu_memory_gb=memory,
    )


@functools.cache
def _machine_gpus() -> tuple[int, str | None, float]:
    # Asked once per process: an embedded submit checks the fit, and nvidia-smi is slow.
    return detect_gpus()
