"""What an attempt's data adds to its sandbox: the volumes it mounts, and its secrets as
environment variables or read-only files.

A volume's bytes are a directory under the agent's `volumes/` (hidden from every job,
like the rest of its state), shown at the volume's path inside. Secret files are written
for the attempt alone, in a directory beside its scratch that goes when it ends (never
kept with a failed attempt's scratch).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sandrun.agent.diskwatch import DiskWatch, Watched, allocated_bytes
from sandrun.agent.fetch import Fetcher, FetchError
from sandrun.agent.sandbox.view import Mount
from sandrun.agent.workspace import remove_tree
from sandrun.data_models import VolumeGrant
from sandrun.models import AttemptResult, Claim
from sandrun.states import FailureReason


@dataclass
class Data:
    """One attempt's volumes and secrets, ready for its sandbox."""

    binds: tuple[Mount, ...] = ()
    owned: tuple[Path, ...] = ()  # what the attempt's uid must own: volumes, secret files
    env: dict[str, str] = field(default_factory=dict)
    written: list[tuple[VolumeGrant, Path]] = field(default_factory=list)  # rw volumes
    secrets_dir: Path | None = None


class DataError(Exception):
    """The attempt cannot have its data (the message says why): it fails to start, with
    `reason` (spawn_error unless a data mount could not be fetched)."""

    def __init__(self, message: str, reason: FailureReason = FailureReason.SPAWN_ERROR) -> None:
        super().__init__(message)
        self.reason = reason


def volume_dir(volumes_root: Path, grant: VolumeGrant) -> Path:
    return volumes_root / grant.id


def prepare(
    claim: Claim, volumes_root: Path, secrets_dir: Path, isolates: bool, fetcher: Fetcher
) -> Data:
    spec, data = claim.job.spec, Data()
    granted = {g.name for g in claim.volumes} | {g.id for g in claim.volumes}
    for mount in spec.volumes:
        if (mount.name or mount.volume_id) not in granted:
            raise DataError(
                f"volume {mount.name or mount.volume_id!r} was not granted to this attempt "
                "(only jobs submitted alone or with `after` mount volumes)"
            )
    files = [s for s in spec.secrets if s.file]
    if (claim.volumes or files or spec.data_mounts) and not isolates:
        raise DataError(
            "volumes, data mounts and secret files need a sandbox that isolates (bwrap or "
            "unshare); this agent runs jobs with none"
        )
    binds = []
    for wanted in spec.data_mounts:
        try:
            binds.append(Mount("ro", wanted.target, str(fetcher.fetch(wanted, claim.secrets))))
        except FetchError as exc:
            raise DataError(str(exc), FailureReason.DATA_ERROR) from None
    for grant in claim.volumes:
        where = volume_dir(volumes_root, grant)
        where.mkdir(parents=True, exist_ok=True)
        binds.append(Mount("ro" if grant.read_only else "rw", grant.target, str(where)))
        if not grant.read_only:
            data.written.append((grant, where))
    for secret in spec.secrets:
        value = claim.secrets.get(secret.name)
        if value is None:
            raise DataError(
                f"secret {secret.name!r} was not delivered: it was deleted since the job was "
                "submitted, or this server cannot open it (do all servers share one "
                "SANDRUN_SECRETS_KEY?)"
            )
        if secret.env_name:
            data.env[secret.env_name] = value
        if secret.file:
            secrets_dir.parent.mkdir(mode=0o700, exist_ok=True)
            secrets_dir.mkdir(mode=0o700, exist_ok=True)
            data.secrets_dir = secrets_dir
            path = secrets_dir / secret.name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
            with os.fdopen(fd, "w") as out:
                out.write(value)
            binds.append(Mount("ro", secret.file, str(path)))
    data.binds = tuple(binds)
    data.owned = tuple(Path(b.source) for b in binds[len(spec.data_mounts) :])
    return data


@contextlib.contextmanager
def watched(disks: DiskWatch, data: Data) -> Iterator[list[Watched]]:
    """Each volume the attempt writes, under watch against its size while it runs."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(disks.watch(w, g.size_mb << 20)) for g, w in data.written]


# Ends a volume written past its size reads as (the job may have failed of it first).
_MAY_BE_FULL = (None, FailureReason.EXIT_CODE, FailureReason.SIGNALED, FailureReason.VOLUME_FULL)


def checked(data: Data, result: AttemptResult) -> AttemptResult:
    """`result`, failed `volume_full` if the attempt wrote a volume past its size: each is
    measured once more at its end, so a job quicker than the watch is caught too."""
    if result.failure_reason not in _MAY_BE_FULL:
        return result
    for grant, where in data.written:
        used = allocated_bytes(where)
        if used > grant.size_mb << 20:
            return result.model_copy(
                update={
                    "failure_reason": FailureReason.VOLUME_FULL,
                    "message": f"volume {grant.name!r} holds {used >> 20} MiB, over its size "
                    f"of {grant.size_mb} MiB: what was written stays; remove some to write "
                    "to it again",
                }
            )
    return result


def finish(claim: Claim, volumes_root: Path, secrets_dir: Path) -> None:
    """After the attempt: its secret files go, and a deleted volume's bytes with them."""
    if secrets_dir.exists():
        remove_tree(secrets_dir)
    for grant in claim.volumes:
        if grant.deleted:
            remove_tree(volume_dir(volumes_root, grant))
