"""This machine's NVIDIA GPUs: how many, which model, how much memory each.

NVML (the `nvidia-ml-py` package) when it is installed, else `nvidia-smi`; none when
neither answers. A node reports one model: a machine with mixed GPUs reports its first
model, and only as many GPUs as share it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

from sandrun.spec.gpus import canonical

log = logging.getLogger("sandrun.agent")


def detect_gpus() -> tuple[int, str | None, float]:
    """(count, model, memory GB each); (0, None, 0) without NVIDIA GPUs."""
    found = _nvml() or _nvidia_smi()
    if not found:
        return 0, None, 0.0
    first_name, first_memory = found[0]
    same = [g for g in found if g == found[0]]
    if len(same) < len(found):
        log.warning("mixed GPU models: offering the %d %s only", len(same), first_name)
    return len(same), model_of(first_name), first_memory


def model_of(product: str) -> str:
    """A catalogue name for a product name ("NVIDIA A100-SXM4-80GB" -> "a100"), else the
    product name itself, lower-cased."""
    text = product.lower().replace(" ", "-")
    for candidate in (text, text.replace("nvidia-", ""), text.replace("tesla-", "")):
        try:
            return canonical(candidate)[0]
        except ValueError:
            continue
    return text


def _nvml() -> list[tuple[str, float]]:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: no GPUs
        return []
    try:
        out: list[tuple[str, float]] = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
            out.append((name.decode() if isinstance(name, bytes) else name, round(memory)))
        return out
    finally:
        pynvml.nvmlShutdown()


def _nvidia_smi() -> list[tuple[str, float]]:
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
    try:
        text = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    out: list[tuple[str, float]] = []
    for line in text.splitlines():
        name, _, mib = line.rpartition(",")
        if name and mib.strip().isdigit():
            out.append((name.strip(), round(int(mib) / 1024)))
    return out
