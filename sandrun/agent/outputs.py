"""Collecting an attempt's outputs into the content-addressed artifact store.

The agent may run as root and the job chooses what its directory holds, so every file is
reached from a descriptor of the working directory one component at a time, never
following a symlink (`O_NOFOLLOW` at each step): a link planted by the job — before or
during collection — cannot make the agent read a file outside the attempt's directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import OutputsTooLarge, SandrunError
from sandrun.models import AttemptResult, OutputFile
from sandrun.spec import JobSpec
from sandrun.states import FailureReason

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO the job left must not hang the agent.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class Collected:
    files: list[OutputFile]
    unmatched: list[str]  # the patterns no file matched


def with_outputs(
    result: AttemptResult,
    spec: JobSpec,
    workdir: Path,
    artifacts: LocalArtifactStore,
    attempt: int,
) -> AttemptResult:
    """`result` with the attempt's outputs collected, or with why they could not be."""
    limit = spec.limits.output_size << 20
    try:
        collected = collect_outputs(workdir, spec.outputs, artifacts, attempt, limit)
    except OutputsTooLarge as exc:
        if result.failure_reason is None:
            reason = FailureReason.OUTPUT_LIMIT
            return result.model_copy(update={"failure_reason": reason, "message": str(exc)})
        return result
    except (OSError, SandrunError) as exc:
        if result.failure_reason is None:
            return result.model_copy(
                update={
                    "failure_reason": FailureReason.OUTPUT_ERROR,
                    "message": f"collecting outputs failed: {exc}",
                }
            )
        return result
    found = {"outputs": collected.files, "unmatched_outputs": collected.unmatched}
    if collected.unmatched and spec.outputs_required and result.failure_reason is None:
        listed = ", ".join(repr(p) for p in collected.unmatched)
        found |= {
            "failure_reason": FailureReason.OUTPUT_ERROR,
            "message": f"no file matched {listed} (outputs_required)",
        }
    return result.model_copy(update=found)


def collect_outputs(
    workdir: Path,
    patterns: list[str],
    artifacts: LocalArtifactStore,
    attempt: int,
    max_bytes: int | None = None,
) -> Collected:
    """Store every regular file matching `patterns` (a matched directory brings all its
    files); paths are kept relative to `workdir`. Patterns that matched no file are named.

    A path through a symlink is skipped: a job must not be able to export a file it was
    never given. Over `max_bytes` in all, nothing is stored and OutputsTooLarge says how
    much there was.
    """
    root = workdir.resolve()
    root_fd = os.open(root, _DIR)
    try:
        found: dict[str, int] = {}
        unmatched = []
        for pattern in patterns:
            matched = False
            for match in sorted(root.glob(pattern)):
                rel = _relative(match, root)
                if rel is not None:
                    for path, size in _files(root_fd, rel):
                        matched = True
                        found.setdefault(path, size)
            if not matched:
                unmatched.append(pattern)
        total = sum(found.values())
        if max_bytes is not None and total > max_bytes:
            raise OutputsTooLarge(
                f"the outputs total {total >> 20} MiB in {len(found)} files, over the limit "
                f"of {max_bytes >> 20} MiB (limits.output_size)",
                suggestions=["narrow the output patterns", "raise limits.output_size"],
            )
        outputs = []
        for path in found:
            fd = _open_beneath(root_fd, path, _FILE)
            if fd is None:
                continue  # gone, or swapped for a link, since it was listed
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    continue
                os.set_blocking(handle.fileno(), True)
                digest, size = artifacts.put_stream(handle)
            outputs.append(OutputFile(attempt=attempt, path=path, digest=digest, size=size))
        return Collected(outputs, unmatched)
    finally:
        os.close(root_fd)


def _relative(match: Path, root: Path) -> str | None:
    try:
        rel = PurePosixPath(match.relative_to(root).as_posix())
    except ValueError:
        return None
    if ".." in rel.parts or not rel.parts:
        return None
    return rel.as_posix()


def _files(root_fd: int, rel: str) -> Iterator[tuple[str, int]]:
    """(path, size) of the regular file at `rel`, or of each one under the directory there."""
    fd = _open_beneath(root_fd, rel, _FILE)
    if fd is None:
        return
    with contextlib.closing(_Fd(fd)):
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            yield rel, info.st_size
        elif stat.S_ISDIR(info.st_mode):
            # fwalk never follows links; each file is opened without following one either.
            for top, _, names, dir_fd in os.fwalk(".", dir_fd=fd):
                for name in sorted(names):
                    size = _regular_size(dir_fd, name)
                    if size is not None:
                        yield PurePosixPath(rel, top, name).as_posix(), size


def _regular_size(dir_fd: int, name: str) -> int | None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _open_beneath(root_fd: int, rel: str, flags: int) -> int | None:
    """Open `rel` under `root_fd` without following any symlink; None if that fails."""
    *dirs, last = rel.split("/")
    current = root_fd
    try:
        for name in dirs:
            step = os.open(name, _DIR, dir_fd=current)
            if current != root_fd:
                os.close(current)
            current = step
        return os.open(last, flags, dir_fd=current)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.ENXIO):
            return None
        raise
    finally:
        if current != root_fd:
            os.close(current)


class _Fd:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        os.close(self.fd)
