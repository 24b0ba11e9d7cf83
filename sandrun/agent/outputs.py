"""Collecting an attempt's outputs into the content-addressed artifact store."""

from __future__ import annotations

from pathlib import Path

from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import OutputsTooLarge
from sandrun.models import OutputFile


def collect_outputs(
    workdir: Path,
    patterns: list[str],
    artifacts: LocalArtifactStore,
    attempt: int,
    max_bytes: int | None = None,
) -> list[OutputFile]:
    """Store every file matching `patterns` (a matched directory brings all its files).

    Paths are kept relative to `workdir`. A symlink that leads out of `workdir` is skipped:
    a job must not be able to export a file it was never given. Over `max_bytes` in all,
    nothing is stored and OutputsTooLarge says how much there was.
    """
    root = workdir.resolve()
    found: dict[str, Path] = {}
    for pattern in patterns:
        for match in sorted(root.glob(pattern)):
            if match.is_dir():
                files = sorted(p for p in match.rglob("*") if p.is_file())
            else:
                files = [match] if match.is_file() else []
            for path in files:
                real = path.resolve()
                if real.is_relative_to(root):
                    found.setdefault(path.relative_to(root).as_posix(), real)
    total = sum(path.stat().st_size for path in found.values())
    if max_bytes is not None and total > max_bytes:
        raise OutputsTooLarge(
            f"the outputs total {total >> 20} MiB in {len(found)} files, over the limit of "
            f"{max_bytes >> 20} MiB (limits.output_size)",
            suggestions=["narrow the output patterns", "raise limits.output_size"],
        )
    outputs = []
    for rel, real in found.items():
        digest, size = artifacts.put_file(real)
        outputs.append(OutputFile(attempt=attempt, path=rel, digest=digest, size=size))
    return outputs
