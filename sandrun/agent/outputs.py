"""Collecting an attempt's outputs into the content-addressed artifact store."""

from __future__ import annotations

from pathlib import Path

from sandrun.artifacts import LocalArtifactStore
from sandrun.models import OutputFile


def collect_outputs(
    workdir: Path, patterns: list[str], artifacts: LocalArtifactStore, attempt: int
) -> list[OutputFile]:
    """Store every file matching `patterns` (a matched directory brings all its files).

    Paths are kept relative to `workdir`. A symlink that leads out of `workdir` is skipped:
    a job must not be able to export a file it was never given.
    """
    root = workdir.resolve()
    found: dict[str, OutputFile] = {}
    for pattern in patterns:
        for match in sorted(root.glob(pattern)):
            if match.is_dir():
                files = sorted(p for p in match.rglob("*") if p.is_file())
            else:
                files = [match] if match.is_file() else []
            for path in files:
                real = path.resolve()
                if not real.is_relative_to(root):
                    continue
                rel = path.relative_to(root).as_posix()
                if rel not in found:
                    digest, size = artifacts.put_file(real)
                    found[rel] = OutputFile(attempt=attempt, path=rel, digest=digest, size=size)
    return list(found.values())
