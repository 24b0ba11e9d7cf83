"""An attempt's checkpoint directory ($SANDRUN_CHECKPOINT_DIR), as HTCondor's self-
checkpointing jobs have it: the job saves there and exits 85; the agent packs what it
saved as a blob that goes with the attempt's end, and a later attempt (on any node) finds
it restored there before it starts (docs/lifecycle.md)."""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from sandrun.agent.control import ControlPlane
from sandrun.agent.supervise import AttemptControl, Stop
from sandrun.agent.workspace import unpack
from sandrun.artifacts import LocalArtifactStore
from sandrun.errors import SandrunError
from sandrun.models import AttemptResult, Claim, JobRecord, OutputFile
from sandrun.spec.policies import CHECKPOINT_EXIT
from sandrun.states import FailureReason

_PREEMPTED = FailureReason.PREEMPTED


def directory(scratch: Path) -> Path:
    """An attempt's checkpoint directory: beside its scratch (its HOME, often its working
    directory too, where it would show in `ls -A` and in `**` outputs), at the same path
    inside its sandbox, and counted against its disk limit with it."""
    return scratch.parent / f"{scratch.name}.checkpoint"


def beside(saves: Path | None, measured: Path) -> tuple[Path, ...]:
    """The checkpoint directory, where a disk watch of `measured` would not count it."""
    return (saves,) if saves is not None and not saves.is_relative_to(measured) else ()


def prepare(
    scratch: Path, job: JobRecord, control: ControlPlane, artifacts: LocalArtifactStore
) -> Path:
    """The attempt's checkpoint directory, holding the job's checkpoint unpacked if it has
    one. Raises SandrunError if that cannot be fetched or unpacked."""
    where = directory(scratch)
    where.mkdir(exist_ok=True)
    if job.checkpoint is not None:
        control.fetch_artifact(job.checkpoint)
        unpack(artifacts.path(job.checkpoint), where, "the checkpoint")
    return where


def taken(
    result: AttemptResult,
    stop: Stop | None,
    ctl: AttemptControl,
    claim: Claim,
    artifacts: LocalArtifactStore,
) -> AttemptResult:
    """`result` as the attempt ended. If the job exited 85 of its own accord (`stop`: None)
    it is checkpointed, with what it saved packed as a blob (or failed `output_limit` /
    `output_error` if that cannot be); if it was being preempted and ended otherwise, short
    of completing, it was preempted."""
    if stop is not None or ctl.saves is None or result.exit_code != CHECKPOINT_EXIT:
        if ctl.preempt_by is not None and result.failure_reason not in (None, _PREEMPTED):
            why = f"preempted: it ended ({result.message or result.exit_code}) once asked"
            return result.model_copy(update={"failure_reason": _PREEMPTED, "message": why})
        return result
    where = ctl.saves
    spec = claim.job.spec
    limit = spec.limits.output_size << 20
    try:
        artifacts.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=artifacts.root) as spool:  # never all in memory
            pack(where, limit, spool)
            spool.seek(0)
            digest, size = artifacts.put_stream(spool)
    except _TooLarge:
        why = f"its checkpoint is over limits.output_size ({spec.limits.output_size} MB)"
        return result.model_copy(
            update={"failure_reason": FailureReason.OUTPUT_LIMIT, "message": why}
        )
    except (OSError, SandrunError) as exc:
        why = f"its checkpoint could not be packed: {exc}"
        return result.model_copy(
            update={"failure_reason": FailureReason.OUTPUT_ERROR, "message": why}
        )
    return result.model_copy(
        update={
            "failure_reason": FailureReason.CHECKPOINTED,
            "message": f"saved a checkpoint of {size} bytes",
            "checkpoint": OutputFile(
                attempt=claim.attempt, path="$SANDRUN_CHECKPOINT_DIR", digest=digest, size=size
            ),
        }
    )


class _TooLarge(Exception):
    pass


def pack(where: Path, limit: int, out: IO[bytes]) -> None:
    """Write a tar of the regular files and directories under `where` (links and the
    rest left out: a restore unpacks plain files only), in a stable order."""
    total = 0
    # Not gzipped: checkpoints are mostly incompressible state, and gzip packs them ~25x
    # slower than a plain tar (bench/checkpoints.py).
    with tarfile.open(fileobj=out, mode="w") as tar:
        for parent, dirs, files in os.walk(where):
            dirs.sort()
            for name in sorted([*dirs, *files]):
                path = Path(parent) / name
                info = path.lstat()
                if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                    continue
                total += info.st_size if stat.S_ISREG(info.st_mode) else 0
                if total > limit:
                    raise _TooLarge
                member = tar.gettarinfo(path, arcname=str(path.relative_to(where)))
                member.uid = member.gid = 0
                member.uname = member.gname = ""
                if member.isfile():
                    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
                        tar.addfile(member, handle)
                else:
                    tar.addfile(member)
